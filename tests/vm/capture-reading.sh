#!/bin/bash
# Capture one whole conntune host reading from a freshly restored test VM, run exactly as the
# deploy runs it: `sh -s < facts/reading.sh` as root over SSH. The VM is thrown away afterwards.
# Usage: W=OUTDIR SNAPDIR=CACHE/snap capture-reading.sh SNAP OUTFILE [SETUP]
#   SNAP   a booted snapshot of that image (prepare.sh prints W=, SNAPDIR=, SNAP=)
#   SETUP  optional shell command run in the guest first (e.g. start a container)
#   e.g.   eval "$(tests/vm/prepare.sh bullseye /var/tmp/conntune-vm/bullseye 1024)"
#          W=$W SNAPDIR=$SNAPDIR tests/vm/capture-reading.sh "$SNAP" \
#            tests/fixtures/captured/bullseye-5.10/reading.txt
# Env: PORT (default 2399), NAME (default capture-$$)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SNAP=${1:?snapshot}; OUTFILE=${2:?output file}; SETUP=${3:-}
NAME=${NAME:-capture-$$}; PORT=${PORT:-2399}
"$HERE/vm.sh" restore "$NAME" "$PORT" "$SNAP" >&2
# thrown away: killed, not shut down (its overlay is deleted)
trap 'kill "$(cat "${W:?}/run/$NAME/qemu.pid")" 2>/dev/null || true; sleep 1; rm -rf "$W/run/$NAME"' EXIT
# restore leaves the guest busy for a moment; wait until the boot is settled
"$HERE/vm.sh" ssh "$NAME" "$PORT" -- 'timeout 120 systemctl is-system-running --wait >/dev/null 2>&1 || true'
if [ -n "$SETUP" ]; then "$HERE/vm.sh" ssh "$NAME" "$PORT" -- "$SETUP" >&2; fi
mkdir -p "$(dirname "$OUTFILE")"
"$HERE/vm.sh" ssh "$NAME" "$PORT" -- sh -s < "$REPO/facts/reading.sh" > "$OUTFILE"
echo "captured $(wc -l < "$OUTFILE") lines from $("$HERE/vm.sh" ssh "$NAME" "$PORT" -- uname -r) into $OUTFILE" >&2
