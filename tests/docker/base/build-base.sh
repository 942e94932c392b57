#!/usr/bin/env bash
# Build the registry-free base image local/conntune-base:
#   debootstrap bookworm (minbase + the packages below) | docker import
# Usage: build-base.sh TAG RECIPE_HASH
# Env:   MIRROR   Debian mirror URI (default http://deb.debian.org/debian)
#        WORKDIR  scratch dir for the rootfs (default /var/cache/conntune)
# The content of this file IS the base recipe: tests/docker/build-images.sh hashes it
# and stores the hash in the image label org.conntune.recipe-hash.
set -euo pipefail
TAG=${1:?usage: build-base.sh TAG RECIPE_HASH}
HASH=${2:?usage: build-base.sh TAG RECIPE_HASH}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
WORKDIR=${WORKDIR:-/var/cache/conntune}
SUITE=bookworm
# debootstrap resolves Depends only, no alternatives/Recommends:
#  - libpam-systemd: polkitd's logind alternative, needed by firewalld
#  - netbase: /etc/protocols, else firewalld dies with "INVALID_PROTOCOL: esp"
PACKAGES=(
  systemd-sysv libpam-systemd dbus
  firewalld nftables netbase
  openssh-server
  iproute2 procps kmod conntrack ethtool
  python3-minimal sudo
)

root="$WORKDIR/rootfs-conntune-base"
log="$WORKDIR/debootstrap-conntune-base.log"
mkdir -p "$WORKDIR"
rm -rf "$root"
inc=$(IFS=,; echo "${PACKAGES[*]}")
echo "debootstrap --variant=minbase $SUITE from $MIRROR (log: $log)"
if ! debootstrap --variant=minbase --include="$inc" "$SUITE" "$root" "$MIRROR" >"$log" 2>&1; then
  tail -n 30 "$log" >&2 || true
  tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  echo "build-base.sh: debootstrap failed" >&2
  exit 1
fi
# trim, and make every container generate its own identity
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
       "$root"/etc/ssh/ssh_host_* "$root"/var/log/*.log
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo "rootfs: $(du -sh "$root" | cut -f1)"
if ! tar --numeric-owner -C "$root" -c . |
  docker import \
    --change "LABEL org.conntune.recipe-hash=$HASH" \
    --change "LABEL org.conntune.suite=$SUITE" \
    --change 'ENV container=docker' \
    --change 'CMD ["/sbin/init"]' \
    - "$TAG" >/dev/null; then
  echo "build-base.sh: docker import of $root failed (rootfs kept for inspection)" >&2
  exit 1
fi
rm -rf "$root"
echo "imported $TAG"
