"""
`conntune audit`, `reconcile` and `schedule` against the Docker fleet over real SSH, with a
fourth inventory host that does not answer (a closed port).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conntune import fleet as fleet_jobs
from conntune import profiles
from tests.integration.test_deploy import reset, snapshot

pytestmark = pytest.mark.docker

HOSTS = ("host1", "host2", "host3")
UDP = f"{profiles.P}udp_timeout"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def jobs(fleet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs")
    inventory = fleet.write_inventory(tmp / "inventory.py")
    text = inventory.read_text().replace(
        "docker_fleet = [",
        f"docker_fleet = [\n    ('ghost', {{**_common, 'ssh_port': {closed_port()}}}),",
    )
    inventory.write_text(text)
    for name in HOSTS:
        reset(fleet, name)
    yield fleet, inventory, tmp
    for name in HOSTS:
        reset(fleet, name)


def conntune(*args: str, lock_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    if lock_dir:
        env["CONNTUNE_LOCK_DIR"] = lock_dir
    return subprocess.run(
        [sys.executable, "-m", "conntune.cli", *args],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def test_audit_rows_match_each_host(jobs):
    fleet, inventory, _ = jobs
    result = conntune("audit", str(inventory), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["host"]: row for row in json.loads(result.stdout)["hosts"]}
    assert rows["ghost"]["verdict"] == "unreachable" and rows["ghost"]["error"]
    for name in HOSTS:
        row = rows[name]
        live_max = int(fleet.ssh(name, "sysctl -n net.netfilter.nf_conntrack_max").stdout)
        assert row["conntrack_max"] == live_max
        assert row["kernel"] == fleet.ssh(name, "uname -r").stdout.strip()
        assert row["firewalld"] == ("active" if fleet.firewalld_active[name] else "inactive")
        assert row["verdict"] == "drift"  # fresh hosts: the server profile is not applied yet
        assert f"{profiles.P}tcp_timeout_established: 432000 → 86400" in row["drift"]
        assert row["drop"] == 0 and row["table_full_lines"] == 0
    text = conntune("audit", str(inventory), "-v").stdout
    assert "4 hosts: 1 unreachable, 3 drift" in text


def test_check_changes_nothing_and_exits_2(jobs):
    fleet, inventory, tmp = jobs
    before = {name: snapshot(fleet, name) for name in HOSTS}
    result = conntune("reconcile", str(inventory), "--limit", "host*", "--check",
                      lock_dir=str(tmp))  # fmt: skip
    assert result.returncode == fleet_jobs.EXIT_DRIFT, result.stdout + result.stderr
    assert "drift found" in result.stdout
    assert {name: snapshot(fleet, name) for name in HOSTS} == before


def test_reconcile_converges_others_and_reports_the_unreachable_host(jobs):
    fleet, inventory, tmp = jobs
    report_file, metrics = tmp / "report.json", tmp / "conntune.prom"
    result = conntune("reconcile", str(inventory), "--report", str(report_file),
                      "--prometheus", str(metrics), lock_dir=str(tmp))  # fmt: skip
    assert result.returncode == fleet_jobs.EXIT_FAILED, result.stdout + result.stderr
    assert "ghost: unreachable" in result.stdout
    for name in HOSTS:
        assert int(fleet.ssh(name, f"sysctl -n {UDP}").stdout) == 10
        assert f"{name}: converged" in result.stdout
    run = json.loads(report_file.read_text())
    hosts = {entry["host"]: entry for entry in run["hosts"]}
    assert hosts["host1"]["converged"] and hosts["host1"]["drift_after"] == []
    assert f"{UDP}: 30 → 10" in hosts["host1"]["changed"]
    assert hosts["ghost"]["error"]
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    up = {s.labels["host"]: s.value for s in families["conntune_host_up"].samples}
    assert up == {"ghost": 0, "host1": 1, "host2": 1, "host3": 1}
    drift = {s.labels["host"]: s.value for s in families["conntune_drift_settings"].samples}
    assert drift == {"host1": 0, "host2": 0, "host3": 0}


def test_hand_drift_is_reported_then_repaired(jobs):
    fleet, inventory, tmp = jobs
    fleet.ssh("host2", f"sysctl -q -w {UDP}=55")
    audit = json.loads(conntune("audit", str(inventory), "--limit", "host*", "--json").stdout)
    rows = {row["host"]: row for row in audit["hosts"]}
    assert rows["host2"]["verdict"] == "drift"
    assert rows["host2"]["drift"] == [f"{UDP}: 55 → 10"]
    assert rows["host1"]["verdict"] == "ok" and rows["host3"]["verdict"] == "ok"
    result = conntune("reconcile", str(inventory), "--limit", "host*", lock_dir=str(tmp))
    assert result.returncode == fleet_jobs.EXIT_OK, result.stdout + result.stderr
    assert f"host2: converged, 1 changed\n  {UDP}: 55 → 10" in result.stdout
    assert "host1: nothing to do" in result.stdout
    assert int(fleet.ssh("host2", f"sysctl -n {UDP}").stdout) == 10


def test_lock_holds_under_two_concurrent_runs(jobs):
    fleet, inventory, tmp = jobs
    fleet.ssh("host1", f"sysctl -q -w {UDP}=56")
    results: list[subprocess.CompletedProcess[str]] = []
    with _held_lock(str(inventory), tmp):
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    conntune("reconcile", str(inventory), "--limit", "host*", lock_dir=str(tmp))
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.returncode for r in results] == [fleet_jobs.EXIT_LOCKED] * 2
    assert all("another conntune reconcile" in r.stderr for r in results)
    assert int(fleet.ssh("host1", f"sysctl -n {UDP}").stdout) == 56  # neither touched a host
    # released: two at once now, exactly one wins and the other is told why
    threads = [
        threading.Thread(
            target=lambda: results.append(
                conntune("reconcile", str(inventory), "--limit", "host*", lock_dir=str(tmp))
            )
        )
        for _ in range(2)
    ]
    results.clear()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.returncode for r in results)
    assert codes[0] == fleet_jobs.EXIT_OK
    assert codes[1] in (fleet_jobs.EXIT_OK, fleet_jobs.EXIT_LOCKED)
    assert int(fleet.ssh("host1", f"sysctl -n {UDP}").stdout) == 10


class _held_lock:
    """Hold the inventory lock from this test process, in the lock dir the CLI will use."""

    def __init__(self, inventory: str, lock_dir) -> None:
        self.inventory, self.lock_dir = inventory, str(lock_dir)

    def __enter__(self):
        self.previous = os.environ.get("CONNTUNE_LOCK_DIR")
        os.environ["CONNTUNE_LOCK_DIR"] = self.lock_dir
        self.context = fleet_jobs.inventory_lock(self.inventory)
        return self.context.__enter__()

    def __exit__(self, *exc):
        self.context.__exit__(*exc)
        if self.previous is None:
            os.environ.pop("CONNTUNE_LOCK_DIR", None)
        else:
            os.environ["CONNTUNE_LOCK_DIR"] = self.previous


def test_schedule_units_pass_systemd_analyze_verify(jobs, tmp_path):
    fleet, inventory, _ = jobs
    result = conntune("schedule", str(inventory), "--every", "1h", "--dry-run",
                      "--executable", "/usr/local/bin/conntune")  # fmt: skip
    assert result.returncode == 0, result.stderr
    units: dict[str, str] = {}
    for block in result.stdout.split("# /etc/systemd/system/")[1:]:
        name, _, text = block.partition("\n")
        units[name.strip()] = text
    assert sorted(name.rsplit(".", 1)[1] for name in units) == ["service", "timer"]
    fleet.ssh("host1", "printf '#!/bin/sh\\nexit 0\\n' > /usr/local/bin/conntune && "
                       "chmod 755 /usr/local/bin/conntune")  # fmt: skip
    for name, text in units.items():
        fleet.ssh("host1", f"cat > /etc/systemd/system/{name}", input=text)
    names = " ".join(f"/etc/systemd/system/{name}" for name in units)
    verify = fleet.ssh("host1", f"systemd-analyze verify {names}", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "rror" not in verify.stderr, verify.stderr
    fleet.ssh("host1", f"rm -f {names} /usr/local/bin/conntune")
