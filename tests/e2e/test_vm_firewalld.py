"""
firewalld that unloads nf_conntrack on restart, on real kernels: Debian 11's firewalld 0.9.3
(before 1.0) and Debian 12's 1.3.3 with CleanupModulesOnExit=yes. A restart there flushes every
tracked connection and puts the kernel's defaults back. With `on-change` conntune never
restarts it (held connections keep their entries); with `always` it says so beforehand, detects
the flush, and leaves the host at the planned values, never at the kernel's defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conntune import profiles
from tests.e2e.helpers import expected_max, firewalld_start, hashsize, mem_total_bytes, sysctl

VMDIR = Path(__file__).resolve().parents[2] / "tests" / "vm"
MAX = "net.netfilter.nf_conntrack_max"
HELD = 5


def out(result) -> str:
    return result.stdout + result.stderr


def held_entries(vm) -> int:
    """Entries of the idle held connections (holdconn.py on :9000), from procfs."""
    return int(vm.ssh("grep -c 'dport=9000 ' /proc/net/nf_conntrack || true").stdout.strip() or 0)


def wait_for_ruleset(vm) -> None:
    vm.ssh(
        "for i in $(seq 120); do nft list table inet firewalld >/dev/null 2>&1 && "
        "[ -e /proc/sys/net/netfilter/nf_conntrack_max ] && exit 0; sleep 0.5; done; exit 1"
    )


@pytest.fixture(params=["bullseye", "bookworm-cleanup-modules"])
def unloading(request, vm_lab):
    """A VM whose firewalld unloads nf_conntrack on restart, with 5 idle connections held."""
    spec = "bullseye" if request.param == "bullseye" else "bookworm-1g"
    vm = vm_lab.start(spec, f"fw-{request.param}")
    try:
        if request.param != "bullseye":
            vm.ssh("sed -i 's/^CleanupModulesOnExit=.*/CleanupModulesOnExit=yes/' "
                   "/etc/firewalld/firewalld.conf && systemctl restart firewalld")  # fmt: skip
            wait_for_ruleset(vm)
        vm.ssh("cat > /root/holdconn.py", input=(VMDIR / "holdconn.py").read_text())
        vm.ssh(f"bash -s -- hold-start {HELD}", input=(VMDIR / "fwprobe.sh").read_text())
        assert held_entries(vm) >= HELD
        yield request.param, vm
    finally:
        vm.kill()


def test_a_restart_that_flushes_is_never_done_on_change_and_always_leaves_the_plan(
    vm_lab, tmp_path, unloading
):
    kind, vm = unloading
    print(f"\n{kind}: kernel {vm.ssh('uname -r').stdout.strip()}, "
          f"{vm.ssh('firewall-cmd --version').stdout.strip()}")  # fmt: skip
    inventory = vm_lab.inventory([vm], tmp_path / "inventory.py")
    started = firewalld_start(vm)
    entries = held_entries(vm)

    # on-change: the first apply writes files, yet firewalld is not restarted here
    applied = vm_lab.pyinfra(inventory, "deploy.py", "-y", "--diff")
    text = out(applied)
    assert applied.returncode == 0, text
    assert "firewalld: not restarted" in text and "unloads nf_conntrack on restart" in text
    if kind == "bullseye":  # the plan explains the pre-5.15 sizing it found
        assert "4 per bucket when full: the kernel default before 5.15" in text
    assert "Restart firewalld" not in text.split("--> Results:")[-1]
    assert firewalld_start(vm) == started
    assert held_entries(vm) >= entries  # nothing flushed: the held connections keep theirs
    want = expected_max(mem_total_bytes(vm))
    assert sysctl(vm, MAX) == want and hashsize(vm) == want
    udp = f"{profiles.P}udp_timeout"
    assert sysctl(vm, udp) == profiles.SERVER[udp]

    # always: warned beforehand, flushed, detected, and the planned values set again
    always = vm_lab.pyinfra(inventory, "deploy.py", "-y", "--data", "firewalld_restart=always")
    text = out(always)
    assert always.returncode == 0, text
    assert "every tracked connection is flushed" in text  # said before the run
    assert "the firewalld restart flushed the conntrack table (entries" in text
    assert firewalld_start(vm) != started
    wait_for_ruleset(vm)
    assert held_entries(vm) < entries  # really flushed (the entries come back on traffic)
    assert sysctl(vm, MAX) == want  # the plan, not the kernel default
    assert hashsize(vm) == want
    for key, seconds in profiles.SERVER.items():
        assert sysctl(vm, key) == seconds, key
    again = vm_lab.pyinfra(inventory, "deploy.py", "--dry", "--diff")
    assert "→" not in out(again), out(again)
    audit = subprocess.run(
        [sys.executable, "-m", "conntune.cli", "audit", str(inventory), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    row = json.loads(audit.stdout)["hosts"][0]
    assert row["drift_count"] == 0, row["drift"]
    # the held connections go on: nf_conntrack_tcp_loose picks them up mid-stream
    ping = vm.ssh("kill -USR1 $(cat /root/hold.pid); sleep 2; tail -1 /root/hold.log").stdout
    assert f"ok={HELD}" in ping, ping
