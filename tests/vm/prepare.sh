#!/bin/bash
# Cold-path preparation for VM tests: image (built or reused from the cache) + a booted RAM snapshot
# kept next to the cached image, so each test can get a clean, booted VM in ~3-5 s:
#   eval "$(tests/vm/prepare.sh bookworm /tmp/ct-bw 1024)"      # prints W=, SNAPDIR=, SNAP=, KERNEL=
#   W=$W SNAPDIR=$SNAPDIR tests/vm/vm.sh restore NAME PORT "$SNAP"   ...   tests/vm/vm.sh stop NAME
# Usage: prepare.sh SUITE OUTDIR [MEM_MB]
#        Env: NIC_SPEED (baked into the snapshot),
#        SMP (default 2), PREP_PORT (default 2299; the next free one is taken), PREP_WAIT (seconds
#        to wait while other VMs hold the vCPUs vm.sh allows, default 1800)
# The snapshot is named $SNAP_NAME (default booted-<MEM>m-nic<NIC_SPEED|none>-smp<SMP>) and lives in CACHE/snap/ (removed with
# the image when the recipe changes).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=${1:?usage: prepare.sh SUITE OUTDIR [MEM_MB]}; OUT=${2:?outdir}; MEM=${3:-1024}
"$HERE/build-image.sh" "$SUITE" "$OUT" >&2
# the cache dir and kernel of the image just built or reused (for sid, asking build-image.sh
# --cache-dir again would resolve the archive's package set a second time)
CACHE=$(sed -n 's/^CACHE=//p' "$OUT/image.env"); KERNEL=$(sed -n 's/^KERNEL=//p' "$OUT/image.env")
SNAP=${SNAP_NAME:-booted-${MEM}m-nic${NIC_SPEED:-none}-smp${SMP:-2}}
export W=$OUT SNAPDIR=$CACHE/snap
mkdir -p "$SNAPDIR"
exec 9>"$SNAPDIR/.lock-$SNAP"; flock 9
if [ ! -f "$SNAPDIR/$SNAP/params" ] || [ ! -f "$SNAPDIR/$SNAP/state.zst" ]; then
  name=prep-$SUITE-$$ port=${PREP_PORT:-2299} deadline=$(( $(date +%s) + ${PREP_WAIT:-1800} ))
  while :; do  # vm.sh refuses (3) while other VMs hold the vCPUs, (4) when the port is taken
    rc=0; "$HERE/vm.sh" start "$name" "$port" "$MEM" "${SMP:-2}" tcg >&2 || rc=$?
    case $rc in
      0) break ;;
      3) [ "$(date +%s)" -lt "$deadline" ] || exit 3; sleep 5 ;;
      4) port=$((port + 1)) ;;
      *) exit "$rc" ;;
    esac
  done
  # snapshot a settled guest (boot finished: firewalld's ruleset loaded, dockerd up), so a
  # restored VM does not go on booting under the test
  # shellcheck disable=SC2016  # runs in the guest
  "$HERE/vm.sh" ssh "$name" "$port" -- \
    'timeout 300 systemctl is-system-running --wait >/dev/null 2>&1; echo "system: $(systemctl is-system-running)"' >&2 || true
  "$HERE/vm.sh" save "$name" "$SNAP" >&2
  rm -rf "$W/run/$name"
else
  echo "reusing snapshot $SNAPDIR/$SNAP" >&2
fi
printf 'W=%q\nSNAPDIR=%q\nSNAP=%q\nKERNEL=%q\n' "$W" "$SNAPDIR" "$SNAP" "$KERNEL"
