"""
Reboot persistence on real kernels: after a conntune apply and a reboot with no conntune run,
every live value and the CAKE qdisc are back. Debian 12 with firewalld enabled and disabled
(without firewalld nothing else loads nf_conntrack at boot: modules-load.d must), and Debian 13
(kernel 6.12) with a NIC that reports no speed (the table is sized without CAKE, which
waits for cake_bandwidth), then CAKE with every option away from its default.
"""

from __future__ import annotations

import json

import pytest

from conntune import paths, profiles
from tests.e2e.helpers import (
    expected_max,
    hashsize,
    mem_total_bytes,
    root_qdisc,
    sysctl,
)

MAX = "net.netfilter.nf_conntrack_max"


def out(result) -> str:
    return result.stdout + result.stderr


def assert_converged(vm, conntrack_max: int, bandwidth_bytes: int, diffserv: str) -> None:
    assert sysctl(vm, MAX) == conntrack_max
    assert hashsize(vm) == conntrack_max
    assert sysctl(vm, "net.netfilter.nf_conntrack_buckets") == conntrack_max
    for key, seconds in profiles.SERVER.items():
        assert sysctl(vm, key) == seconds, key
    qdisc = root_qdisc(vm)
    assert qdisc["kind"] == "cake", qdisc
    assert qdisc["options"]["bandwidth"] == bandwidth_bytes
    assert qdisc["options"]["diffserv"] == diffserv


SHAPED = {
    "cake_bandwidth": "100mbit",
    "cake_diffserv": "diffserv4",
    "cake_overhead": "pppoe-ptm",
    "cake_mpu": 72,
    "cake_rtt": "regional",
    "cake_nat": True,
    "cake_wash": True,
    "cake_ack_filter": "aggressive",
    "cake_flow_isolation": "dual-srchost",
    "cake_split_gso": False,
}


def assert_options(qdisc: dict) -> None:
    """SHAPED as the kernel reports it (tc/q_cake.c, cake_print_opt)."""
    options = qdisc["options"]
    assert options["flowmode"] == "dual-srchost" and options["nat"] is True, options
    assert options["wash"] is True and options["ack-filter"] == "aggressive", options
    assert options["split_gso"] is False and options["rtt"] == 30_000, options
    assert options["raw"] is False and options["atm"] == "ptm", options
    assert options["overhead"] == 30 and options["mpu"] == 72, options


@pytest.mark.parametrize("firewalld", ["enabled", "disabled"])
def test_bookworm_values_survive_reboot(vm_lab, tmp_path, firewalld):
    vm = vm_lab.start("bookworm-1g", f"bw-reboot-{firewalld}")
    try:
        if firewalld == "disabled":
            vm.ssh("systemctl disable --now firewalld")
        inventory = vm_lab.inventory([vm], tmp_path / "inventory.py")
        result = vm_lab.pyinfra(inventory, "deploy.py", "-y")
        assert result.returncode == 0, out(result)
        # after the reboot, max == hashsize proves sysctl.d applied: from the modprobe option
        # alone the kernel would set max = 8 x hashsize at load (vm.md)
        want = expected_max(mem_total_bytes(vm))
        assert_converged(vm, want, 125_000_000, "besteffort")
        vm.reboot()
        assert vm.ssh("systemctl is-active firewalld", check=False).stdout.strip() == (
            "active" if firewalld == "enabled" else "inactive"
        )
        assert_converged(vm, want, 125_000_000, "besteffort")
        assert vm.ssh(f"systemctl is-active {paths.CAKE_UNIT}").stdout.strip() == "active"
        # and conntune agrees: nothing to do after the reboot
        again = vm_lab.pyinfra(inventory, "deploy.py", "--dry", "--diff")
        assert "→" not in out(again), out(again)
    finally:
        vm.kill()


def test_trixie_unknown_speed_then_apply_and_reboot(vm_lab, tmp_path):
    vm = vm_lab.start("trixie", "trixie")
    try:
        assert vm.ssh("uname -r").stdout.startswith("6.12")
        bare = vm_lab.inventory([vm], tmp_path / "bare.py")
        qdisc_before = root_qdisc(vm)
        sized = vm_lab.pyinfra(bare, "deploy.py", "-y")
        text = out(sized)
        # virtio-unknown-speed: the table and timeouts are set, CAKE alone waits for a rate
        assert sized.returncode == 0, text
        assert "[trixie] conntune: CAKE skipped: the link speed of eth0 is unknown" in text
        assert "set cake_bandwidth" in text
        assert sysctl(vm, MAX) == expected_max(mem_total_bytes(vm))
        assert root_qdisc(vm)["kind"] == qdisc_before["kind"] != "cake"

        # every CAKE option away from its default: each one live in tc -j, and after a reboot
        shaped = vm_lab.inventory([vm], tmp_path / "shaped.py", **SHAPED)
        result = vm_lab.pyinfra(shaped, "deploy.py", "-y")
        assert result.returncode == 0, out(result)
        want = expected_max(mem_total_bytes(vm))
        assert_converged(vm, want, 12_500_000, "diffserv4")
        assert_options(root_qdisc(vm))
        print(f"\ntrixie CAKE with every option (tc -j): {json.dumps(root_qdisc(vm))}")
        vm.reboot()
        assert_converged(vm, want, 12_500_000, "diffserv4")
        assert_options(root_qdisc(vm))
        again = vm_lab.pyinfra(shaped, "deploy.py", "--dry", "--diff")
        assert again.returncode == 0 and "→" not in out(again), out(again)
    finally:
        vm.kill()
