#!/bin/bash
# Build (or reuse from cache) a bootable Debian test VM image for conntune's VM tests:
# raw ext4 disk image (no partition table, built without mounting) + kernel/initrd for
# qemu direct-kernel boot. Adapted from the lab recipe (debootstrap minbase, small initramfs,
# masked timers, fixed test SSH keys).
#
# Usage: build-image.sh SUITE OUTDIR          SUITE = bookworm | trixie
#        build-image.sh --cache-dir SUITE     print the cache dir this recipe uses, build nothing
#
# The image is built once into a cache dir and reused while this script is unchanged:
#   CACHE = ${CONNTUNE_VM_CACHE_ROOT:-/var/cache/conntune/vm}/SUITE-RECIPEHASH
#   RECIPEHASH = first 12 hex of sha256 over this script + keys/*.pub (the fixed keys are
#                baked into the image, so a changed key must also rebuild)
# CONNTUNE_VM_CACHE overrides the whole cache dir path.
#
# OUTDIR is then filled for vm.sh (use it as W=OUTDIR):
#   disk.img vmlinuz initrd.img  -> symlinks into CACHE (vm.sh resolves them, so overlays and saved
#                                   snapshots point at the cache, not at OUTDIR)
#   id_ed25519 (mode 0600 copy of the fixed test client key; git does not keep 0600)
#   known_hosts.template         "[127.0.0.1]:PORT ssh-ed25519 ..." (replace PORT)
#   image.env                    SUITE= KERNEL= RECIPE_HASH= CACHE=
#
# Env: MIRROR (default: first deb.debian.org-style URI in the host's apt sources, else
#      http://deb.debian.org/debian), SIZE (default 3G), REBUILD=1 (ignore a complete cache),
#      KEEP_ROOTFS=1 (keep CACHE/rootfs, ~750 MB), SMALL_INITRD=0 (keep Debian's MODULES=most),
#      KEEP_OLD=1 (do not delete CACHE_ROOT/SUITE-<otherhash> dirs of older recipes after a build).
# The debootstrap .deb cache is shared per suite in CACHE_ROOT/debcache-SUITE (survives recipe changes).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "$0")
KEYS=$HERE/keys

recipe_hash() { cat "$SELF" "$KEYS/id_ed25519.pub" "$KEYS/ssh_host_ed25519_key.pub" | sha256sum | cut -c1-12; }
cache_dir() { echo "${CONNTUNE_VM_CACHE:-${CONNTUNE_VM_CACHE_ROOT:-/var/cache/conntune/vm}/$1-$(recipe_hash)}"; }

if [ "${1:-}" = --cache-dir ]; then cache_dir "$2"; exit 0; fi
SUITE=${1:?usage: build-image.sh SUITE OUTDIR}
OUT=${2:?usage: build-image.sh SUITE OUTDIR}
case $SUITE in bookworm|trixie) ;; *) echo "unsupported suite: $SUITE" >&2; exit 2;; esac

default_mirror() {
  local m
  m=$(grep -hoE '^(URIs:|deb) *(\[[^]]*\] *)?https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
      | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(default_mirror)}
SIZE=${SIZE:-3G}
CACHE=$(cache_dir "$SUITE")
CROOT=$(dirname "$CACHE")
HASH=$(recipe_hash)

# libpam-systemd is required explicitly: polkitd (dep of firewalld) depends on the *virtual*
# package default-logind|logind, which debootstrap's resolver cannot satisfy by itself.
# netbase (/etc/protocols) is required: without it firewalld dies at start with
# "INVALID_PROTOCOL: esp" (minbase variant does not include it).
PKGS=netbase,linux-image-amd64,systemd-sysv,libpam-systemd,udev,kmod,dbus,openssh-server,firewalld,iproute2,conntrack,procps,python3,ethtool,nftables,iputils-ping,sudo

build() {
  local B=$1 R=$1/rootfs t0 t1 t2 t3
  mkdir -p "$B" "$CROOT/debcache-$SUITE"
  t0=$(date +%s)
  debootstrap --variant=minbase --cache-dir="$CROOT/debcache-$SUITE" --include=$PKGS \
    "$SUITE" "$R" "$MIRROR"
  t1=$(date +%s); echo "debootstrap: $((t1-t0))s"

  # ---- configure rootfs (plain file writes + chroot for a few commands) ----
  echo testvm > "$R/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 testvm\n::1 localhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
  echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$R/etc/fstab"
  mkdir -p "$R/etc/systemd/network"
  # static address: qemu's user-net DHCP with restrict=on hands out no router option, so DHCP
  # would leave the VM without a default route (conntune finds the egress NIC by the default route)
  printf '[Match]\nName=eth0 en*\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' \
    > "$R/etc/systemd/network/20-eth0.network"
  # no DNS inside the VM (qemu user net runs with restrict=on anyway)
  rm -f "$R/etc/resolv.conf"; : > "$R/etc/resolv.conf"
  echo 'root:root' | chroot "$R" chpasswd
  # fixed test-only keys (tests/vm/keys): client key for root, one ed25519 host key
  install -d -m 700 "$R/root/.ssh"
  install -m 600 "$KEYS/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
  rm -f "$R"/etc/ssh/ssh_host_*_key "$R"/etc/ssh/ssh_host_*_key.pub
  install -m 600 "$KEYS/ssh_host_ed25519_key" "$R/etc/ssh/ssh_host_ed25519_key"
  install -m 644 "$KEYS/ssh_host_ed25519_key.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
  cat > "$R/etc/ssh/sshd_config.d/10-testvm.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin yes
PasswordAuthentication yes
UseDNS no
EOF
  chroot "$R" systemctl enable systemd-networkd ssh firewalld >/dev/null 2>&1
  # things that only cost CPU under TCG or would try to reach the network
  chroot "$R" systemctl disable systemd-networkd-wait-online >/dev/null 2>&1 || true
  for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
           man-db.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
  done
  rm -f "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*_Packages 2>/dev/null || true
  # small initramfs: only what is needed to mount /dev/vda (kernel phase ~19.5 s -> ~11.7 s under TCG)
  if [ "${SMALL_INITRD:-1}" = 1 ]; then
    printf 'MODULES=list\n' > "$R/etc/initramfs-tools/conf.d/testvm.conf"
    printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' > "$R/etc/initramfs-tools/modules"
    chroot "$R" update-initramfs -u -k all >/dev/null
  fi
  local kver; kver=$(basename "$(ls -d "$R"/lib/modules/* | head -n1)")
  cp "$R/boot/vmlinuz-$kver" "$B/vmlinuz"; cp "$R/boot/initrd.img-$kver" "$B/initrd.img"
  echo "$kver" > "$B/kernel-version"
  awk '{print "[127.0.0.1]:PORT " $1 " " $2}' "$KEYS/ssh_host_ed25519_key.pub" > "$B/known_hosts.template"
  t2=$(date +%s); echo "configure: $((t2-t1))s"

  # ---- raw ext4 image populated from the directory: no loop mount ----
  mke2fs -q -t ext4 -L root -E root_owner=0:0 -d "$R" "$B/disk.img" "$SIZE"
  t3=$(date +%s); echo "mke2fs -d: $((t3-t2))s"
  [ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$R"
  printf 'suite=%s\nkernel=%s\nrecipe_hash=%s\nmirror=%s\ndebootstrap_s=%s\nconfigure_s=%s\nmke2fs_s=%s\ntotal_s=%s\nbuilt=%s\n' \
    "$SUITE" "$kver" "$HASH" "$MIRROR" "$((t1-t0))" "$((t2-t1))" "$((t3-t2))" "$((t3-t0))" \
    "$(date -u +%FT%TZ)" > "$B/build-info"
}

mkdir -p "$CROOT"
exec 9>"$CROOT/.lock-$SUITE"
flock 9
if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$CACHE/.complete" ]; then
  echo "building $SUITE image into $CACHE (recipe $HASH)"
  TMP=$CACHE.tmp.$$
  rm -rf "$TMP" "$CACHE"
  trap 'rm -rf "$TMP"' EXIT
  build "$TMP"
  touch "$TMP/.complete"
  mv "$TMP" "$CACHE"
  trap - EXIT
  # images (and their snapshots) from older recipes of this suite are dead weight (~0.8 GB each)
  if [ "${KEEP_OLD:-0}" != 1 ]; then
    for old in "$CROOT/$SUITE"-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]; do
      [ -d "$old" ] && [ "$old" != "$CACHE" ] && { echo "removing old image $old"; rm -rf "$old"; }
    done
  fi
else
  echo "reusing cached $SUITE image $CACHE (recipe $HASH)"
fi
exec 9>&-

mkdir -p "$OUT"
for f in disk.img vmlinuz initrd.img; do ln -sfn "$CACHE/$f" "$OUT/$f"; done
install -m 600 "$KEYS/id_ed25519" "$OUT/id_ed25519"
install -m 644 "$KEYS/id_ed25519.pub" "$OUT/id_ed25519.pub"
cp "$CACHE/known_hosts.template" "$OUT/known_hosts.template"
printf 'SUITE=%s\nKERNEL=%s\nRECIPE_HASH=%s\nCACHE=%s\n' "$SUITE" "$(cat "$CACHE/kernel-version")" "$HASH" "$CACHE" \
  > "$OUT/image.env"
cat "$OUT/image.env"
