#!/usr/bin/env bash
# Build (or reuse) the Debian test VM images and their booted RAM snapshots for the -m vm tier.
# Images and snapshots are cached in /var/cache/conntune/vm, keyed by the recipe hash
# (tests/vm/build-image.sh): an unchanged recipe costs nothing here.
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
WORK=${CONNTUNE_VM_WORK:-/var/tmp/conntune-vm}
"$PY" "$REPO/tests/e2e/vmspecs.py" | while read -r name suite mem nic smp snap; do
  t0=$(date +%s); [ "$nic" = none ] && nic=
  NIC_SPEED=$nic SMP=$smp SNAP_NAME=$snap "$REPO/tests/vm/prepare.sh" "$suite" "$WORK/$suite" "$mem" >/dev/null </dev/null
  echo "[vm-env] $name ($suite, ${mem} MiB, nic ${nic:-unknown}, smp $smp): ready in $(( $(date +%s) - t0 ))s"
done
