"""
conntune on four kernel generations, over real SSH with pyinfra as a user runs it: Debian 11
bullseye (5.10: max = 4 x buckets by default, pfifo_fast, firewalld 0.9 unloads nf_conntrack on
restart), 12 bookworm (6.1), 13 trixie (6.12, NIC speed unknown: cake_bandwidth) and sid (7.x:
cake_mq on a 4-queue veth in the guest).

Every test is one item per suite, but the VMs run two at a time (1 vCPU each, the machine's two
cores): bullseye with sid (both also reboot), bookworm with trixie. Each pair lives for the whole
module, restored from the booted snapshots. Each step (dry run, apply, second apply, undo,
reboot) is one pyinfra run over both VMs, made by the first test item that needs it, which also
records what both VMs show afterwards; each item then checks its own VM's record. A step that
needs the untouched hosts undoes conntune first. The VMs are read back with plain ``sysctl``,
``cat`` and ``tc -j``, never with conntune's parsers.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conntune import paths
from tests.e2e.helpers import (
    expected_max,
    hashsize,
    mem_total_bytes,
    snapshot,
    sysctls,
    take_reading,
)
from tests.pyinfra_output import changes_of, results

MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"


@dataclass(frozen=True)
class Suite:
    spec: str  # tests/e2e/vmspecs.py
    pair: str  # the two VMs that run together
    data: dict = field(default_factory=dict)  # inventory host data
    reboot: bool = False  # reboot persistence here (bookworm and trixie: test_vm_reboot.py)


SUITES = {
    # the NIC reports 1000 Mbit/s: CAKE at the link speed
    "bullseye": Suite("bullseye", "bullseye+sid", reboot=True),
    "bookworm": Suite("bookworm-1g", "bookworm+trixie"),
    # virtio NIC without a speed: CAKE needs a rate
    "trixie": Suite("trixie", "bookworm+trixie", {"cake_bandwidth": "100mbit"}),
    # qemu's user-net NIC has one queue: CAKE on the guest's 4-queue veth v0 at 10gbit (a
    # veth's 10000 Mbit/s is its driver's fixed answer, so the rate is given): above one CAKE
    # instance's reach, so cake_mq, one instance per TX queue
    "sid": Suite(
        "sid", "bullseye+sid", {"cake_interface": "v0", "cake_bandwidth": "10gbit"}, reboot=True
    ),
}

# A veth pair with 4 TX/RX queues in the sid guest, created by a oneshot unit so it is there
# again after a reboot (the CAKE unit is bound to the device). No qemu or image change.
VETH_UNIT = """[Unit]
Description=conntune test: 4-queue veth pair v0/v1 (a cake_mq target)
Before=network.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=ip link add v0 numtxqueues 4 numrxqueues 4 type veth \\
    peer name v1 numtxqueues 4 numrxqueues 4
ExecStart=ip link set v1 up
ExecStart=ip link set v0 up
[Install]
WantedBy=multi-user.target
"""


def out(result) -> str:
    return result.stdout + result.stderr


@dataclass
class Host:
    name: str  # the suite (its VM and inventory name: k-SUITE)
    suite: Suite
    vm: object
    pristine: str  # tests.e2e.helpers.snapshot of the host before conntune
    kernel: str
    applied: bool = False  # the last apply succeeded and nothing changed since


@dataclass
class Pair:
    """Two VMs in one inventory; ``step`` runs a pyinfra step once for both of them."""

    lab: object
    inventory: Path
    hosts: dict[str, Host]
    done: dict[str, object] = field(default_factory=dict)

    def pyinfra(self, *args: str, hosts: list[Host] | None = None):
        every = hosts is None or len(hosts) == len(self.hosts)
        limit = [] if every else [arg for h in hosts for arg in ("--limit", h.vm.name)]
        return self.lab.pyinfra(self.inventory, "deploy.py", *limit, *args)

    def step(self, name: str, run: Callable[[], object]):
        """The step's result, run by the first test item of the pair that needs it."""
        if name not in self.done:
            try:
                self.done[name] = run()
            except Exception as error:  # both items of the pair report it
                self.done[name] = error
        if isinstance(self.done[name], Exception):
            raise self.done[name]
        return self.done[name]

    def apply(self, hosts: list[Host] | None = None) -> str:
        hosts = hosts or list(self.hosts.values())
        for host in hosts:
            host.applied = False
        result = self.pyinfra("-y", hosts=hosts)
        assert result.returncode == 0, out(result)
        for host in hosts:
            host.applied = True
        return out(result)

    def ensure_applied(self) -> None:
        """conntune applied on both (by an earlier step, or now if that one did not get so far)."""
        missing = [host for host in self.hosts.values() if not host.applied]
        if missing:
            self.apply(missing)

    def undo(self, hosts: list[Host]) -> None:
        for host in hosts:
            host.applied = False
        result = self.pyinfra("--data", "conntune_state=absent", "-y", hosts=hosts)
        assert result.returncode == 0, out(result)

    def reset(self) -> dict[str, str]:
        """Both hosts untouched: undo whatever an earlier step left applied. Their snapshots."""
        now = {name: snapshot(h.vm) for name, h in self.hosts.items()}
        dirty = [h for h in self.hosts.values() if not as_before(now[h.name], h.pristine)]
        if dirty:
            self.undo(dirty)
            for host in dirty:
                now[host.name] = snapshot(host.vm)
                assert_as_before(now[host.name], host.pristine)
        return now


def as_before(now: str, before: str) -> bool:
    """
    ``snapshot`` texts equal, except that sch_cake may now be loaded: ``tc qdisc replace ...
    cake`` loaded it and undo does not unload modules (after a reboot it is gone again:
    test_vm_undo.py).
    """
    extra = Counter(now.splitlines()) - Counter(before.splitlines())
    missing = Counter(before.splitlines()) - Counter(now.splitlines())
    return not missing and set(extra) <= {"sch_cake"}


def assert_as_before(now: str, before: str) -> None:
    diff = "\n".join(difflib.unified_diff(before.splitlines(), now.splitlines(), lineterm=""))
    assert as_before(now, before), diff


@pytest.fixture(scope="module")
def pair(request, vm_lab, tmp_path_factory):
    names = request.param.split("+")
    hosts: dict[str, Host] = {}
    try:
        for name in names:
            suite = SUITES[name]
            vm = vm_lab.start(suite.spec, f"k-{name}")
            hosts[name] = Host(name, suite, vm, "", "")
        for host in hosts.values():
            vm = host.vm
            host.kernel = vm.ssh("uname -r").stdout.strip()
            print(f"\n[{host.name}] kernel {host.kernel}, {vm.spec.mem_mb} MiB, 1 vCPU, "
                  f"data {host.suite.data}")  # fmt: skip
            if "cake_interface" in host.suite.data:
                vm.ssh(
                    f"cat > /etc/systemd/system/test-veth.service <<'EOF'\n{VETH_UNIT}EOF\n"
                    "systemctl enable --now test-veth.service 2>&1"
                )
            host.pristine = snapshot(vm)
        inventory = vm_lab.inventory(
            [h.vm for h in hosts.values()],
            tmp_path_factory.mktemp("inv") / "inventory.py",
            per_host={host.vm.name: host.suite.data for host in hosts.values()},
        )
        yield Pair(vm_lab, inventory, hosts)
    finally:
        for host in hosts.values():
            host.vm.kill()


@pytest.fixture
def host(pair, suite) -> Host:
    return pair.hosts[suite]


# module scope: the items of a pair share its VMs (pytest groups them by the pair)
suites = pytest.mark.parametrize(
    ("pair", "suite"),
    [pytest.param(s.pair, name, id=name) for name, s in SUITES.items()],
    indirect=["pair"],
    scope="module",
)


def plan_of(host: Host, reading: Path) -> dict:
    """`conntune plan --reading FILE --json` with the host's inventory data."""
    data = [arg for key, value in host.suite.data.items() for arg in ("--data", f"{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "conntune.cli", "plan", "--reading", str(reading), *data, "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def qdiscs(vm, dev: str) -> list[dict]:
    return json.loads(vm.ssh(f"tc -j qdisc show dev {dev}").stdout)


def live_state(host: Host) -> dict:
    """What a reboot must bring back: every value of conntune's sysctl file, the CAKE root."""
    vm = host.vm
    written = {}
    for line in vm.ssh(f"cat {paths.SYSCTL_FILE}").stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith(("#", ";")):
            written[key.strip()] = int(value)
    assert MAX in written and BUCKETS in written, written
    dev = host.suite.data.get("cake_interface", "eth0")
    root = next(q for q in qdiscs(vm, dev) if q.get("root"))
    return {
        "sysctls": sysctls(vm, written),
        "written": written,
        "hashsize": hashsize(vm),
        "qdisc": (root["kind"], root.get("options", {}).get("bandwidth")),
    }


@suites
def test_dry_run_changes_nothing(pair, host):
    def dry_run():
        before = pair.reset()
        result = pair.pyinfra("--dry", "--diff")
        after = {name: snapshot(h.vm) for name, h in pair.hosts.items()}
        return result, before, after

    result, before, after = pair.step("dry run", dry_run)
    text = out(result)
    assert result.returncode == 0, text
    changes = changes_of(text, host.vm.name)
    print(f"[{host.name}] dry run: {len(changes)} changes")
    assert changes, text  # an untouched host: conntune has something to do
    assert after[host.name] == before[host.name]


def applied_state(host: Host, plan: dict) -> dict:
    """The live values the plan names, and the CAKE qdiscs of its interface."""
    vm = host.vm
    cake = plan["cake"] or {}
    return {
        "sysctls": sysctls(vm, [MAX, BUCKETS, *plan["timeouts"]]),
        "hashsize": hashsize(vm),
        "mem_bytes": mem_total_bytes(vm),
        "qdiscs": qdiscs(vm, cake["interface"]) if cake else [],
    }


@suites
def test_apply_sets_what_the_plan_says(pair, host, tmp_path_factory):
    def apply():
        pair.reset()
        plans = {}
        for name, h in pair.hosts.items():
            reading = tmp_path_factory.mktemp("reading") / f"{name}.reading"
            reading.write_text(take_reading(h.vm))
            plans[name] = plan_of(h, reading)
        pair.apply()
        return {
            name: (plans[name], applied_state(h, plans[name])) for name, h in pair.hosts.items()
        }

    plan, state = pair.step("apply", apply)[host.name]
    assert plan["host"]["kernel"] == host.kernel
    # the blog's sizing rule, computed here without conntune
    assert plan["conntrack_max"] == expected_max(state["mem_bytes"])
    assert plan["buckets"] == plan["conntrack_max"]

    live = state["sysctls"]
    assert live[MAX] == plan["conntrack_max"]
    assert live[BUCKETS] == plan["buckets"]
    assert state["hashsize"] == plan["buckets"]
    for key, seconds in plan["timeouts"].items():
        assert live[key] == seconds, key
    cake = plan["cake"]
    assert cake, plan["reasons"]
    found = state["qdiscs"]
    root = next(q for q in found if q.get("root"))
    assert root["kind"] == cake["kind"]
    assert root["options"]["bandwidth"] * 8 == cake["bandwidth_bit"]  # tc -j: bytes/s
    assert root["options"]["diffserv"] == cake["diffserv"]
    if host.name == "sid":
        assert root["kind"] == "cake_mq"
        children = [q for q in found if q.get("parent", "").startswith(root["handle"])]
        assert len(children) == 4 and {q["kind"] for q in children} == {"cake"}, found
    else:
        assert root["kind"] == "cake"
    print(f"[{host.name}] applied: max {live[MAX]}, buckets {live[BUCKETS]}, {root['kind']} "
          f"{cake['bandwidth_bit'] // 10**6} Mbit/s on {cake['interface']}")  # fmt: skip


@suites
def test_second_apply_changes_nothing(pair, host):
    def second():
        pair.ensure_applied()
        before = {name: snapshot(h.vm) for name, h in pair.hosts.items()}
        dry = pair.pyinfra("--dry", "--diff")
        again = pair.pyinfra("-y")
        after = {name: snapshot(h.vm) for name, h in pair.hosts.items()}
        return dry, again, before, after

    dry, again, before, after = pair.step("second apply", second)
    assert dry.returncode == 0, out(dry)
    assert changes_of(out(dry), host.vm.name) == [], out(dry)
    assert again.returncode == 0, out(again)
    rows = results(out(again))  # one table for both VMs: no operation changed anything
    assert rows and all(success == "-" for success, _ in rows.values()), rows
    assert after[host.name] == before[host.name]


@suites
def test_undo_restores_the_host(pair, host):
    def undo():
        pair.ensure_applied()
        applied = {name: snapshot(h.vm) for name, h in pair.hosts.items()}
        pair.undo(list(pair.hosts.values()))
        return applied, {name: snapshot(h.vm) for name, h in pair.hosts.items()}

    applied, after = pair.step("undo", undo)
    assert applied[host.name] != host.pristine
    assert_as_before(after[host.name], host.pristine)


@suites
def test_values_survive_reboot(pair, host):
    if not host.suite.reboot:
        pytest.skip("reboot persistence of this suite: test_vm_reboot.py")

    def reboot():
        rebooting = [h for h in pair.hosts.values() if h.suite.reboot]
        pair.apply(rebooting)  # after the undo step: a fresh apply
        before = {h.name: live_state(h) for h in rebooting}
        with ThreadPoolExecutor(len(rebooting)) as pool:  # both VMs at once
            seconds = dict(zip(before, pool.map(lambda h: h.vm.reboot(), rebooting), strict=True))
        after = {h.name: live_state(h) for h in rebooting}
        again = pair.pyinfra("--dry", "--diff", hosts=rebooting)
        return before, seconds, after, again

    before, seconds, after, again = pair.step("reboot", reboot)
    mine = before[host.name]
    assert mine["sysctls"] == mine["written"]
    assert mine["hashsize"] == mine["written"][BUCKETS]
    assert mine["qdisc"][0] == ("cake_mq" if host.name == "sid" else "cake")
    print(f"[{host.name}] reboot to SSH {seconds[host.name]:.1f} s")
    assert after[host.name] == mine
    assert again.returncode == 0, out(again)
    assert changes_of(out(again), host.vm.name) == [], out(again)
