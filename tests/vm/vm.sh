#!/bin/bash
# Start / save / restore / ssh / reboot / stop throw-away Debian test VMs built by build-image.sh
# (qemu, TCG, user-mode net with restrict=on: the guest reaches nothing outside; only host
# 127.0.0.1:PORT -> guest :22 is forwarded). Adapted from the lab's vm.sh.
#
#   vm.sh start   NAME PORT [MEM_MB] [SMP] [ACCEL]  cold boot from a fresh qcow2 overlay over the base
#                                                   image, wait until ssh works, print seconds to SSH
#   vm.sh save    NAME SNAP                         freeze a running VM into $SNAPDIR/SNAP (RAM state +
#                                                   its disk overlay); qemu exits
#   vm.sh restore NAME PORT SNAP                    start a VM from a saved state (fresh overlay on top
#                                                   of the frozen disk), fix the guest clock, print seconds
#   vm.sh wait    NAME PORT                         wait until ssh works again
#   vm.sh reboot  NAME PORT                         reboot guest, wait for ssh, print seconds
#   vm.sh ssh     NAME PORT -- cmd...               run a command in the VM (strict host-key checking
#                                                   against the image's fixed host key)
#   vm.sh known-hosts PORT                          print the known_hosts line for 127.0.0.1:PORT
#   vm.sh stop    NAME                              ACPI poweroff via monitor, kill by PID after 60 s
#
# Env: W        workdir = an OUTDIR of build-image.sh (disk.img vmlinuz initrd.img id_ed25519
#               known_hosts.template); default /tmp/conntune-vm. Per-VM state goes to $W/run/NAME.
#      SNAPDIR  where snapshots live (default $W/snap; e.g. put them next to the cached image).
#      BASE     base disk (default $W/disk.img; raw or .qcow2). Symlinks are resolved, so overlays and
#               snapshots reference the real (cached) image, not the OUTDIR symlink.
#      NIC_SPEED  e.g. 1000 -> virtio-net-pci speed=1000,duplex=$NIC_DUPLEX (default full): the guest
#               then reports it in /sys/class/net/eth0/speed and ethtool. Unset -> speed unknown (-1).
#      TB_SIZE  TCG translation cache MiB (default 256; qemu's 1024 default costs ~1 GiB RSS per VM)
#      BOOT_TIMEOUT (default 300), APPEND_EXTRA (extra kernel args)
#      MAX_VCPUS (default 2): refuse to start when all running qemu-system VMs on this machine
#               together would get more vCPUs than this (the machine has 2 cores; TCG overcommit
#               makes everything slower). ALLOW_OVERCOMMIT=1 skips the check.
set -euo pipefail
W=${W:-/tmp/conntune-vm}
BASE=$(readlink -f "${BASE:-$W/disk.img}")
SNAPDIR=${SNAPDIR:-$W/snap}
TB_SIZE=${TB_SIZE:-256}
HERE=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: see header of $0}

if [ "$cmd" = known-hosts ]; then
  sed "s/PORT/${2:?port}/" "$W/known_hosts.template"; exit 0
fi
name=${2:?name}
D=$W/run/$name

ssh_opts() {  # $1 port
  mkdir -p "$D"
  sed "s/PORT/$1/" "$W/known_hosts.template" > "$D/known_hosts"
  SSHOPTS=(-i "$W/id_ed25519" -o BatchMode=yes -o ConnectTimeout=5 -o IdentitiesOnly=yes
           -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$D/known_hosts" -o GlobalKnownHostsFile=/dev/null
           -o LogLevel=ERROR -o ServerAliveInterval=15 -o ServerAliveCountMax=8 -p "$1")
}
banner() { [ "$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3" 2>/dev/null)" = SSH- ]; }
wait_ssh() {  # $1 port; banner probe first (cheap: qemu accepts TCP before sshd is up), then a real login
  local port=$1 deadline=$(( $(date +%s) + ${BOOT_TIMEOUT:-300} ))
  ssh_opts "$port"
  while :; do
    if banner "$port" && timeout 30 ssh "${SSHOPTS[@]}" root@127.0.0.1 true 2>/dev/null; then
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$(cat "$D/qemu.pid")" 2>/dev/null; then
      echo "VM $name did not come up; see $D/console.log" >&2; return 1
    fi
    sleep 0.5
  done
}
running_vcpus() {  # sum of -smp over all running qemu-system-* processes
  local sum=0 p n
  for p in /proc/[0-9]*; do
    [ -r "$p/cmdline" ] || continue
    n=$( { tr '\0' '\n' < "$p/cmdline"; } 2>/dev/null | awk 'NR==1 && $0 !~ /qemu-system/ {exit} prev=="-smp" {split($0,a,/[,=]/); print a[1]+0; exit} {prev=$0}') || true
    [ -n "$n" ] && sum=$((sum + n))
  done
  echo "$sum"
}
check_vcpus() {  # $1 smp wanted
  [ "${ALLOW_OVERCOMMIT:-0}" = 1 ] && return 0
  local used; used=$(running_vcpus)
  if [ $((used + $1)) -gt "${MAX_VCPUS:-2}" ]; then
    echo "refusing: running VMs already use $used vCPUs, +$1 > MAX_VCPUS=${MAX_VCPUS:-2}" >&2; exit 3
  fi
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
preflight() {  # $1 port $2 smp: fail before anything is created
  port_free "$1" || { echo "port 127.0.0.1:$1 is in use" >&2; exit 4; }
  check_vcpus "$2"
}
# run_qemu DISK PORT MEM SMP ACCEL [extra qemu args...]
run_qemu() {
  local disk=$1 port=$2 mem=$3 smp=$4 accel=$5; shift 5
  local cpu=max nicspeed='' tcgopt=''
  [ "$accel" = kvm ] && cpu=host
  [ "$accel" = tcg ] && [ -n "$TB_SIZE" ] && tcgopt=",tb-size=$TB_SIZE"
  [ -n "${NIC_SPEED:-}" ] && nicspeed=",speed=$NIC_SPEED,duplex=${NIC_DUPLEX:-full}"
  qemu-system-x86_64 -name "$name" -machine q35 -accel "$accel$tcgopt" -cpu $cpu -smp "$smp" -m "$mem" \
    -kernel "$W/vmlinuz" -initrd "$W/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 ${APPEND_EXTRA:-}" \
    -drive file="$disk",if=virtio,format=qcow2,cache=unsafe \
    -netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:"$port"-:22 \
    -device virtio-net-pci,netdev=n0"$nicspeed" \
    -display none -serial file:"$D/console.log" \
    -monitor unix:"$D/monitor.sock",server,nowait \
    -pidfile "$D/qemu.pid" -daemonize "$@"
  echo "$port $mem $smp $accel ${NIC_SPEED:-}" > "$D/params"
}
elapsed() { echo "$(date +%s.%N) - $1" | bc; }

case $cmd in
start)
  port=${3:?port}; mem=${4:-1024}; smp=${5:-1}; accel=${6:-tcg}
  preflight "$port" "$smp"
  rm -rf "$D"; mkdir -p "$D"
  fmt=raw; case $BASE in *.qcow2) fmt=qcow2;; esac
  qemu-img create -q -f qcow2 -b "$BASE" -F $fmt "$D/overlay.qcow2"
  t0=$(date +%s.%N)
  run_qemu "$D/overlay.qcow2" "$port" "$mem" "$smp" "$accel"
  wait_ssh "$port"
  printf '%s boot-to-ssh %.1fs (mem=%s smp=%s accel=%s nic_speed=%s pid=%s)\n' "$name" "$(elapsed "$t0")" \
    "$mem" "$smp" "$accel" "${NIC_SPEED:-unset}" "$(cat "$D/qemu.pid")"
  ;;
save)
  snap=${3:?snap}; S=$SNAPDIR/$snap
  rm -rf "$S"; mkdir -p "$S"
  ssh_opts "$(cut -d' ' -f1 "$D/params")"
  t0=$(date +%s.%N)
  ssh "${SSHOPTS[@]}" root@127.0.0.1 'sync; echo 3 > /proc/sys/vm/drop_caches'
  pid=$(cat "$D/qemu.pid")
  python3 "$HERE/qmon.py" "$D/monitor.sock" stop "migrate \"exec:zstd -q -1 -T0 > $S/state.zst\"" WAITMIGRATE quit >/dev/null
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  mv "$D/overlay.qcow2" "$S/disk.qcow2"; cp "$D/params" "$S/params"
  printf '%s saved to %s in %.1fs (%s)\n' "$name" "$S" "$(elapsed "$t0")" "$(du -sh "$S" | cut -f1)"
  ;;
restore)
  port=${3:?port}; snap=${4:?snap}; S=$SNAPDIR/$snap
  read -r _ mem smp accel nicspeed < "$S/params"
  NIC_SPEED=$nicspeed
  preflight "$port" "$smp"
  rm -rf "$D"; mkdir -p "$D"
  qemu-img create -q -f qcow2 -b "$S/disk.qcow2" -F qcow2 "$D/overlay.qcow2"
  t0=$(date +%s.%N)
  run_qemu "$D/overlay.qcow2" "$port" "$mem" "$smp" "$accel" -incoming "exec:zstd -q -dc $S/state.zst"
  # the state was saved while paused ('stop' before 'migrate'), so the VM comes back paused: resume it
  python3 "$HERE/qmon.py" "$D/monitor.sock" WAITMIGRATE cont >/dev/null
  wait_ssh "$port"
  # RAM state is from save time: the guest clock is behind by the age of the snapshot
  ssh "${SSHOPTS[@]}" root@127.0.0.1 "date -s @$(date +%s) >/dev/null"
  printf '%s restore-to-ssh %.1fs (snap=%s pid=%s)\n' "$name" "$(elapsed "$t0")" "$snap" "$(cat "$D/qemu.pid")"
  ;;
wait)
  wait_ssh "${3:?port}"
  ;;
reboot)
  port=${3:?port}; ssh_opts "$port"
  t0=$(date +%s.%N)
  ssh "${SSHOPTS[@]}" root@127.0.0.1 'systemctl reboot' || true
  # wait for sshd to go away so we do not catch the old instance
  for _ in $(seq 1 120); do banner "$port" || break; sleep 0.5; done
  wait_ssh "$port"
  printf '%s reboot-to-ssh %.1fs\n' "$name" "$(elapsed "$t0")"
  ;;
ssh)
  port=${3:?port}; shift 3; [ "${1:-}" = -- ] && shift
  ssh_opts "$port"
  exec ssh "${SSHOPTS[@]}" root@127.0.0.1 "$@"
  ;;
stop)
  [ -f "$D/qemu.pid" ] || exit 0
  pid=$(cat "$D/qemu.pid")
  kill -0 "$pid" 2>/dev/null || exit 0
  python3 "$HERE/qmon.py" "$D/monitor.sock" system_powerdown >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then echo "forcing kill $pid"; kill "$pid"; fi
  rm -f "$D/overlay.qcow2"
  ;;
*)
  echo "unknown command: $cmd" >&2; exit 2
  ;;
esac
