#!/usr/bin/env bash
# Run a command in a new network namespace that has only loopback, after checking that addresses
# outside it cannot be reached from there:
#
#   scripts/in-loopback-netns.sh COMMAND [ARGS...]
#
# Why: moto (test/moto/) hands out 54.x public and 172.31.x private addresses, and the library
# under test dials them (scheduler readiness). In this namespace such a dial fails at once with
# ENETUNREACH instead of leaving the machine. Needs root (or unprivileged user namespaces, then
# the command runs as a mapped root). The namespace dies with the command.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

if [ "${DASK_CLOUD_IN_LOOPBACK_NETNS:-}" != 1 ]; then
  command -v unshare >/dev/null || { echo "in-loopback-netns: unshare (util-linux) is missing" >&2; exit 1; }
  command -v ip >/dev/null || { echo "in-loopback-netns: ip (iproute2) is missing" >&2; exit 1; }
  userns=()
  [ "$(id -u)" = 0 ] || userns=(--user --map-root-user)
  # Re-enter this script inside the new namespace; the marker tells the second run where it is.
  exec unshare "${userns[@]}" --net -- env DASK_CLOUD_IN_LOOPBACK_NETNS=1 "$0" "$@"
fi

ip link set lo up
# Every route must be on lo; any other link or route means this is not the namespace we made.
if ip -o link show | awk -F': ' '{print $2}' | grep -qv '^lo$'; then
  echo "in-loopback-netns: refusing: a link other than lo exists:" >&2
  ip -o link show >&2
  exit 1
fi
if ip route show table all | grep -v ' dev lo ' | grep -q .; then
  echo "in-loopback-netns: refusing: a route not on lo exists:" >&2
  ip route show table all >&2
  exit 1
fi
for addr in 54.1.2.3 172.31.0.5 10.0.0.1 8.8.8.8; do
  if ip route get "$addr" >/dev/null 2>&1; then
    echo "in-loopback-netns: refusing: $addr is routable here: $(ip route get "$addr")" >&2
    exit 1
  fi
done
exec "$@"
