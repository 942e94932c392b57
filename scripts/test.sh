#!/usr/bin/env bash
# Set up and run conntune's whole test suite on a Debian 12 machine, as root:
#   1. a virtualenv with conntune and its test extra (pip install -e '.[test]')
#   2. the Docker test hosts (scripts/test-env.sh: engine if none answers, images, compose)
#   3. the Debian VM images for the real-kernel tier (scripts/vm-env.sh), when present
#   4. pytest over every tier: unit, docker, vm
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not vm"` for the fast tiers).
# Env: CONNTUNE_VENV (default .venv in the checkout), PYTHON (default python3).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CONNTUNE_VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}
t0=$(date +%s)
stamp() { printf '[test.sh %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[test]" 2>&1 \
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
