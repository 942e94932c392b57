"""
A two-VM fleet on Debian 12 (kernel 6.1), 1 GiB and 3 GiB, 1 GbE NICs, firewalld running:
dry run, apply, idempotence, firewalld, drift, a live resize under traffic, the blog's recipe.
The tests run in order on the same two VMs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conntune import paths, profiles
from tests.e2e.helpers import (
    expected_max,
    firewalld_start,
    hashsize,
    mem_total_bytes,
    root_qdisc,
    snapshot,
    stat_totals,
    sysctl,
)
from tests.pyinfra_output import changes_of, commands_per_host

MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"
COUNT = "net.netfilter.nf_conntrack_count"
EST = f"{profiles.P}tcp_timeout_established"


@pytest.fixture(scope="module")
def fleet(vm_lab, tmp_path_factory):
    small = vm_lab.start("bookworm-1g", "bw-small")
    large = vm_lab.start("bookworm-3g", "bw-large")
    inventory = vm_lab.inventory([small, large], tmp_path_factory.mktemp("inv") / "inventory.py")
    yield vm_lab, inventory, small, large
    small.kill()
    large.kill()


def out(result) -> str:
    return result.stdout + result.stderr


def test_dry_run_lists_every_change_and_changes_nothing(fleet):
    lab, inventory, small, large = fleet
    before = {vm.name: snapshot(vm) for vm in (small, large)}
    result = lab.pyinfra(inventory, "deploy.py", "--dry", "--diff")
    text = out(result)
    assert result.returncode == 0, text
    for vm in (small, large):
        lines = changes_of(text, vm.name)
        live_max = sysctl(vm, MAX)
        want = expected_max(mem_total_bytes(vm))
        assert f"{MAX}: {live_max} → {want}" in lines, text
        assert f"nf_conntrack hashsize: {hashsize(vm)} → {want}" in lines
        assert f"{EST}: 432000 → 86400" in lines
        assert "qdisc root dev eth0: fq_codel → cake 1gbit besteffort" in lines
        for path in (
            paths.SYSCTL_FILE,
            paths.MODPROBE_FILE,
            paths.MODULES_LOAD_FILE,
            paths.CAKE_UNIT_FILE,
        ):
            assert f"[{vm.name}]   create {path}" in text
        assert snapshot(vm) == before[vm.name]


def test_a_dry_run_fails_the_host_whose_firewalld_config_would_not_restart(fleet):
    lab, inventory, small, large = fleet
    bad = "/etc/firewalld/zones/conntune-test-bad.xml"
    small.ssh(f"printf '<zone><broken>' > {bad}")
    try:
        before = {vm.name: snapshot(vm) for vm in (small, large)}
        result = lab.pyinfra(inventory, "deploy.py", "--dry", "--diff")
        text = out(result)
        assert result.returncode == 1, text  # as the run would: it sets the values, then fails
        assert (
            f"[bw-small] conntune: firewalld will not be restarted ({paths.MODPROBE_FILE} "
            "changes): `firewall-cmd --check-config` fails (Error: PARSE_ERROR: " in text
        ), text
        assert "[bw-large] conntune: firewalld will not be restarted" not in text
        for vm in (small, large):  # both hosts' changes are still shown
            assert any(line.startswith(f"{MAX}: ") for line in changes_of(text, vm.name)), text
            assert snapshot(vm) == before[vm.name]
    finally:
        small.ssh(f"rm -f {bad}")


def test_apply_sizes_each_vm_by_its_ram(fleet):
    lab, inventory, small, large = fleet
    fw_before = {vm.name: firewalld_start(vm) for vm in (small, large)}
    result = lab.pyinfra(inventory, "deploy.py", "-y", "--debug")
    assert result.returncode == 0, out(result)
    # a first apply: read, firewalld config check, live values, files, CAKE, firewalld restart
    # with the reading that verifies it
    assert commands_per_host(out(result)) == {"bw-small": 6, "bw-large": 6}
    wanted = {}
    for vm in (small, large):
        want = expected_max(mem_total_bytes(vm))
        wanted[vm.name] = want
        assert sysctl(vm, MAX) == want
        assert sysctl(vm, BUCKETS) == want
        assert hashsize(vm) == want
        for key, seconds in profiles.SERVER.items():
            assert sysctl(vm, key) == seconds, key
        qdisc = root_qdisc(vm)
        assert qdisc["kind"] == "cake"
        assert qdisc["options"]["bandwidth"] == 125_000_000  # 1 Gbit/s in bytes/s
        assert qdisc["options"]["diffserv"] == "besteffort"
        # firewalld was restarted (the module options file changed) and the values held
        assert firewalld_start(vm) != fw_before[vm.name]
        assert "ActiveState=active" in firewalld_start(vm)
    assert wanted["bw-small"] < wanted["bw-large"]


def test_second_run_changes_nothing_and_restarts_nothing(fleet):
    lab, inventory, small, large = fleet
    before = {vm.name: (snapshot(vm), firewalld_start(vm)) for vm in (small, large)}
    result = lab.pyinfra(inventory, "deploy.py", "-y", "--debug")
    text = out(result)
    assert result.returncode == 0, text
    assert "Restart firewalld" not in text.split("--> Results:")[-1]
    assert commands_per_host(text) == {"bw-small": 1, "bw-large": 1}
    assert {vm.name: (snapshot(vm), firewalld_start(vm)) for vm in (small, large)} == before


def test_drift_is_reported_exactly_and_repaired(fleet):
    lab, inventory, small, large = fleet
    small.ssh("sysctl -q -w net.netfilter.nf_conntrack_udp_timeout=77")
    large.ssh("tc qdisc del dev eth0 root")
    fw_before = {vm.name: firewalld_start(vm) for vm in (small, large)}
    dry = lab.pyinfra(inventory, "deploy.py", "--dry", "--diff")
    assert changes_of(out(dry), "bw-small") == [f"{profiles.P}udp_timeout: 77 → 10"]
    assert changes_of(out(dry), "bw-large") == [
        "qdisc root dev eth0: fq_codel → cake 1gbit besteffort"
    ]
    assert sysctl(small, f"{profiles.P}udp_timeout") == 77
    result = lab.pyinfra(inventory, "deploy.py", "-y")
    assert result.returncode == 0, out(result)
    assert sysctl(small, f"{profiles.P}udp_timeout") == 10
    assert root_qdisc(large)["kind"] == "cake"
    assert {vm.name: firewalld_start(vm) for vm in (small, large)} == fw_before  # no file changed


HOLD_CONNECTIONS = r"""
import socket, sys, time
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 5555)); server.listen(4096)
held = []
for _ in range(int(sys.argv[1])):
    held.append(socket.create_connection(("127.0.0.1", 5555)))
    held.append(server.accept()[0])
open("/run/holding", "w").write("ok")
time.sleep(600)
"""


def test_live_resize_under_traffic_keeps_entries(fleet, tmp_path):
    lab, _, small, _ = fleet
    small.ssh(f"cat > /root/hold.py <<'EOF'\n{HOLD_CONNECTIONS}\nEOF")
    small.ssh("rm -f /run/holding; nohup python3 /root/hold.py 400 >/dev/null 2>&1 &")
    for _ in range(120):
        if small.ssh("test -f /run/holding", check=False).returncode == 0:
            break
        time.sleep(0.5)
    count_before = sysctl(small, COUNT)
    drops_before = stat_totals(small)["drop"]
    assert count_before >= 400
    old_max = sysctl(small, MAX)
    new_max = old_max * 2  # x4 would exceed the 5 % memory budget of this 1 GiB VM
    only_small = lab.inventory([small], tmp_path / "small.py", conntrack_max=new_max)
    result = lab.pyinfra(only_small, "deploy.py", "-y")
    assert result.returncode == 0, out(result)
    assert sysctl(small, MAX) == new_max and hashsize(small) == new_max
    count_after = sysctl(small, COUNT)
    assert count_after >= 400, (count_before, count_after)  # the table kept its entries
    assert stat_totals(small)["drop"] == drops_before
    small.ssh("pkill -f /root/hold.py", check=False)


def test_blog_recipe_applies_and_plan_explains(fleet, tmp_path):
    lab, _, _, large = fleet
    blog = lab.inventory(
        [large],
        tmp_path / "blog.py",
        conntrack_timeout_profile="routeros",
        conntrack_hashsize_ratio=4,
        cake_bandwidth="1024mbit",
    )
    result = lab.pyinfra(blog, "deploy.py", "-y")
    text = out(result)
    assert result.returncode == 0, text
    assert "above the link speed of eth0 (1000 Mbit/s)" in text
    max_now = sysctl(large, MAX)
    assert hashsize(large) == max_now // 4
    for key, seconds in profiles.ROUTEROS.items():
        assert sysctl(large, key) == seconds, key
    assert root_qdisc(large)["options"]["bandwidth"] == 128_000_000  # 1024 Mbit/s in bytes/s
    plan = subprocess.run(
        [sys.executable, "-m", "conntune.cli", "plan", "--mem", str(mem_total_bytes(large)),
         "--link-speed", "1000", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    instead = json.loads(plan.stdout)
    assert instead["buckets"] == instead["conntrack_max"]  # not max/4
    assert instead["cake"]["bandwidth_mbit"] == 1000  # not 1024
    assert instead["timeouts"][f"{profiles.P}tcp_timeout_syn_sent"] == 120  # not 5
