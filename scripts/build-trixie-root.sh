#!/usr/bin/env bash
# Build the Debian trixie root the tests use for two things:
#  - moto, a third-party EC2 emulator our EC2 provider tests also run against (test/moto/):
#    Debian's python3-moto plus what `python3 -m moto.server` needs (flask and flask-cors, which
#    python3-moto only suggests);
#  - a second Dask client: Debian's python3-distributed 2024.12.1 on Python 3.13, next to the
#    host's bookworm Dask 2022.12.1 on Python 3.11. scripts/trixie-python runs this root's
#    /usr/bin/python3 as an ordinary interpreter of the host (test/helpers/prereq.ts: trixiePython()).
#
#   scripts/build-trixie-root.sh [OUT]        # default OUT: .cache/trixie-root (a directory)
#
# Trixie, not sid: trixie is a stable release, so the same script gives the same moto (5.1.x) and
# Dask (2024.12.1) on every run, whereas sid changes daily and is sometimes uninstallable for a
# while. The simulated VMs (scripts/build-vm-image.sh) run the same suite, so this client and
# those VMs run the same Dask.
#
# Idempotent: rebuilds only when OUT is missing or this script changed (its hash is stored in
# OUT.hash). Needs root and Debian's package mirror: it reuses the archive this machine's apt uses,
# with the trixie suite. Installs only debootstrap on the host (when missing). Env:
# DASK_CLOUD_DEBIAN_MIRROR overrides the mirror read from apt's sources; FORCE=1 rebuilds
# regardless of the hash.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/.cache/trixie-root}"
suite=trixie
# python3-flask and python3-flask-cors: moto.server imports both; python3-moto does not depend on them.
# python3-distributed: Dask's scheduler, worker and client (pulls python3-dask and the rest).
packages=(python3-moto python3-flask python3-flask-cors python3-distributed)

log() { printf '[build-trixie-root] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"

# shellcheck source=debian-mirror.sh
. "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"
# The build changes when this script or what it sources changes.
script_hash="$(cat "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh" | sha256sum | cut -d' ' -f1)"
if [ "${FORCE:-0}" != 1 ] && [ -d "$out" ] && [ -f "$out.hash" ] && [ "$(cat "$out.hash")" = "$script_hash" ]; then
  log "up to date: $out (script hash ${script_hash:0:12})"
  exit 0
fi

started=$(date +%s)

# --- host tools -------------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null; then
  log "installing host tool: debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
command -v unshare >/dev/null || die "unshare (util-linux) is missing"

# --- mirror: the archive this machine's apt uses, whatever suite the host itself follows -------
host_suite="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
mirror="$(debian_mirror "$host_suite")"
log "mirror: $mirror (suite $suite)"

# --- build next to OUT, then swap it in: a half-built root is never left at OUT ------------------
mkdir -p "$(dirname "$out")"
work="$(mktemp -d "$(dirname "$out")/.trixie-root-build.XXXXXX")"
cleanup() { rm -rf --one-file-system "$work" 2>/dev/null || true; }
trap cleanup EXIT
root="$work/root"

t0=$(date +%s)
log "debootstrap --variant=minbase $suite"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
t1=$(date +%s)
log "debootstrap took $((t1 - t0)) s"

printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

in_root() {
  # Private mount + PID namespace: /proc is mounted only there and disappears with the process.
  unshare --mount --pid --fork --kill-child --mount-proc="$root/proc" --propagation private \
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

log "installing ${packages[*]}"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >"$work/install.log" 2>&1 ||
  { tail -n 30 "$work/install.log" >&2; die "package install failed"; }
t2=$(date +%s)
log "package install took $((t2 - t1)) s"

# The server and its EC2 backend must import (the backend is loaded on the first EC2 request).
in_root python3 -c 'import moto.server, moto.ec2.models, flask, flask_cors' ||
  die "moto.server or its EC2 backend does not import in the root"
# Dask: the client imports, and the command lines LocalCluster and the VMs use work.
in_root python3 -c 'import distributed' || die "distributed does not import in the root"
for role in scheduler worker; do
  in_root python3 -m dask "$role" --help >/dev/null || die "python3 -m dask $role does not work in the root"
done

# Workaround for CPython gh-148594 (Python 3.13 with OpenSSL 3.5, as in trixie): the ssl module does
# not clear OpenSSL's per-thread error queue, so when one TLS peer closes without close_notify (Dask
# never sends one), the stale "unexpected EOF" makes the next read of another, healthy connection on
# that thread fail with a spurious BrokenPipeError, and Dask drops it. Measured: 4 of 40 TLS
# LocalCluster starts on this Python lost the library's connection ("scheduler ... closed the
# connection"), Python clients saw "scheduler-connection-lost"; with OpenSSL's IgnoreUnexpectedEOF
# option, 0 of 40. Debian's own file stays as /etc/ssl/openssl.cnf.debian: OPENSSL_CONF pointing
# there brings the bug back (to test that the library copes).
cp "$root/etc/ssl/openssl.cnf" "$root/etc/ssl/openssl.cnf.debian"
grep -q '^\[openssl_init\]' "$root/etc/ssl/openssl.cnf" || die "no [openssl_init] section in the root's openssl.cnf"
sed -i 's/^\[openssl_init\]$/[openssl_init]\nssl_conf = dask_cloud_ssl_sect/' "$root/etc/ssl/openssl.cnf"
printf '\n# dask-cloud test bed: see the build script (CPython gh-148594).\n[dask_cloud_ssl_sect]\nsystem_default = dask_cloud_ssl_defaults\n[dask_cloud_ssl_defaults]\nOptions = IgnoreUnexpectedEOF\n' >>"$root/etc/ssl/openssl.cnf"
in_root python3 -c 'import ssl, sys; sys.exit(0 if ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).options & ssl.OP_IGNORE_UNEXPECTED_EOF else 1)' ||
  die "the OpenSSL IgnoreUnexpectedEOF default did not reach Python's ssl contexts"

# Mount point for the per-run AMI catalogue the harness binds in (test/moto/moto-ec2.ts).
mkdir -p "$root/run/dask-cloud-moto"
# scripts/trixie-python binds the host's /etc/hosts here (debootstrap leaves none).
touch "$root/etc/hosts"

rm -f "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/locale/*

# Record what is inside, for the harnesses and for people.
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "script-hash: $script_hash"
  echo "mirror: $mirror"
  echo "suite: $suite"
  in_root dpkg-query -W -f='${Package} ${Version}\n' python3-moto python3-flask python3-flask-cors python3-werkzeug python3-botocore \
    python3-distributed python3-dask python3 python3-msgpack python3-cloudpickle python3-tornado
  in_root python3 -c 'import sys, dask, distributed; print("versions: python %d.%d.%d dask %s distributed %s" % (sys.version_info[:3] + (dask.__version__, distributed.__version__)))'
} >"$root/etc/dask-cloud-trixie-root"

# --- swap in ------------------------------------------------------------------------------------
rm -f "$out.hash"
if [ -e "$out" ]; then mv "$out" "$work/old"; fi
mv "$root" "$out"
printf '%s' "$script_hash" >"$out.hash"
t3=$(date +%s)
log "done in $((t3 - started)) s (debootstrap $((t1 - t0)) s, install $((t2 - t1)) s, finish $((t3 - t2)) s): $(du -sh "$out" | cut -f1)"
cat "$out/etc/dask-cloud-trixie-root" >&2
