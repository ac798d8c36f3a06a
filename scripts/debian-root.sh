# Sourced by the build scripts of the test bed's Debian roots (build-trixie-root.sh,
# build-vm-image.sh): the steps both take. The caller calls build_begin first, and sets `root`
# (the root being built) before debian_bootstrap.

# debian_mirror SUITE: the Debian archive this machine's apt uses for SUITE (deb822 sources first,
# then the one-line format), DASK_CLOUD_DEBIAN_MIRROR when set, else deb.debian.org. The same
# archive serves bookworm, trixie and sid.
debian_mirror() {
  local suite="$1" mirror="${DASK_CLOUD_DEBIAN_MIRROR:-}" f
  if [ -z "$mirror" ]; then
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      mirror="$(awk -v s="$suite" '
        /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
        /^URIs:/ { u=$2 } /^Suites:/ { for (i=2;i<=NF;i++) if ($i==s) ok=1 }
        END { if (u != "" && ok) print u }' "$f" | grep -v security | head -n1 || true)"
      [ -n "$mirror" ] && break
    done
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk -v s="$suite" '$1=="deb" && $0 !~ /security/ { for (i=2;i<=NF;i++) if ($i==s) { for (j=2;j<i;j++) if ($j ~ /^[a-z]+:\/\//) { print $j; exit } } }' /etc/apt/sources.list | head -n1 || true)"
  fi
  printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
}

# build_begin NAME SCRIPT OUT: log and die prefixed [NAME]; root required; `script_hash` set; exits
# 0 when OUT exists and was built by this SCRIPT (unless FORCE=1).
build_begin() {
  build_name="$1"
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
  script_hash="$(build_hash "$2")"
  if [ "${FORCE:-0}" != 1 ] && [ -e "$3" ] && [ -f "$3.hash" ] && [ "$(cat "$3.hash")" = "$script_hash" ]; then
    log "up to date: $3 (script hash ${script_hash:0:12})"
    exit 0
  fi
}

log() { printf '[%s] %s\n' "${build_name:-build}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# build_hash SCRIPT: what a cached build is keyed on, the script and this file. The tests compute
# the same (test/helpers/prereq.ts: buildScriptHash) to tell a stale cache from a current one.
build_hash() {
  cat "$1" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

# host_tools PKG...: apt-get install the host packages given (the callers pass only missing ones).
host_tools() {
  [ $# -gt 0 ] || return 0
  log "installing host tools: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# debian_bootstrap SUITE LOGDIR: a minbase SUITE at $root from the archive this machine's apt
# uses; sets `mirror`. apt may then install into it (in_root): no service starts during the build,
# and names resolve as on the host.
debian_bootstrap() {
  local suite="$1" logdir="$2" host_suite t0
  host_suite="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
  mirror="$(debian_mirror "$host_suite")"
  log "mirror: $mirror (suite $suite)"
  t0=$(date +%s)
  log "debootstrap --variant=minbase $suite"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$logdir/debootstrap.log" 2>&1 ||
    { tail -n 30 "$logdir/debootstrap.log" >&2; die "debootstrap failed"; }
  log "debootstrap took $(($(date +%s) - t0)) s"
  build_mode on
}

# build_mode on|off: during the build no service may start (policy-rc.d) and the host's resolver
# answers; off removes both, leaving an empty resolv.conf for whoever runs the root.
build_mode() {
  if [ "$1" = on ]; then
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    rm -f "$root/etc/resolv.conf"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  else
    rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
    : >"$root/etc/resolv.conf"
  fi
}

# in_root CMD...: CMD inside $root, in a private mount and PID namespace: /proc is mounted only
# there and disappears with the process.
in_root() {
  unshare --mount --pid --fork --kill-child --mount-proc="$root/proc" --propagation private \
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

# debian_install LOG PKG...: apt-get install PKG... (no recommends) in $root; on failure, the tail of LOG.
debian_install() {
  local logfile="$1" t0
  shift
  t0=$(date +%s)
  log "installing $*"
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends "$@" >"$logfile" 2>&1 ||
    { tail -n 30 "$logfile" >&2; die "package install failed: $*"; }
  log "install took $(($(date +%s) - t0)) s"
}

# debian_slim: leave build mode and drop what a root needs only while packages are installed (apt
# lists and caches, logs, docs, man pages, translations).
debian_slim() {
  build_mode off
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/locale/*
}

# openssl_ignore_unexpected_eof: the workaround for CPython gh-148594 (Python 3.13 with OpenSSL
# 3.5, as in trixie). The ssl module does not clear OpenSSL's per-thread error queue, so when one
# TLS peer closes without close_notify (Dask never sends one), the stale "unexpected EOF" makes the
# next read of another, healthy connection on that thread fail with a spurious BrokenPipeError, and
# Dask drops it. Measured: 4 of 40 TLS LocalCluster starts on this Python lost the library's
# connection ("scheduler ... closed the connection"), Python clients saw
# "scheduler-connection-lost"; with OpenSSL's IgnoreUnexpectedEOF option, 0 of 40. Debian's own
# file stays as /etc/ssl/openssl.cnf.debian: OPENSSL_CONF pointing there brings the bug back.
openssl_ignore_unexpected_eof() {
  cp "$root/etc/ssl/openssl.cnf" "$root/etc/ssl/openssl.cnf.debian"
  grep -q '^\[openssl_init\]' "$root/etc/ssl/openssl.cnf" || die "no [openssl_init] section in the root's openssl.cnf"
  sed -i 's/^\[openssl_init\]$/[openssl_init]\nssl_conf = dask_cloud_ssl_sect/' "$root/etc/ssl/openssl.cnf"
  printf '\n# dask-cloud test bed: see scripts/debian-root.sh (CPython gh-148594).\n[dask_cloud_ssl_sect]\nsystem_default = dask_cloud_ssl_defaults\n[dask_cloud_ssl_defaults]\nOptions = IgnoreUnexpectedEOF\n' >>"$root/etc/ssl/openssl.cnf"
  in_root python3 -c 'import ssl, sys; sys.exit(0 if ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).options & ssl.OP_IGNORE_UNEXPECTED_EOF else 1)' ||
    die "the OpenSSL IgnoreUnexpectedEOF default did not reach Python's ssl contexts"
}
