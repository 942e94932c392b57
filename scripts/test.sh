#!/usr/bin/env bash
# Set up and run conntune's whole test suite on a Debian 12 machine. It needs root (Docker,
# qemu, apt): run as root it goes on; run as a user it runs itself again through sudo.
#   0. the Debian tools the unit tests call (shellcheck, dash, busybox)
#   1. a virtualenv with conntune and its test extra (pip install -e '.[test]')
#   2. the Debian VM images for the real-kernel tier (scripts/vm-env.sh), built in the background
#      from here on (cold: 10-17 min on 2 cores; cached by recipe hash: seconds)
#   3. the Docker test hosts (scripts/test-env.sh: engine if none answers, images, compose)
#   4. pytest over every tier: unit, docker, local, prometheus, then vm (tests/conftest.py puts
#      the VM tests last; each waits for its image, which vm-env.sh or prepare.sh holds locked)
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not vm"` for the fast tiers).
# Env: CONNTUNE_VENV (default .venv in the checkout), PYTHON (default python3).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "scripts/test.sh: run it as root (no sudo here)" >&2; exit 1; }
  exec sudo --preserve-env=CI,CONNTUNE_VENV,PYTHON "$0" "$@"
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CONNTUNE_VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}
t0=$(date +%s)
stamp() { printf '[test.sh %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

tools=()
for t in shellcheck:shellcheck dash:dash busybox:busybox promtool:prometheus prometheus:prometheus prometheus-node-exporter:prometheus-node-exporter; do
  command -v "${t%%:*}" >/dev/null 2>&1 || tools+=("${t#*:}")
done
if [ ${#tools[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tools[@]}" >/dev/null
fi
stamp "unit-test tools ready"

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[test]" 2>&1 \
  | grep -v -e 'is ignored' -e '^$' || true
stamp "python environment ready ($("$VENV/bin/python" --version))"

vm_env=
if [ -f "$REPO/scripts/vm-env.sh" ]; then
  bash "$REPO/scripts/vm-env.sh" --packages  # apt-get here, not beside test-env.sh's
  vm_log=${CONNTUNE_VM_WORK:-/var/tmp/conntune-vm}/logs/vm-env.log
  mkdir -p "$(dirname "$vm_log")"
  bash "$REPO/scripts/vm-env.sh" > "$vm_log" 2>&1 &
  vm_env=$!
  stamp "VM images and snapshots: building in the background (log: $vm_log)"
fi

bash "$REPO/scripts/test-env.sh" up
stamp "docker test hosts ready"

cd "$REPO"
rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests || rc=$?
stamp "pytest exit status $rc"
if [ -n "$vm_env" ]; then
  vm_rc=0
  wait "$vm_env" || vm_rc=$?
  if [ "$vm_rc" != 0 ]; then
    echo "scripts/vm-env.sh failed (exit $vm_rc); the end of $vm_log:" >&2
    tail -n 30 "$vm_log" >&2
    [ "$rc" != 0 ] || rc=$vm_rc
  else
    sed 's/^/  /' "$vm_log"  # what was built or reused, with timings
  fi
fi
exit "$rc"
