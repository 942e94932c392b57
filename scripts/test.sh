#!/usr/bin/env bash
# Set up and run conntune's whole test suite on a Debian 12 machine. It needs root (Docker,
# qemu, apt): run as root it goes on; run as a user it runs itself again through sudo.
#   0. the Debian tools the unit tests call (shellcheck, dash, busybox)
#   1. a virtualenv with conntune and its test extra (pip install -e '.[test]')
#   2. the Docker test hosts (scripts/test-env.sh: engine if none answers, images, compose)
#   3. the Debian VM images for the real-kernel tier (scripts/vm-env.sh), when present
#   4. pytest over every tier: unit, docker, vm
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

bash "$REPO/scripts/test-env.sh" up
stamp "docker test hosts ready"
if [ -f "$REPO/scripts/vm-env.sh" ]; then
  bash "$REPO/scripts/vm-env.sh"
  stamp "VM images ready"
fi

cd "$REPO"
rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@" tests || rc=$?
stamp "pytest exit status $rc"
exit "$rc"
