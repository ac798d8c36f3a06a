#!/usr/bin/env bash
# Build the root that runs moto, a third-party EC2 emulator our EC2 provider tests also run against
# (test/moto/): debootstrap a minbase Debian trixie and install Debian's python3-moto plus what
# `python3 -m moto.server` needs (flask and flask-cors, which python3-moto only suggests).
#
#   scripts/build-moto-root.sh [OUT]        # default OUT: .cache/moto-root (a directory)
#
# Trixie, not sid: trixie is a stable release, so the same script gives the same moto (5.1.x) on
# every run, whereas sid changes daily and is sometimes uninstallable for a while; trixie's moto
# already has every EC2 call the library makes.
#
# Idempotent: rebuilds only when OUT is missing or this script changed (its hash is stored in
# OUT.hash). Needs root and Debian's package mirror: it reuses the archive this machine's apt uses,
# with the trixie suite. Installs only debootstrap on the host (when missing). Env:
# DASK_CLOUD_DEBIAN_MIRROR overrides the mirror read from apt's sources; FORCE=1 rebuilds
# regardless of the hash.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/.cache/moto-root}"
suite=trixie
# python3-flask and python3-flask-cors: moto.server imports both; python3-moto does not depend on them.
packages=(python3-moto python3-flask python3-flask-cors)

log() { printf '[build-moto-root] %s\n' "$*" >&2; }
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
work="$(mktemp -d "$(dirname "$out")/.moto-root-build.XXXXXX")"
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

# Mount point for the per-run AMI catalogue the harness binds in (test/moto/moto-ec2.ts).
mkdir -p "$root/run/dask-cloud-moto"

rm -f "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/locale/*

# Record what is inside, for the harness and for people.
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "script-hash: $script_hash"
  echo "mirror: $mirror"
  echo "suite: $suite"
  in_root dpkg-query -W -f='${Package} ${Version}\n' python3-moto python3-flask python3-flask-cors python3-werkzeug python3-botocore python3
} >"$root/etc/dask-cloud-moto-root"

# --- swap in ------------------------------------------------------------------------------------
rm -f "$out.hash"
if [ -e "$out" ]; then mv "$out" "$work/old"; fi
mv "$root" "$out"
printf '%s' "$script_hash" >"$out.hash"
t3=$(date +%s)
log "done in $((t3 - started)) s (debootstrap $((t1 - t0)) s, install $((t2 - t1)) s, finish $((t3 - t2)) s): $(du -sh "$out" | cut -f1)"
cat "$out/etc/dask-cloud-moto-root" >&2
