#!/bin/bash
# Cold-path preparation for VM tests: image (built or reused from the cache) + a booted RAM snapshot
# kept next to the cached image, so each test can get a clean, booted VM in ~3-5 s:
#   eval "$(tests/vm/prepare.sh bookworm /tmp/ct-bw 1024)"      # prints W=, SNAPDIR=, SNAP=
#   W=$W SNAPDIR=$SNAPDIR tests/vm/vm.sh restore NAME PORT "$SNAP"   ...   tests/vm/vm.sh stop NAME
# Usage: prepare.sh SUITE OUTDIR [MEM_MB]       Env: NIC_SPEED (baked into the snapshot),
#        SMP (default 2, only the one preparing VM runs), PREP_PORT (default 2299)
# The snapshot is named booted-<MEM>m-nic<NIC_SPEED|none> and lives in CACHE/snap/ (removed with
# the image when the recipe changes).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=${1:?usage: prepare.sh SUITE OUTDIR [MEM_MB]}; OUT=${2:?outdir}; MEM=${3:-1024}
"$HERE/build-image.sh" "$SUITE" "$OUT" >&2
CACHE=$("$HERE/build-image.sh" --cache-dir "$SUITE")
SNAP=${SNAP_NAME:-booted-${MEM}m-nic${NIC_SPEED:-none}-smp${SMP:-2}}
export W=$OUT SNAPDIR=$CACHE/snap
mkdir -p "$SNAPDIR"
exec 9>"$SNAPDIR/.lock-$SNAP"; flock 9
if [ ! -f "$SNAPDIR/$SNAP/params" ] || [ ! -f "$SNAPDIR/$SNAP/state.zst" ]; then
  name=prep-$SUITE-$$
  "$HERE/vm.sh" start "$name" "${PREP_PORT:-2299}" "$MEM" "${SMP:-2}" tcg >&2
  "$HERE/vm.sh" save "$name" "$SNAP" >&2
  rm -rf "$W/run/$name"
else
  echo "reusing snapshot $SNAPDIR/$SNAP" >&2
fi
printf 'W=%q\nSNAPDIR=%q\nSNAP=%q\n' "$W" "$SNAPDIR" "$SNAP"
