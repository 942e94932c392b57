#!/usr/bin/env bash
# Build (or reuse) the Debian test VM images and their booted RAM snapshots for the -m vm tier.
# Images and snapshots are cached in /var/cache/conntune/vm, keyed by the recipe hash
# (tests/vm/build-image.sh; sid also by the package versions the archive serves): an unchanged
# recipe costs nothing here (sid: ~5 s to ask the archive).
# Cold, the images are built one after the other in the background while the snapshots of the
# images already built boot next to them (1-vCPU VMs; vm.sh never runs more than 2 vCPUs in all).
# Logs: $CONNTUNE_VM_WORK/logs/ (build-SUITE.log, prepare-SPEC.log).
# Usage: scripts/vm-env.sh [--packages]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${CONNTUNE_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export DEBIAN_FRONTEND=noninteractive
need=()
for c in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap \
         mke2fs:e2fsprogs zstd:zstd bc:bc ssh:openssh-client flock:util-linux; do
  command -v "${c%%:*}" >/dev/null 2>&1 || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# --packages: only the host packages above (scripts/test.sh installs them first, then builds the
# images in the background while other apt-get calls run)
[ "${1:-}" = --packages ] && exit 0
WORK=${CONNTUNE_VM_WORK:-/var/tmp/conntune-vm}
LOGS=$WORK/logs
mkdir -p "$LOGS"
SPECS=$("$PY" "$REPO/tests/e2e/vmspecs.py")
T0=$(date +%s)
say() { printf '[vm-env %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

# the images, in the order the specs need them
build_all() {
  local suite t0 log
  while read -r suite; do
    t0=$(date +%s); log=$LOGS/build-$suite.log
    # its own OUTDIR: prepare.sh fills $WORK/SUITE
    if "$REPO/tests/vm/build-image.sh" "$suite" "$WORK/.build/$suite" > "$log" 2>&1 </dev/null; then
      say "image $suite: $(sed -n 's/^KERNEL=/kernel /p' "$WORK/.build/$suite/image.env"), $(grep -oE "^(building|reusing cached) $suite image" "$log" | cut -d' ' -f1) in $(( $(date +%s) - t0 ))s"
    else
      say "image $suite: FAILED, see $log"; tail -n 20 "$log" >&2; return 1
    fi
  done < <(awk '!seen[$2]++ {print $2}' <<< "$SPECS")
}
build_all & builder=$!

# the snapshots: prepare.sh waits for an image the builder holds (flock), or builds it itself
while read -r name suite mem nic smp snap; do
  t0=$(date +%s); [ "$nic" = none ] && nic=; log=$LOGS/prepare-$name.log
  if ! NIC_SPEED=$nic SMP=$smp SNAP_NAME=$snap "$REPO/tests/vm/prepare.sh" "$suite" "$WORK/$suite" "$mem" \
       > "$log.env" 2> "$log" </dev/null; then
    say "$name: FAILED, see $log"; tail -n 20 "$log" >&2; kill "$builder" 2>/dev/null || true; exit 1
  fi
  say "$name ($suite, $(sed -n 's/^KERNEL=/kernel /p' "$log.env"), ${mem} MiB, nic ${nic:-unknown}, smp $smp): ready in $(( $(date +%s) - t0 ))s ($(grep -m1 -oE 'boot-to-ssh [0-9.]+s|reusing snapshot' "$log" || true))"
done <<< "$SPECS"
wait "$builder"
say "all VM images and snapshots ready"
