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

# shellcheck source=debian-root.sh
. "$here/debian-root.sh"
build_begin build-trixie-root "${BASH_SOURCE[0]}" "$out"

started=$(date +%s)
command -v debootstrap >/dev/null || host_tools debootstrap
command -v unshare >/dev/null || die "unshare (util-linux) is missing"

# --- build next to OUT, then swap it in: a half-built root is never left at OUT ------------------
mkdir -p "$(dirname "$out")"
work="$(mktemp -d "$(dirname "$out")/.trixie-root-build.XXXXXX")"
cleanup() { rm -rf --one-file-system "$work" 2>/dev/null || true; }
trap cleanup EXIT
root="$work/root"

debian_bootstrap "$suite" "$work"
debian_install "$work/install.log" "${packages[@]}"

# The server and its EC2 backend must import (the backend is loaded on the first EC2 request).
in_root python3 -c 'import moto.server, moto.ec2.models, flask, flask_cors' ||
  die "moto.server or its EC2 backend does not import in the root"
# Dask: the client imports, and the command lines LocalCluster and the VMs use work.
in_root python3 -c 'import distributed' || die "distributed does not import in the root"
for role in scheduler worker; do
  in_root python3 -m dask "$role" --help >/dev/null || die "python3 -m dask $role does not work in the root"
done
openssl_ignore_unexpected_eof

# Mount point for the per-run AMI catalogue the harness binds in (test/moto/moto-ec2.ts).
mkdir -p "$root/run/dask-cloud-moto"
# scripts/trixie-python binds the host's /etc/hosts here (debootstrap leaves none).
touch "$root/etc/hosts"

debian_slim

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
log "done in $(($(date +%s) - started)) s: $(du -sh "$out" | cut -f1)"
cat "$out/etc/dask-cloud-trixie-root" >&2
