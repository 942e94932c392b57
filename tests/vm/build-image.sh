#!/bin/bash
# Build (or reuse from cache) a bootable Debian test VM image for conntune's VM tests:
# raw ext4 disk image (no partition table, built without mounting) + kernel/initrd for
# qemu direct-kernel boot. Adapted from the lab recipe (debootstrap minbase, small initramfs,
# masked timers, fixed test SSH keys).
#
# Usage: build-image.sh SUITE OUTDIR          SUITE = bullseye | bookworm | trixie | sid | docker-bookworm
#        build-image.sh --cache-dir SUITE     print the cache dir this recipe uses, build nothing
#
# Suites (the same package list for all four Debian releases):
#   bullseye (11, kernel 5.10), bookworm (12, 6.1), trixie (13, 6.12): initramfs-tools initrd.
#   sid: whatever the archive serves today. Its linux-image pulls dracut, not initramfs-tools, and
#        its util-linux has no switch_root, so the small initrd is made by dracut with the systemd
#        initrd modules (dracut runs in the chroot with /proc and /dev bind-mounted, unmounted
#        right after).
#   docker-bookworm: the bookworm image plus docker.io, busybox-static and apparmor, installed
#        offline (resolved and downloaded here with a private apt configuration against the
#        rootfs's own dpkg status, then `chroot dpkg -i` with a policy-rc.d that starts nothing),
#        and a registry-free container image at /root/bb.tar (busybox httpd, /www/f = 1 KiB):
#          docker import /root/bb.tar local/bb:1
#          docker run -d --name web -p 8080:80 local/bb:1 /bin/busybox httpd -f -p 80 -h /www
#        Built from the bookworm image's rootfs (kept as CACHE(bookworm)/rootfs.tar.zst), so it
#        costs ~15-20 s on top of bookworm. AppArmor: Debian's kernel has it on, and without
#        apparmor_parser `docker run` fails ("docker-default profile could not be loaded").
#        busybox 1.35's `wget -T N` segfaults: use `timeout N busybox wget`.
#
# The image is built once into a cache dir and reused while the recipe is unchanged:
#   CACHE = ${CONNTUNE_VM_CACHE_ROOT:-/var/cache/conntune/vm}/SUITE-KEY
#   KEY   = first 12 hex of sha256 over this script + keys/*.pub (the fixed keys are baked into the
#           image, so a changed key must also rebuild): the "recipe hash".
#   sid:  KEY also covers the package set the archive serves now: "name version" of every package
#         debootstrap would install (Priority: required + apt + PKGS, resolved with
#         `apt-get -s install` against an empty dpkg status and a private apt configuration whose
#         Packages index lives in CACHE_ROOT/apt-sid), so a new sid upload of any of them rebuilds.
#         Costs ~3-5 s per call (an index update and one resolution). Offline, the newest complete
#         sid image of this recipe is reused with a warning.
# CONNTUNE_VM_CACHE overrides the whole cache dir path (one suite per call then).
#
# OUTDIR is then filled for vm.sh (use it as W=OUTDIR):
#   disk.img vmlinuz initrd.img  -> symlinks into CACHE (vm.sh resolves them, so overlays and saved
#                                   snapshots point at the cache, not at OUTDIR)
#   id_ed25519 (mode 0600 copy of the fixed test client key; git does not keep 0600)
#   known_hosts.template         "[127.0.0.1]:PORT ssh-ed25519 ..." (replace PORT)
#   image.env                    SUITE= KERNEL= RECIPE_HASH= CACHE=   (also printed)
# CACHE also keeps kernel-version, packages.txt (dpkg-query of the image), build-info (timings).
#
# Env: MIRROR (default: first deb.debian.org-style URI in the host's apt sources, else
#      http://deb.debian.org/debian), SIZE (default 3G, docker-bookworm 4G), REBUILD=1 (ignore a
#      complete cache), KEEP_ROOTFS=1 (keep CACHE/rootfs, ~750 MB), SMALL_INITRD=0 (keep the
#      distribution's own initrd), KEEP_OLD=1 (do not delete CACHE_ROOT/SUITE-<otherkey> dirs
#      after a build).
# The debootstrap .deb cache is shared per suite in CACHE_ROOT/debcache-SUITE (survives recipe changes).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "$0")
KEYS=$HERE/keys
CROOT=${CONNTUNE_VM_CACHE_ROOT:-/var/cache/conntune/vm}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ARCH=amd64

# libpam-systemd is required explicitly: polkitd (dep of firewalld) depends on the *virtual*
# package default-logind|logind, which debootstrap's resolver cannot satisfy by itself.
# netbase (/etc/protocols) is required: without it firewalld dies at start with
# "INVALID_PROTOCOL: esp" (minbase variant does not include it).
PKGS=netbase,linux-image-amd64,systemd-sysv,libpam-systemd,udev,kmod,dbus,openssh-server,firewalld,iproute2,conntrack,procps,python3,ethtool,nftables,iputils-ping,sudo
DOCKER_PKGS="docker.io busybox-static apparmor"
# dpkg without an fsync per unpacked file (a throw-away image; ~1 ms per fsync here, ~10-20 % of
# debootstrap); DPKG_FORCE replaces dpkg's built-in force defaults, so they are repeated
export DPKG_FORCE=unsafe-io,security-mac,downgrade

default_mirror() {
  local m
  m=$(grep -hoE '^(URIs:|deb) *(\[[^]]*\] *)?https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
      | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(default_mirror)}
MIRROR=${MIRROR%/}

recipe_hash() { cat "$SELF" "$KEYS/id_ed25519.pub" "$KEYS/ssh_host_ed25519_key.pub" | sha256sum | cut -c1-12; }
HASH=$(recipe_hash)

# A private apt configuration in directory $1 (its own sources, lists and dpkg status $2; the
# host's apt state is never touched). Further args: "URI SUITE" source lines. Sets APTOPTS.
apt_private() {
  local A=$1 status=$2 src; shift 2
  mkdir -p "$A/lists/partial" "$A/empty" "$A/cache" "$A/debs/partial"
  : > "$A/sources.list"
  for src in "$@"; do printf 'deb [signed-by=%s] %s main\n' "$KEYRING" "$src" >> "$A/sources.list"; done
  APTOPTS=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts="$A/empty"
           -o Dir::State::Lists="$A/lists" -o Dir::State::status="$status" -o Dir::Cache="$A/cache"
           -o Dir::Cache::archives="$A/debs" -o Dir::Etc::Preferences=/dev/null
           -o Dir::Etc::PreferencesParts="$A/empty" -o Acquire::Languages=none
           -o APT::Install-Recommends=0 -o "APT::Architecture=$ARCH" -o "APT::Architectures=$ARCH"
           -o Debug::NoLocking=1)
}

# "name version" of every package `debootstrap --variant=minbase --include=$PKGS SUITE` would
# install from the archive as it is now (Priority: required + apt + PKGS and their dependencies).
archive_packages() {
  local suite=$1 A=$CROOT/apt-$1 required sim
  mkdir -p "$A"
  exec 7>"$A/.lock"; flock 7
  apt_private "$A" "$A/status" "$MIRROR $suite"
  : > "$A/status"
  apt-get "${APTOPTS[@]}" -qq update >&2 || return 1
  required=$(/usr/lib/apt/apt-helper cat-file "$A"/lists/*_dists_"${suite}"_main_binary-${ARCH}_Packages* \
             | awk '/^Package:/ {p = $2} /^Priority: required$/ {print p}' | sort -u) || return 1
  [ -n "$required" ] || return 1
  # shellcheck disable=SC2086  # word lists on purpose
  sim=$(apt-get "${APTOPTS[@]}" -s install $required apt ${PKGS//,/ }) || return 1
  exec 7>&-
  awk '/^Inst / {v = $3; sub(/^\(/, "", v); print $2, v}' <<< "$sim" | sort
}

# sid: resolve the archive's package set once (sets SID_PACKAGES; offline: SID_CACHE, the newest
# complete sid image of this recipe)
SID_PACKAGES='' SID_CACHE=''
resolve_sid() {
  local list old
  if list=$(archive_packages sid) && [ -n "$list" ]; then
    SID_PACKAGES=$list
    return
  fi
  while IFS= read -r old; do  # newest first
    if [ -f "$old.complete" ] && grep -qx "recipe_hash=$HASH" "$old/build-info"; then
      SID_CACHE=${old%/}; break
    fi
  done < <(ls -td "$CROOT"/sid-*/ 2>/dev/null)
  [ -n "$SID_CACHE" ] || { echo "sid: cannot read the archive's package set from $MIRROR, and no cached sid image of recipe $HASH" >&2; exit 1; }
  echo "sid: cannot read the archive's package set from $MIRROR: reusing $SID_CACHE" >&2
}

# CACHE dir of a suite (see header; sid: call resolve_sid first)
cache_dir() {
  if [ -n "${CONNTUNE_VM_CACHE:-}" ]; then echo "$CONNTUNE_VM_CACHE"; return; fi
  if [ "$1" = sid ]; then
    if [ -n "$SID_CACHE" ]; then echo "$SID_CACHE"; return; fi
    echo "$CROOT/sid-$( { echo "$HASH"; echo "$SID_PACKAGES"; } | sha256sum | cut -c1-12)"
    return
  fi
  echo "$CROOT/$1-$HASH"
}

if [ "${1:-}" = --cache-dir ]; then
  [ "${2:?suite}" = sid ] && [ -z "${CONNTUNE_VM_CACHE:-}" ] && resolve_sid
  cache_dir "$2"; exit 0
fi
SUITE=${1:?usage: build-image.sh SUITE OUTDIR}
OUT=${2:?usage: build-image.sh SUITE OUTDIR}
case $SUITE in bullseye|bookworm|trixie|sid|docker-bookworm) ;; *) echo "unsupported suite: $SUITE" >&2; exit 2;; esac
if [ "$SUITE" = docker-bookworm ] && [ -n "${CONNTUNE_VM_CACHE:-}" ]; then
  echo "CONNTUNE_VM_CACHE names one dir: docker-bookworm needs two (itself and bookworm)" >&2; exit 2
fi

# ---- the rootfs of a Debian suite, configured: debootstrap minbase + plain file writes ----
rootfs() {  # $1 suite, $2 rootfs dir, $3 build dir (kernel, initrd, kernel-version go there)
  local suite=$1 R=$2 B=$3 kver
  mkdir -p "$CROOT/debcache-$suite"
  debootstrap --variant=minbase --cache-dir="$CROOT/debcache-$suite" --include=$PKGS \
    "$suite" "$R" "$MIRROR"
  T_DEBOOTSTRAP=$(date +%s)
  echo "debootstrap: $((T_DEBOOTSTRAP - T_START))s"

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
  mkdir -p "$R/etc/ssh/sshd_config.d"
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
  kver=$(find "$R/lib/modules/" -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n1)
  # small initrd: only what is needed to mount /dev/vda (kernel phase ~19.5 s -> ~11.7 s under TCG)
  if [ "${SMALL_INITRD:-1}" = 1 ] && [ -d "$R/etc/initramfs-tools" ]; then
    printf 'MODULES=list\n' > "$R/etc/initramfs-tools/conf.d/testvm.conf"
    printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' > "$R/etc/initramfs-tools/modules"
    chroot "$R" update-initramfs -u -k all >/dev/null
    cp "$R/boot/initrd.img-$kver" "$B/initrd.img"
  elif [ "${SMALL_INITRD:-1}" = 1 ] && [ -x "$R/usr/bin/dracut" ]; then
    dracut_initrd "$R" "$kver" "$B/initrd.img"
    chmod 644 "$B/initrd.img"
  else
    cp "$R/boot/initrd.img-$kver" "$B/initrd.img"
  fi
  cp "$R/boot/vmlinuz-$kver" "$B/vmlinuz"
  echo "$kver" > "$B/kernel-version"
}

# dracut (sid): the systemd initrd (sid's util-linux has no switch_root for dracut's plain init).
# dracut needs /proc and /dev in the chroot: mounted here, unmounted before anything else runs.
dracut_initrd() {  # $1 rootfs $2 kernel version $3 output
  local R=$1 rc=0
  mount -t proc proc "$R/proc"
  mount --bind /dev "$R/dev"
  chroot "$R" dracut --quiet --force --no-hostonly --no-hostonly-cmdline \
    --modules "systemd systemd-initrd rootfs-block kernel-modules" \
    --drivers "virtio_pci virtio_blk virtio_net ext4" /tmp/initrd-small.img "$2" || rc=$?
  umount "$R/dev" "$R/proc"
  [ "$rc" = 0 ] || return "$rc"
  mv "$R/tmp/initrd-small.img" "$3"
}

# ---- docker-bookworm: the bookworm rootfs + docker.io, busybox-static, apparmor (offline) ----
docker_rootfs() {  # $1 rootfs dir, $2 build dir, $3 bookworm cache dir
  local R=$1 B=$2 BASE=$3 A=$2/apt SEC
  [ -f "$BASE/rootfs.tar.zst" ] || { echo "$BASE/rootfs.tar.zst missing: REBUILD=1 $SELF bookworm DIR" >&2; return 1; }
  mkdir -p "$R"
  zstd -q -dc "$BASE/rootfs.tar.zst" | tar --xattrs --xattrs-include='*' --numeric-owner -C "$R" -xpf -
  SEC=${MIRROR%/debian}/debian-security
  apt_private "$A" "$R/var/lib/dpkg/status" "$MIRROR bookworm" "$MIRROR bookworm-updates" "$SEC bookworm-security"
  apt-get "${APTOPTS[@]}" -qq update
  # shellcheck disable=SC2086  # word list on purpose
  apt-get "${APTOPTS[@]}" -y -qq install --download-only $DOCKER_PKGS >/dev/null
  T_DEBOOTSTRAP=$(date +%s)
  echo "docker packages resolved + downloaded: $(find "$A/debs" -maxdepth 1 -name '*.deb' | wc -l) debs, $((T_DEBOOTSTRAP - T_START))s"
  mkdir -p "$R/tmp/debs"; cp "$A"/debs/*.deb "$R/tmp/debs/"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"  # no starts in chroot
  chroot "$R" sh -c 'dpkg -i /tmp/debs/*.deb' > "$B/dpkg.log" 2>&1 || { tail -20 "$B/dpkg.log"; return 1; }
  rm -rf "$R/usr/sbin/policy-rc.d" "$R/tmp/debs" "$A"
  # registry-free container image: busybox-static plus a web root with a 1 KiB file
  local bb=$B/bbroot
  mkdir -p "$bb/bin" "$bb/www"
  cp "$R/bin/busybox" "$bb/bin/busybox"; ln -s busybox "$bb/bin/sh"
  head -c 1024 /dev/zero | tr '\0' x > "$bb/www/f"; echo hello > "$bb/www/index.html"
  tar --numeric-owner --owner=0 --group=0 -C "$bb" -cf "$R/root/bb.tar" .
  rm -rf "$bb"
  cp "$BASE/vmlinuz" "$BASE/initrd.img" "$BASE/kernel-version" "$B/"
}

build() {  # $1 suite, $2 build dir
  local suite=$1 B=$2 R=$2/rootfs size=${SIZE:-3G} kver
  T_START=$(date +%s)
  mkdir -p "$B"
  if [ "$suite" = docker-bookworm ]; then
    size=${SIZE:-4G}
    exec 8>"$CROOT/.lock-bookworm"; flock -s 8   # the bookworm image is not replaced meanwhile
    docker_rootfs "$R" "$B" "$(cache_dir bookworm)"
    exec 8>&-
  else
    rootfs "$suite" "$R" "$B"
  fi
  [ "$suite" = sid ] && printf '%s\n' "$SID_PACKAGES" > "$B/archive-packages.txt"
  # shellcheck disable=SC2016  # dpkg-query's format, not shell
  chroot "$R" dpkg-query -W -f='${Package} ${Version}\n' | sort > "$B/packages.txt"
  kver=$(cat "$B/kernel-version")
  awk '{print "[127.0.0.1]:PORT " $1 " " $2}' "$KEYS/ssh_host_ed25519_key.pub" > "$B/known_hosts.template"
  # the docker variant starts from this rootfs (tar keeps owners, modes, xattrs such as ping's
  # capability; ~250 MB)
  if [ "$suite" = bookworm ]; then
    tar --xattrs --xattrs-include='*' --numeric-owner -C "$R" -cf - . | zstd -q -T0 -3 -o "$B/rootfs.tar.zst"
  fi
  local t2; t2=$(date +%s); echo "configure: $((t2 - T_DEBOOTSTRAP))s"

  # ---- raw ext4 image populated from the directory: no loop mount ----
  mke2fs -q -t ext4 -L root -E root_owner=0:0 -d "$R" "$B/disk.img" "$size"
  local t3; t3=$(date +%s); echo "mke2fs -d: $((t3 - t2))s"
  [ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf --one-file-system "$R"
  printf 'suite=%s\nkernel=%s\nrecipe_hash=%s\nmirror=%s\ndebootstrap_s=%s\nconfigure_s=%s\nmke2fs_s=%s\ntotal_s=%s\nbuilt=%s\n' \
    "$suite" "$kver" "$HASH" "$MIRROR" "$((T_DEBOOTSTRAP - T_START))" "$((t2 - T_DEBOOTSTRAP))" \
    "$((t3 - t2))" "$((t3 - T_START))" "$(date -u +%FT%TZ)" > "$B/build-info"
}

ensure() {  # $1 suite, $2 its cache dir: build unless complete (one builder per suite: flock)
  local suite=$1 cache=$2 tmp old
  mkdir -p "$CROOT"
  exec 9>"$CROOT/.lock-$suite"
  flock 9
  if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$cache/.complete" ]; then
    echo "building $suite image into $cache (recipe $HASH)"
    tmp=$cache.tmp.$$
    rm -rf --one-file-system "$tmp" "$cache"
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf --one-file-system '$tmp'" EXIT
    build "$suite" "$tmp"
    touch "$tmp/.complete"
    mv "$tmp" "$cache"
    trap - EXIT
    # images (and their snapshots) from older recipes of this suite are dead weight (~0.8 GB each)
    if [ "${KEEP_OLD:-0}" != 1 ]; then
      for old in "$CROOT/$suite"-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]; do
        [ -d "$old" ] && [ "$old" != "$cache" ] && { echo "removing old image $old"; rm -rf --one-file-system "$old"; }
      done
    fi
  else
    echo "reusing cached $suite image $cache (recipe $HASH)"
  fi
  exec 9>&-
}

[ "$SUITE" = sid ] && [ -z "${CONNTUNE_VM_CACHE:-}" ] && resolve_sid
CACHE=$(cache_dir "$SUITE")
[ "$SUITE" = docker-bookworm ] && ensure bookworm "$(cache_dir bookworm)"
ensure "$SUITE" "$CACHE"

# OUTDIR: every file written beside and renamed into place (two callers may fill one OUTDIR)
mkdir -p "$OUT"
for f in disk.img vmlinuz initrd.img; do ln -sfn "$CACHE/$f" "$OUT/.$f.$$"; mv -Tf "$OUT/.$f.$$" "$OUT/$f"; done
install -m 600 "$KEYS/id_ed25519" "$OUT/.id_ed25519.$$"; mv -f "$OUT/.id_ed25519.$$" "$OUT/id_ed25519"
install -m 644 "$KEYS/id_ed25519.pub" "$OUT/.id_ed25519.pub.$$"; mv -f "$OUT/.id_ed25519.pub.$$" "$OUT/id_ed25519.pub"
cp "$CACHE/known_hosts.template" "$OUT/.known_hosts.template.$$"
mv -f "$OUT/.known_hosts.template.$$" "$OUT/known_hosts.template"
printf 'SUITE=%s\nKERNEL=%s\nRECIPE_HASH=%s\nCACHE=%s\n' "$SUITE" "$(cat "$CACHE/kernel-version")" "$HASH" "$CACHE" \
  > "$OUT/.image.env.$$"
mv -f "$OUT/.image.env.$$" "$OUT/image.env"
echo "$SUITE image: kernel $(cat "$CACHE/kernel-version")"
cat "$OUT/image.env"
