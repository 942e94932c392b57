"""
The operations against a host reading, without a network: change, no change, dry-run diff.
(The same operations run over real SSH in tests/integration.)
"""

import dataclasses
import logging
import subprocess
from types import SimpleNamespace

import pytest
from pyinfra.api import FunctionCommand, StringCommand
from pyinfra.context import ctx_host, ctx_state

from conntune import paths
from conntune.operations import cake as cake_ops
from conntune.operations import conntrack, files, guards
from conntune.policy import plan
from conntune.settings import settings_from_data
from tests.factories import GIB, converged, make_facts


class FakeHost:
    name = "fake"
    print_prefix = "[fake] "

    def __init__(self, facts):
        self.facts = facts
        self.noops: list[str] = []
        self.fact_reads = 0

    def get_fact(self, cls, *args, **kwargs):
        self.fact_reads += 1
        return self.facts

    def noop(self, description):
        self.noops.append(description)


def fake_state(diff: bool = False, executing: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        config=SimpleNamespace(DIFF=diff),
        is_executing=executing,
        should_check_for_changes=lambda: True,
        failed_hosts=set(),
    )


def run(op, facts, *, diff=False, executing=False, **kwargs):
    """Run an operation body; returns (commands as text, host)."""
    host = FakeHost(facts)
    with ctx_state.use(fake_state(diff, executing)), ctx_host.use(host):
        commands = list(op._inner(**kwargs))
    texts = [c.get_raw_value() if isinstance(c, StringCommand) else c for c in commands]
    return texts, host


@pytest.fixture
def facts():
    return make_facts(mem_bytes=4 * GIB)  # plans 131072 against the live 65536


@pytest.fixture
def desired(facts):
    return plan(facts, settings_from_data({}))


def assert_valid_sh(command: str) -> None:
    subprocess.run(["sh", "-n", "-c", command], check=True)


def test_live_values_change(facts, desired):
    commands, _ = run(
        conntrack.conntrack_live, facts, sysctls=desired.sysctls, buckets=desired.buckets
    )
    assert len(commands) == 1
    command = commands[0]
    assert_valid_sh(command)
    # hash size first, then max, then timeouts; only the values that differ
    assert command.index("/sys/module/nf_conntrack/parameters/hashsize") < command.index(
        "nf_conntrack_max="
    )
    assert command.index("nf_conntrack_max=") < command.index("tcp_timeout_established=86400")
    assert "tcp_timeout_close=" not in command  # already 10 on the kernel


def test_live_values_no_change(facts, desired):
    commands, host = run(
        conntrack.conntrack_live,
        converged(facts, desired),
        sysctls=desired.sysctls,
        buckets=desired.buckets,
    )
    assert commands == []
    assert host.noops and "already match" in host.noops[0]


def test_live_values_loads_module_when_absent(desired):
    facts = make_facts(conntrack_loaded=False, sysctls={}, hashsize=None)
    commands, _ = run(
        conntrack.conntrack_live,
        facts,
        sysctls=desired.sysctls,
        buckets=desired.buckets,
        load_module=True,
    )
    command = commands[0]  # the record's shell function is defined first, then the chain
    assert " modprobe nf_conntrack && " in command
    assert command.index("modprobe nf_conntrack") < command.index("sysctl -q -w")
    assert "tcp_timeout_close=10" in commands[0]  # unknown before loading: write every value


def test_live_values_dry_run_diff(facts, desired, caplog):
    caplog.set_level(logging.INFO)
    run(
        conntrack.conntrack_live, facts, diff=True, sysctls=desired.sysctls, buckets=desired.buckets
    )
    text = caplog.text
    assert "nf_conntrack hashsize: 65536 → 131072" in text
    assert "net.netfilter.nf_conntrack_tcp_timeout_established: 432000 → 86400" in text


def test_diff_is_not_printed_twice(facts, desired, caplog):
    caplog.set_level(logging.INFO)
    run(
        conntrack.conntrack_live,
        facts,
        diff=True,
        executing=True,
        sysctls=desired.sysctls,
        buckets=desired.buckets,
    )
    assert "→" not in caplog.text  # already shown at change detection


def test_files_change_is_one_atomic_command(facts, desired):
    commands, _ = run(files.owned_files, facts, files=desired.files)
    assert len(commands) == 1
    command = commands[0]
    assert_valid_sh(command)
    for path, content in desired.files.items():
        if content is not None:
            temp = path.rsplit("/", 1)[0] + "/." + path.rsplit("/", 1)[1] + ".conntune-tmp"
            assert f"> {temp} && chmod 0644 {temp} && mv -f {temp} {path}" in command
    assert "systemctl daemon-reload && systemctl enable conntune-cake.service" in command


def test_files_content_is_quoted_not_interpolated(facts, tmp_path):
    evil = "x'; touch PWNED #$(touch PWNED2)`touch PWNED3`\n"
    commands, _ = run(files.owned_files, facts, files={paths.SYSCTL_FILE: evil})
    # run the real command with the target directory moved into tmp_path
    command = commands[0].replace("/etc/sysctl.d", str(tmp_path / "sysctl.d"))
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)
    assert (tmp_path / "sysctl.d" / "90-conntune.conf").read_text() == evil
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sysctl.d"]  # nothing else ran
    assert oct((tmp_path / "sysctl.d" / "90-conntune.conf").stat().st_mode & 0o777) == "0o644"


def test_files_no_change(facts, desired):
    commands, host = run(files.owned_files, converged(facts, desired), files=desired.files)
    assert commands == []
    assert "already as planned" in host.noops[0]


def test_files_removed_when_no_longer_planned(facts):
    current = make_facts(
        owned_files={**facts.owned_files, paths.CAKE_UNIT_FILE: "[Unit]\n"}, cake_unit_enabled=True
    )
    commands, _ = run(files.owned_files, current, files={paths.CAKE_UNIT_FILE: None})
    assert "systemctl disable --now conntune-cake.service" in commands[0]
    assert f"rm -f {paths.CAKE_UNIT_FILE}" in commands[0]


def test_files_dry_run_shows_unified_diff(facts, desired, caplog):
    caplog.set_level(logging.INFO)
    old = desired.files[paths.SYSCTL_FILE].replace("= 86400", "= 432000")
    current = converged(facts, desired)
    current.owned_files[paths.SYSCTL_FILE] = old
    run(files.owned_files, current, diff=True, files=desired.files)
    assert f"modify {paths.SYSCTL_FILE}" in caplog.text
    assert "-net.netfilter.nf_conntrack_tcp_timeout_established = 432000" in caplog.text
    assert "+net.netfilter.nf_conntrack_tcp_timeout_established = 86400" in caplog.text


def test_cake_change_and_no_change(facts, desired):
    cake = desired.cake
    args = {
        "interface": cake.interface,
        "bandwidth_bit": cake.bandwidth_bit,
        "diffserv": cake.diffserv,
    }
    commands, _ = run(cake_ops.cake_qdisc, facts, **args)
    # every option is sent, CAKE's defaults included: replace keeps options it is not given
    assert commands == [
        "tc qdisc replace dev eth0 root cake bandwidth 1000000000bit besteffort "
        "triple-isolate nonat nowash split-gso no-ack-filter internet raw"
    ]
    commands, host = run(cake_ops.cake_qdisc, converged(facts, desired), **args)
    assert commands == [] and host.noops


def test_cake_options_change_and_no_change(facts, desired, caplog):
    caplog.set_level(logging.INFO)
    current = converged(facts, desired)
    options = {"nat": True, "overhead": "docsis", "rtt": 50_000, "ack_filter": "aggressive",
               "flowmode": "dual-srchost"}  # fmt: skip
    args = {"interface": "eth0", "bandwidth_bit": 10**9, "options": options}
    commands, _ = run(cake_ops.cake_qdisc, current, diff=True, **args)
    assert commands == [
        "tc qdisc replace dev eth0 root cake bandwidth 1000000000bit besteffort dual-srchost "
        "nat nowash split-gso ack-filter-aggressive rtt 50000us noatm docsis"
    ]
    assert "(flowmode triple-isolate, nat False, ack_filter disabled, rtt_us 100000, raw True, " \
           "atm None, overhead 0, mpu None) → " in caplog.text  # fmt: skip
    from conntune import cake_options
    from conntune.plan import CakePlan

    applied = cake_options.expected(CakePlan("eth0", 10**9, **options))
    assert (applied.overhead, applied.mpu, applied.atm, applied.raw) == (18, 64, "noatm", False)
    shaped = converged(
        current, dataclasses.replace(desired, cake=CakePlan("eth0", 10**9, **options))
    )
    commands, host = run(cake_ops.cake_qdisc, shaped, **args)
    assert commands == [] and host.noops
    # docsis set mpu 64; a replace cannot put mpu back to 0: delete and add
    commands, _ = run(cake_ops.cake_qdisc, shaped, interface="eth0", bandwidth_bit=10**9)
    assert commands[0].startswith("tc qdisc del dev eth0 root && tc qdisc replace dev eth0")


def test_cake_other_rate_is_a_change(facts, desired, caplog):
    caplog.set_level(logging.INFO)
    current = converged(facts, desired)
    commands, _ = run(
        cake_ops.cake_qdisc,
        current,
        diff=True,
        interface="eth0",
        bandwidth_bit=10**8,
        diffserv="besteffort",
    )
    assert len(commands) == 1
    assert "qdisc root dev eth0: cake 1gbit besteffort → cake 100mbit besteffort" in caplog.text


def test_refuse_yields_a_failing_callback():
    state = fake_state()
    host = FakeHost(make_facts())
    with ctx_state.use(state), ctx_host.use(host):
        commands = list(guards.refuse._inner(errors=["cake_bandwidth: 'fast' is not a rate"]))
    assert len(commands) == 1 and isinstance(commands[0], FunctionCommand)
    assert commands[0].function(None, SimpleNamespace(print_prefix=""), *commands[0].args) is False


def test_one_host_reading_serves_every_operation(facts, desired):
    host = FakeHost(facts)
    with ctx_state.use(fake_state()), ctx_host.use(host):
        list(conntrack.conntrack_live._inner(sysctls=desired.sysctls, buckets=desired.buckets))
        list(files.owned_files._inner(files=desired.files))
        list(cake_ops.cake_qdisc._inner(interface="eth0", bandwidth_bit=10**9))
    assert host.fact_reads == 1
