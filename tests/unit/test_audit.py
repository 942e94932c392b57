"""Audit verdicts, the report formats and the schedule units: pure, no hosts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conntune import fleet, metrics, report
from conntune.audit import audit_host, fleet_summary, unreachable
from conntune.schedule import Schedule, on_calendar, parse_duration
from tests.factories import kernel_sysctls, make_facts


def row_for(**overrides):
    return audit_host("h1", make_facts(**overrides), {})


def test_fresh_host_drifts():
    row = row_for()
    assert row.verdict == "drift"
    assert row.drift_count == len(row.drift) > 0
    assert row.usage_percent == round(100 * 10 / 65536, 1)
    assert row.entries_per_bucket_at_max == 1.0
    assert row.qdisc == "fq_codel" and row.qdisc_planned == "cake 1gbit besteffort"


@pytest.mark.parametrize(
    ("count", "verdict", "level"),
    [
        (49151, "drift", None),
        (49152, "at risk", "at risk"),
        (59000, "at risk", "warning"),
        (62300, "at risk", "critical"),
    ],
)
def test_usage_thresholds(count, verdict, level):
    row = row_for(sysctls=kernel_sysctls(conntrack_max=65536, count=count))
    assert row.verdict == verdict
    if level:
        assert row.reason.endswith(level)


def test_dropping_wins_and_names_the_newest_line():
    lines = [
        "[  10.1] nf_conntrack: nf_conntrack: table full, dropping packet",
        "[  12.5] nf_conntrack: nf_conntrack: table full, dropping packet",
    ]
    row = row_for(table_full_lines=lines, stats={"drop": 7, "entries": 3})
    assert row.verdict == "dropping"
    assert "2 'table full' kernel-log lines (newest 12.5)" in row.reason
    assert "7 packets dropped" in row.reason


def test_drops_before_conntunes_last_change_are_told_from_drops_since():
    from conntune.hostfacts import ConntrackStats

    baseline = ConntrackStats({"drop": 1041, "insert_failed": 0, "entries": 9}, "conntrack -S")
    lines = ["[  10.1] nf_conntrack: nf_conntrack: table full, dropping packet"] * 3
    fixed = row_for(stats={"drop": 1041, "insert_failed": 0}, table_full_lines=lines,
                    counters_at_change=baseline, table_full_at_change=3)  # fmt: skip
    assert fixed.since_change == {"drop": 0, "insert_failed": 0, "table_full_lines": 0}
    assert (
        fixed.verdict == "drift" and "before conntune's last change: drop 1041" not in fixed.reason
    )
    again = row_for(stats={"drop": 1050, "insert_failed": 2}, table_full_lines=lines * 2,
                    counters_at_change=baseline, table_full_at_change=3)  # fmt: skip
    assert again.verdict == "dropping"
    assert "drop 9: 9 packets dropped by conntrack since conntune's last change" in again.reason
    assert "3 'table full' kernel-log lines" in again.reason and "insert_failed 2" in again.reason
    rebooted = row_for(stats={"drop": 4}, counters_at_change=baseline, table_full_at_change=3)
    assert rebooted.since_change["drop"] == 4  # counters below the record: all of it is newer


def test_refused_settings_are_a_verdict_not_a_crash():
    row = audit_host("h1", make_facts(), {"cake_bandwidth": "fast"})
    assert row.verdict == "refused" and "cake_bandwidth" in row.error


def test_neighbours_and_chainlength_header():
    row = row_for(kube_proxy=True, docker_version="Docker version 28.3.3",
                  stats={"chainlength": 4, "drop": 0})  # fmt: skip
    assert row.chaintoolong == 4
    assert row.neighbours == ["docker (Docker version 28.3.3)", "kube-proxy"]


def test_summary_and_table():
    rows = [row_for(), unreachable("h2", "Connection refused")]
    assert fleet_summary(rows) == "2 hosts: 1 unreachable, 1 drift"
    text = report.table(rows, verbose=True)
    assert "h2: unreachable: Connection refused" in text
    assert "  drift: net.netfilter.nf_conntrack_max: 65536 → 65536" not in text
    assert "/etc/sysctl.d/90-conntune.conf: create" in text


def test_hosts_of_equal_verdict_in_the_order_people_number_them():
    rows = [unreachable(f"web-{n}", "timed out") for n in (10, 2, 1)] + [row_for()]
    text = report.table(rows)
    assert text.index("web-1 ") < text.index("web-2 ") < text.index("web-10 ") < text.index("h1 ")
    assert [row.host for row in sorted(rows, key=lambda r: fleet.BY_HOST(r.host))] == [
        "h1",
        "web-1",
        "web-2",
        "web-10",
    ]


def test_the_table_on_a_terminal_is_styled_and_plain_elsewhere():
    rows = [row_for(), unreachable("h2", "Connection refused")]
    styled = report.table(rows, terminal=True)
    assert "\x1b[" in styled and "\x1b[" not in report.table(rows)
    assert "unreachable" in styled and "Connection refused" in styled


def test_json_has_stable_keys():
    document = json.loads(report.as_json([row_for()]))
    host = document["hosts"][0]
    for key in ("host", "verdict", "reason", "conntrack_count", "conntrack_max", "usage_percent",
                "buckets", "entries_per_bucket_at_max", "drop", "early_drop", "insert_failed",
                "chaintoolong", "table_full_lines", "table_full_last", "drift_count", "drift",
                "qdisc", "qdisc_planned", "firewalld", "neighbours"):  # fmt: skip
        assert key in host


def test_prometheus_parses_and_keeps_last_success_of_unreachable_hosts(tmp_path):
    previous = tmp_path / "conntune.prom"
    report.write_atomically(
        previous, 'conntune_last_audit_success_timestamp_seconds{host="h\\"2"} 1000\n'
    )
    rows = [row_for(stats={"drop": 3, "entries": 10}), unreachable('h"2', "timed out")]
    text = metrics.textfile(rows, previous=previous, now=2000)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert samples[("conntune_host_up", (("host", 'h"2'),))] == 0
    assert samples[("conntune_last_audit_success_timestamp_seconds", (("host", "h1"),))] == 2000
    assert samples[("conntune_last_audit_success_timestamp_seconds", (("host", 'h"2'),))] == 1000
    assert samples[("conntune_conntrack_max", (("host", "h1"),))] == 65536
    assert families["conntune_conntrack_drop"].type == "counter"
    assert samples[("conntune_conntrack_drop_total", (("host", "h1"),))] == 3


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x" / "report.json"
    report.write_atomically(target, "one")
    report.write_atomically(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize(
    ("every", "calendar"),
    [
        ("15m", "*-*-* *:00/15:00"),
        ("1h", "*-*-* 00/1:00:00"),
        ("6h", "*-*-* 00/6:00:00"),
        ("1d", "*-*-* 00:00:00"),
        ("30min", "*-*-* *:00/30:00"),
    ],
)
def test_on_calendar(every, calendar):
    assert on_calendar(parse_duration(every)) == calendar


@pytest.mark.parametrize("every", ["7m", "5h", "2d", "0m", "soon"])
def test_bad_periods(every):
    with pytest.raises(ValueError):
        on_calendar(parse_duration(every))


def test_schedule_units(tmp_path):
    schedule = Schedule(
        inventory=tmp_path / "fleet.py",
        every="1h",
        check=False,
        user=False,
        command=("/usr/local/bin/conntune",),
        workdir=tmp_path,
        state_dir=Path("/var/lib/conntune"),
        metrics_file=Path("/var/lib/node_exporter/textfile_collector/c.prom"),
    )
    units = schedule.units()
    service, timer = units[f"{schedule.name}.service"], units[f"{schedule.name}.timer"]
    assert f"ExecStart=/usr/local/bin/conntune reconcile {tmp_path}/fleet.py --report" in service
    assert "--prometheus /var/lib/node_exporter/textfile_collector/c.prom" in service
    assert "Persistent=true" in timer and "RandomizedDelaySec=360" in timer


def test_lock_refuses_a_second_reconcile(tmp_path, monkeypatch):
    monkeypatch.setenv("CONNTUNE_LOCK_DIR", str(tmp_path))
    inventory = str(tmp_path / "fleet.py")
    with fleet.inventory_lock(inventory):
        other = subprocess.run(
            [sys.executable, "-c",
             "import sys; from conntune import fleet\n"
             "try:\n    fleet.inventory_lock(sys.argv[1]).__enter__()\n"
             "except fleet.Locked as e:\n    print(e); sys.exit(75)", inventory],
            capture_output=True, text=True, env={"CONNTUNE_LOCK_DIR": str(tmp_path),
                                                 "PATH": "/usr/bin:/bin"}, timeout=60,
        )  # fmt: skip
        assert other.returncode == 75, other.stderr
        assert "another conntune reconcile" in other.stdout
    # released: the next one gets it
    with fleet.inventory_lock(inventory):
        pass


def test_a_refused_host_is_failed_in_a_check_not_converged():
    from conntune.audit import HostAudit
    from conntune.fleet import HostResult, Reconciliation, describe

    refused = HostAudit("web2", "refused", "settings refused: cake_bandwidth: 'fast' is not a rate",
                        error="cake_bandwidth: 'fast' is not a rate")  # fmt: skip
    fine = HostAudit("web1", "ok", "table 1 % full")
    results = [HostResult("web1", fine), HostResult("web2", refused)]
    run = Reconciliation("fleet.py", True, 0.0, finished=1.0, results=results, exit_code=3)
    text = describe(run)
    assert "(2 hosts: 1 failed, 1 converged;" in text
    assert "web2: FAILED: cake_bandwidth: 'fast' is not a rate" in text
    assert text.index("web2") < text.index("web1: converged")  # worst first
