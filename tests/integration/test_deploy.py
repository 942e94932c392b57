"""
deploy.py over real SSH against three systemd + sshd + firewalld containers, as a user runs it:
dry run with diff, apply, idempotence, drift, firewalld restarts, refused settings.

The containers share this machine's kernel from another network namespace: the timeouts are
theirs to set, the table size and hash size are read-only, and there is no sch_cake. Those
are reported per host, not crashed on. (Sizing and CAKE are proven on VMs: tests/vm.)

The tests in this module run in order on one shared fleet, each starting from a known state.
"""

from __future__ import annotations

import pytest

from conntune import paths, profiles
from tests.pyinfra_output import changes_of, commands_per_host, results

pytestmark = pytest.mark.docker

HOSTS = ("host1", "host2", "host3")
UDP = f"{profiles.P}udp_timeout"
ESTABLISHED = f"{profiles.P}tcp_timeout_established"


def reset(fleet, name: str) -> None:
    """A host as it was before conntune: no conntune files, kernel-default timeouts."""
    defaults = " ".join(f"{key}={value}" for key, value in profiles.LINUX_DEFAULTS.items())
    files = " ".join(paths.OWNED_FILES)
    fleet.ssh(
        name,
        f"systemctl disable {paths.CAKE_UNIT} >/dev/null 2>&1; rm -f {files}; "
        f"rm -rf {paths.STATE_DIR}; systemctl daemon-reload; sysctl -q -w {defaults}",
    )


def snapshot(fleet, name: str) -> str:
    """Everything a conntune run could touch: conntrack sysctls, hash size, qdiscs, /etc."""
    return fleet.ssh(
        name,
        "sysctl -a 2>/dev/null | grep -E '^net\\.(netfilter\\.)?nf_conntrack' "
        "| grep -v nf_conntrack_count; "
        "cat /sys/module/nf_conntrack/parameters/hashsize; tc -j qdisc show; "
        "find /etc /var/lib/conntune -xdev -type f -print0 2>/dev/null | sort -z "
        "| xargs -0 sha256sum; systemctl is-active firewalld; "
        "systemctl show -p ExecMainStartTimestampMonotonic firewalld",
    ).stdout


def firewalld_start(fleet, name: str) -> str:
    return fleet.ssh(
        name, "systemctl show -p ActiveState -p ExecMainStartTimestampMonotonic firewalld"
    ).stdout


def live(fleet, name: str, key: str) -> int:
    """A live value, read from /proc (not with sysctl: some tests take sysctl away)."""
    return int(fleet.ssh(name, f"cat /proc/sys/{key.replace('.', '/')}").stdout)


def output(result) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def pristine(fleet):
    for name in HOSTS:
        reset(fleet, name)
    yield fleet
    for name in HOSTS:
        reset(fleet, name)


def test_dry_run_shows_every_change_and_changes_nothing(pristine):
    fleet = pristine
    before = {name: snapshot(fleet, name) for name in HOSTS}
    result = fleet.pyinfra("deploy.py", "--dry", "--diff")
    text = output(result)
    assert result.returncode == 0, text
    for name in HOSTS:
        lines = changes_of(text, name)
        assert f"{ESTABLISHED}: 432000 → 86400" in lines, text
        assert f"{UDP}: 30 → 10" in lines
        # every timeout of the profile that differs from the kernel default, and nothing else
        differing = {k: v for k, v in profiles.SERVER.items() if profiles.LINUX_DEFAULTS[k] != v}
        assert len(lines) == len(differing), lines
        assert f"[{name}]   create {paths.SYSCTL_FILE}" in text
        assert f"[{name}] conntune: nf_conntrack_max and the hash size are read-only" in text
        assert f"[{name}] conntune: CAKE skipped: sch_cake is not available" in text
    assert {name: snapshot(fleet, name) for name in HOSTS} == before


def test_apply_converges(pristine):
    fleet = pristine
    firewalld_before = {name: firewalld_start(fleet, name) for name in HOSTS}
    result = fleet.pyinfra("deploy.py", "-y")
    text = output(result)
    assert result.returncode == 0, text
    for name in HOSTS:
        for key, value in profiles.SERVER.items():
            assert live(fleet, name, key) == value, (name, key)
        listing = fleet.ssh(name, f"stat -c '%a %U %n' {paths.SYSCTL_FILE}").stdout.split()
        assert listing[:2] == ["644", "root"]
        content = fleet.ssh(name, f"cat {paths.SYSCTL_FILE}").stdout
        assert f"{UDP} = 10" in content and "nf_conntrack_max" not in content
        # a container cannot load modules or size the table: those files are not written
        absent = fleet.ssh(name, f"ls {paths.MODPROBE_FILE} {paths.MODULES_LOAD_FILE}", check=False)
        assert absent.returncode != 0
        original = fleet.ssh(name, f"cat {paths.ORIGINAL_FILE}").stdout
        assert f"{ESTABLISHED} = 432000" in original
    # no module options file in a container, so on-change restarts no firewalld: a sysctl file
    # is applied directly and a restart would only flush every firewall rule for nothing
    assert {name: firewalld_start(fleet, name) for name in HOSTS} == firewalld_before
    assert "Restart firewalld" not in text
    assert "ActiveState=inactive" in firewalld_start(fleet, "host3")


def test_second_run_changes_nothing_with_one_command_per_host(pristine):
    fleet = pristine
    firewalld_before = {name: firewalld_start(fleet, name) for name in HOSTS}
    before = {name: snapshot(fleet, name) for name in HOSTS}
    result = fleet.pyinfra("deploy.py", "-y", "--debug")
    text = output(result)
    assert result.returncode == 0, text
    rows = results(text)
    assert rows and all(success == "-" and error == "-" for success, error in rows.values()), rows
    assert {name: firewalld_start(fleet, name) for name in HOSTS} == firewalld_before
    assert {name: snapshot(fleet, name) for name in HOSTS} == before
    assert commands_per_host(text) == {name: 1 for name in HOSTS}, text


def test_dry_run_on_converged_hosts_reports_nothing(pristine):
    result = pristine.pyinfra("deploy.py", "--dry", "--diff", "--debug")
    text = output(result)
    assert result.returncode == 0, text
    for name in HOSTS:
        assert changes_of(text, name) == []
    assert commands_per_host(text) == {name: 1 for name in HOSTS}, text


def test_live_drift_is_reported_exactly_and_repaired_without_restart(pristine):
    fleet = pristine
    fleet.ssh("host2", f"sysctl -q -w {UDP}=99")
    firewalld_before = firewalld_start(fleet, "host2")
    dry = fleet.pyinfra("deploy.py", "--dry", "--diff")
    assert changes_of(output(dry), "host2") == [f"{UDP}: 99 → 10"]
    assert changes_of(output(dry), "host1") == []
    assert live(fleet, "host2", UDP) == 99
    result = fleet.pyinfra("deploy.py", "-y")
    assert result.returncode == 0, output(result)
    assert live(fleet, "host2", UDP) == 10
    assert firewalld_start(fleet, "host2") == firewalld_before  # no file changed


def test_file_drift_is_repaired_without_a_firewalld_restart_unless_always(pristine):
    fleet = pristine
    fleet.ssh("host1", f"sed -i 's/^{UDP} = 10$/{UDP} = 42/' {paths.SYSCTL_FILE}")
    starts = {name: firewalld_start(fleet, name) for name in HOSTS}
    dry = fleet.pyinfra("deploy.py", "--dry", "--diff")
    text = output(dry)
    assert f"[host1]   modify {paths.SYSCTL_FILE}" in text
    assert f"[host1]   -{UDP} = 42" in text and f"[host1]   +{UDP} = 10" in text
    assert "modify" not in " ".join(line for line in text.splitlines() if "[host2]" in line)
    assert "Restart firewalld" not in text  # a sysctl file acts without firewalld
    result = fleet.pyinfra("deploy.py", "-y")
    assert result.returncode == 0, output(result)
    assert f"{UDP} = 10" in fleet.ssh("host1", f"cat {paths.SYSCTL_FILE}").stdout
    assert {name: firewalld_start(fleet, name) for name in HOSTS} == starts
    # always: the dry run says so beforehand, and only where firewalld runs
    always = fleet.pyinfra("deploy.py", "--dry", "--data", "firewalld_restart=always")
    assert always.returncode == 0, output(always)
    said = [line for line in output(always).splitlines() if "Restart firewalld" in line]
    assert said and all("host1" in line and "host3" not in line for line in said), said
    assert {name: firewalld_start(fleet, name) for name in HOSTS} == starts
    result = fleet.pyinfra("deploy.py", "-y", "--data", "firewalld_restart=always")
    assert result.returncode == 0, output(result)
    assert firewalld_start(fleet, "host1") != starts["host1"]
    assert firewalld_start(fleet, "host3") == starts["host3"]


def test_firewalld_restart_never(pristine):
    fleet = pristine
    starts = {name: firewalld_start(fleet, name) for name in HOSTS}
    result = fleet.pyinfra(
        "deploy.py", "-y", "--data", "firewalld_restart=never",
        "--data", 'conntrack_timeouts={"udp_timeout": 25}',
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    assert all(live(fleet, name, UDP) == 25 for name in HOSTS)
    assert {name: firewalld_start(fleet, name) for name in HOSTS} == starts
    # back to the profile
    assert fleet.pyinfra("deploy.py", "-y").returncode == 0
    assert all(live(fleet, name, UDP) == 10 for name in HOSTS)


def test_bad_setting_is_refused_before_any_change_and_other_hosts_go_on(pristine, tmp_path):
    fleet = pristine
    for name in HOSTS:
        fleet.ssh(name, f"sysctl -q -w {UDP}=77")
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    text = inventory.read_text().replace(
        "('host2', {**_common,",
        "('host2', {**_common, 'conntrack_timeouts': {'udp_timeout': -1}, "
        "'cake_bandwidth': 'fast',",
    )
    inventory.write_text(text)
    before = snapshot(fleet, "host2")
    result = fleet.pyinfra("deploy.py", "-y", inventory=inventory)
    out = output(result)
    assert result.returncode == 1, out
    assert "[host2] conntune: conntrack_timeouts.udp_timeout: -1 is not a whole number" in out
    assert "[host2] conntune: cake_bandwidth: 'fast' is not a rate" in out
    assert snapshot(fleet, "host2") == before
    assert live(fleet, "host2", UDP) == 77
    assert live(fleet, "host1", UDP) == 10 and live(fleet, "host3", UDP) == 10
