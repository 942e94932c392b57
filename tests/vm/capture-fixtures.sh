#!/bin/bash
# Capture raw command outputs from a running test VM for the parser fixtures.
# Usage: W=WORKDIR capture-fixtures.sh NAME PORT OUTDIR [METADIR]
#   OUTDIR  receives the raw files (tests/fixtures/captured/<distro>-<kernel>/)
#   METADIR receives commands.tsv (file, exit code, command), notes.txt, stderr/ (default $W/run/NAME/capmeta)
# The VM state is changed (cake qdisc on eth0, conntrack table overflowed then restored): use a
# throw-away VM.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
name=$1; port=$2; out=$3; meta=${4:-${W:-/tmp/conntune-vm}/run/$name/capmeta}
V=$HERE/vm.sh
mkdir -p "$out" "$meta"
"$V" ssh "$name" "$port" -- bash -s < "$HERE/capture-guest.sh"
"$V" ssh "$name" "$port" -- tar -C /root/cap -cf - . | tar -xf - -C "$out"
"$V" ssh "$name" "$port" -- tar -C /root/capmeta -cf - . | tar -xf - -C "$meta"
cat "$meta/notes.txt"
