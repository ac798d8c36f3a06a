#!/usr/bin/env bash
# Build the Debian image our simulated VMs boot (test/sim/): debootstrap trixie (minbase) plus
# cloud-init, Debian's python3-distributed (real Dask: 2024.12.1 on Python 3.13), systemd, iproute2
# and nftables, configured for the NoCloud datasource only. The result is a tarball, cached:
#
#   scripts/build-vm-image.sh [OUT]        # default OUT: .cache/vm-image.tar.gz
#
# Trixie, the suite of scripts/build-trixie-root.sh: the tests compute on these VMs from that root's
# Python (scripts/trixie-python), so client and cluster run the same Dask. The host's bookworm Dask
# (2022.12.1) cannot compute on a 2024.12.1 cluster.
#
# Idempotent: rebuilds only when OUT is missing or this script changed (its hash is stored in
# OUT.hash). Needs root and Debian's package mirror; installs its own host tools when missing
# (debootstrap, systemd-container for systemd-nspawn, iproute2, nftables), so CI can run it on a
# fresh Debian machine. Env: DASK_CLOUD_DEBIAN_MIRROR overrides the mirror read from apt's sources;
# FORCE=1 rebuilds regardless of the hash.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/.cache/vm-image.tar.gz}"
suite=trixie
# What the image runs, as the library's image choice sees it (src/dask/images.ts): the build checks
# the installed Dask and Python against these, so a change of the suite's Dask is noticed here.
dask_release=2024.12.1
python_minor=3.13
# The Docker stand-in answers only to the image tags the library picks for that Dask and Python
# (`ghcr.io/dask/dask:<release>-py<X.Y>`; dask-docker built 2024.12.1 for Python 3.10-3.12 only,
# so the nearest, 3.12). A VM whose unit names any other image cannot "pull" it: the one list.
image_tags=("ghcr.io/dask/dask:${dask_release}-py3.12")
# Packages inside the image. python3-cffi-backend: resolves a virtual package apt otherwise trips on.
# python-is-python3: `python`, which the Docker runtime runs inside the Dask container.
packages=(cloud-init python3-distributed systemd-sysv dbus iproute2 nftables python3-cffi-backend procps python-is-python3)

# shellcheck source=debian-root.sh
. "$here/debian-root.sh"
build_begin build-vm-image "${BASH_SOURCE[0]}" "$out"

started=$(date +%s)

# --- host tools -------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v unshare >/dev/null || need+=(util-linux)
host_tools "${need[@]}"

# --- build in a scratch dir; mounts live in a private mount namespace and die with it ----------
work="$(mktemp -d /var/tmp/dcsim-image-build.XXXXXX)"
cleanup() { rm -rf --one-file-system "$work" 2>/dev/null || true; }
trap cleanup EXIT
root="$work/root"

debian_bootstrap "$suite" "$work"
debian_install "$work/install.log" "${packages[@]}"

# --- configuration ------------------------------------------------------------------------------
# cloud-init: NoCloud only (the seed in /var/lib/cloud/seed/nocloud), no network config of its own:
# the simulated cloud sets the interfaces up before boot, like a cloud's DHCP would.
cat >"$root/etc/cloud/cloud.cfg.d/99_dask_cloud_sim.cfg" <<'EOF'
# dask-cloud simulated VM: the NoCloud seed is the only datasource.
datasource_list: [ NoCloud ]
network: {config: disabled}
# No locales package in the image: C.UTF-8 is built into glibc.
locale: C.UTF-8
EOF
# No ssh server in the image: the modules that make host keys and print fingerprints only log
# errors (and `ssh_genkeytypes: []` is invalid per cloud-init's schema), so drop them.
sed -i -e '/^ - ssh$/d' -e '/^ - ssh-authkey-fingerprints$/d' "$root/etc/cloud/cloud.cfg"
# cloud-init validates the merged system config at boot and only logs a vague warning: check each file now.
# The schema is the user-data one, which since cloud-init 24 refuses the system-only keys (the
# logging setup of 05_logging.cfg, datasource_list, network): those are left out of the check.
in_root sh -c 'for f in /etc/cloud/cloud.cfg /etc/cloud/cloud.cfg.d/*.cfg; do
  python3 -c "import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1])) or {}
for key in (\"_log\", \"log_cfgs\", \"datasource_list\", \"network\"):
    cfg.pop(key, None)
print(\"#cloud-config\")
print(yaml.safe_dump(cfg))" "$f" >/tmp/check.yaml
  cloud-init schema --config-file /tmp/check.yaml >/dev/null 2>&1 || { cloud-init schema --config-file /tmp/check.yaml; echo "invalid: $f"; exit 1; }
done; rm -f /tmp/check.yaml' || die "cloud-init system config does not pass its schema"
# ds-identify: always enable cloud-init (no hardware to probe in a container).
printf 'policy: enabled\n' >"$root/etc/cloud/ds-identify.cfg"

# A failed cloud-init unit must not hang the VM at shutdown. (cloud-init 24+ runs every stage in
# cloud-init-main.service; the stage units only signal it, cloud-init-network is the old cloud-init.)
for unit in cloud-init-main cloud-init-local cloud-init-network cloud-init cloud-config cloud-final; do
  [ -f "$root/usr/lib/systemd/system/$unit.service" ] || [ -f "$root/lib/systemd/system/$unit.service" ] || continue
  mkdir -p "$root/etc/systemd/system/$unit.service.d"
  printf '[Service]\nTimeoutStopSec=5s\n' >"$root/etc/systemd/system/$unit.service.d/10-dask-cloud-sim.conf"
done
# Whole-VM shutdown is bounded as well.
mkdir -p "$root/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultTimeoutStopSec=5s\nDefaultTimeoutStartSec=30s\n' >"$root/etc/systemd/system.conf.d/10-dask-cloud-sim.conf"

# Units that slow boot, need hardware, or have no use in a simulated VM.
for unit in \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
  fstrim.timer man-db.timer systemd-timesyncd.service systemd-networkd-wait-online.service \
  systemd-networkd.service systemd-resolved.service getty@.service serial-getty@.service \
  console-getty.service getty.target systemd-hwdb-update.service systemd-udevd.service \
  systemd-udev-trigger.service systemd-journal-flush.service systemd-random-seed.service \
  systemd-modules-load.service nftables.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# journald: keep logs in memory, forward to the console so a VM's boot shows up in its console log.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$root/etc/systemd/journald.conf.d/10-dask-cloud-sim.conf"

# `dask` CLI: trixie's python3-dask ships /usr/bin/dask; older Debian only dask-scheduler / dask-worker.
if [ ! -x "$root/usr/bin/dask" ]; then
  cat >"$root/usr/bin/dask" <<'EOF'
#!/usr/bin/python3
# Added by dask-cloud's build-vm-image.sh: the `dask` entry point (dask.cli).
import sys
from dask.cli import run_cli
sys.exit(run_cli())
EOF
  chmod 0755 "$root/usr/bin/dask"
fi
in_root /usr/bin/dask scheduler --help >/dev/null || die "/usr/bin/dask scheduler does not work in the image"
in_root /usr/bin/dask worker --help >/dev/null || die "/usr/bin/dask worker does not work in the image"
in_root cloud-init --version >/dev/null 2>&1 || die "cloud-init does not run in the image"
# The Dask and Python the image tags above stand for.
have_versions="$(in_root python3 -c 'import sys, importlib.metadata as m; print("%d.%d" % sys.version_info[:2], m.version("distributed"))')"
[ "$have_versions" = "$python_minor $dask_release" ] ||
  die "the image runs Python and Dask '$have_versions', not '$python_minor $dask_release': update dask_release, python_minor and image_tags at the top of this script"

openssl_ignore_unexpected_eof

# Fresh identity per boot; no leftovers from the build.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
printf 'dcsim\n' >"$root/etc/hostname"
# debootstrap leaves no /etc/hosts: without it even `localhost` does not resolve. The simulated
# cloud adds the VM's own name per boot (like a cloud's internal DNS).
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# No cloud-init state from the build: each VM's first boot is a first boot.
clean_root() {
  debian_slim
  rm -rf "$root"/var/lib/cloud/*
}
clean_root

# --- Docker runtime -------------------------------------------------------------------------------
# The simulated VMs have no internet, so they cannot pull ghcr.io/dask/dask. Stand-in: the image as
# it is now (Debian's Dask, `python`) is packed as a container image tarball into the VM image, and
# Docker is installed next to it. docker.service starts only when user-data asks for it (the docker
# runtime's runcmd runs `systemctl enable --now docker`); before that start completes, a drop-in
# imports the tarball under the image name of the Dask unit cloud-init wrote, as if the VM had
# pulled it, but only when that name is one of $image_tags (/opt/dask-cloud-sim/image-tags): the
# tags the library picks for this Dask and Python. Any other name is left to `docker run`, which
# cannot pull it (no route out, no DNS), so the VM fails like a VM that cannot pull the image it
# names. Test VMs run Docker when booted with `containers: true` (test/sim/vm.ts).
mkdir -p "$work/dask-image"
tar -C "$root" --numeric-owner --one-file-system --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
  -cf "$work/dask-image/dask-image.tar" .
mkdir -p "$root/opt/dask-cloud-sim"
mv "$work/dask-image/dask-image.tar" "$root/opt/dask-cloud-sim/dask-image.tar"
printf '%s\n' "${image_tags[@]}" >"$root/opt/dask-cloud-sim/image-tags"
build_mode on
# docker-cli: since trixie the `docker` command is its own package, which docker.io only recommends.
debian_install "$work/install-docker.log" docker.io docker-cli
# Not started at boot: only VMs whose user-data enables it run dockerd.
rm -f "$root"/etc/systemd/system/multi-user.target.wants/docker.service \
  "$root"/etc/systemd/system/multi-user.target.wants/containerd.service \
  "$root"/etc/systemd/system/sockets.target.wants/docker.socket
mkdir -p "$root/etc/docker" "$root/etc/systemd/system/docker.service.d"
# Host networking only (what the Dask unit uses): no bridge, no iptables rules, no ip_forward
# (read-only in the VM, and nothing to forward). overlay2 works on
# the tmpfs a containers-enabled VM gets at /var/lib/docker.
printf '{"storage-driver": "overlay2", "bridge": "none", "iptables": false, "ip6tables": false, "ip-forward": false, "ip-masq": false}\n' >"$root/etc/docker/daemon.json"
cat >"$root/usr/local/sbin/dask-cloud-sim-docker-preload" <<'EOF'
#!/bin/sh
# dask-cloud simulated VM: give Docker the Dask image the Dask unit names, as if it had been pulled,
# when it is one of the tags in /opt/dask-cloud-sim/image-tags (what the library picks for the Dask
# and Python in the tarball). Another name is not imported: `docker run` then tries to pull it and
# fails, as on a VM that cannot pull the image it names. Never fails docker.service itself.
set -eu
tags=/opt/dask-cloud-sim/image-tags
for unit in /etc/systemd/system/dask-*.service; do
  [ -f "$unit" ] || continue
  image="$(sed -n 's|^ExecStart=/usr/bin/docker run .* \([^ ]*\) python /etc/dask/launch.py .*|\1|p' "$unit")"
  [ -n "$image" ] || continue
  # The unit quotes it ("..."); image references hold no characters systemd would escape.
  image="${image#\"}"; image="${image%\"}"
  if ! grep -qxF -- "$image" "$tags"; then
    echo "dask-cloud-sim: not importing $image for ${unit##*/}: this VM can only pull $(tr '\n' ' ' <"$tags")(the Dask and Python of its image)"
    continue
  fi
  docker image inspect "$image" >/dev/null 2>&1 && continue
  echo "dask-cloud-sim: importing /opt/dask-cloud-sim/dask-image.tar as $image"
  docker import /opt/dask-cloud-sim/dask-image.tar "$image" >/dev/null
done
EOF
chmod 0755 "$root/usr/local/sbin/dask-cloud-sim-docker-preload"
printf '[Service]\nExecStartPost=/usr/local/sbin/dask-cloud-sim-docker-preload\n' >"$root/etc/systemd/system/docker.service.d/10-dask-cloud-sim.conf"
in_root docker --version >/dev/null || die "docker does not run in the image"
clean_root

# Record what is inside, for the harness and for people.
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "script-hash: $script_hash"
  echo "mirror: $mirror"
  echo "suite: $suite"
  echo "dask: $dask_release"
  echo "python: $python_minor"
  echo "image-tags: ${image_tags[*]}"
  in_root dpkg-query -W -f='${Package} ${Version}\n' cloud-init python3-distributed python3-dask python3 systemd nftables iproute2 docker.io docker-cli
} >"$root/etc/dask-cloud-sim-image"

# --- pack ---------------------------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
log "packing $out"
tar -C "$root" --numeric-owner --one-file-system -cf - . | gzip -1 >"$out.tmp"
mv -f "$out.tmp" "$out"
printf '%s' "$script_hash" >"$out.hash"
log "done in $(($(date +%s) - started)) s: $(du -h "$out" | cut -f1)"
cat "$root/etc/dask-cloud-sim-image" >&2
