# Install Docker only when the image lacks it: installing docker.io over a preinstalled docker-ce
# conflicts, and skipping apt-get update saves most of a minute. Debian/Ubuntu first, then the
# RPM families. Shipped as one runcmd entry; full-line comments are stripped from the shipped copy.
command -v docker >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -yq docker.io; } || dnf install -y docker || yum install -y docker
systemctl enable --now docker
