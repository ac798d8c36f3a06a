# Sourced by the image build scripts. debian_mirror SUITE prints the Debian archive this machine's
# apt uses for SUITE (deb822 sources first, then the one-line format), DASK_CLOUD_DEBIAN_MIRROR
# when set, else deb.debian.org. The same archive serves bookworm, trixie and sid.
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
