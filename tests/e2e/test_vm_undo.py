"""
Undo on a real kernel: apply, reboot, `conntune revert`, reboot: the host is as it was before
conntune (every conntrack sysctl, the hash size, the qdiscs, the loaded modules and /etc).
"""

from __future__ import annotations

import subprocess
import sys

from conntune import paths
from tests.e2e.helpers import root_qdisc, snapshot


def test_apply_reboot_revert_reboot_restores_the_host(vm_lab, tmp_path):
    vm = vm_lab.start("bookworm-1g", "bw-undo")
    try:
        before = snapshot(vm)
        inventory = vm_lab.inventory([vm], tmp_path / "inventory.py")
        applied = vm_lab.pyinfra(inventory, "deploy.py", "-y")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        vm.reboot()
        assert root_qdisc(vm)["kind"] == "cake"
        revert = subprocess.run(
            [sys.executable, "-m", "conntune.cli", "revert", str(inventory)],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert revert.returncode == 0, revert.stdout + revert.stderr
        assert "bw-undo: reverted" in revert.stdout
        assert root_qdisc(vm)["kind"] == "fq_codel"  # the kernel default again, live
        for path in paths.OWNED_FILES:
            assert vm.ssh(f"test -e {path}", check=False).returncode != 0, path
        vm.reboot()
        assert snapshot(vm) == before
    finally:
        vm.kill()
