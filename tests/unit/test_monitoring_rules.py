"""
monitoring/conntune.rules.yml: `promtool check rules` passes, the promtool unit tests in
tests/monitoring/ pass (every alert fires on what should fire it, near misses stay silent), and
the rules only use metrics conntune writes, with the audit's own thresholds.

promtool comes from Debian's `prometheus` package (scripts/test.sh installs it): without it
these tests are skipped here, and fail when CI is set.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from conntune import audit
from tests.prometheus_support import (
    METRIC_NAME,
    MONITORING_README,
    RECORDED_NAME,
    REPO,
    RULE_TESTS,
    RULES,
    alert_rules,
    debian_tool,
    exposed_sample_names,
    recorded_names,
    rule_groups,
    written_metric_names,
)

SEVERITIES = {"info", "warning", "critical"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [debian_tool("promtool"), *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(group["rules"]) for group in rule_groups())
    assert f"SUCCESS: {count} rules found" in result.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(test_file):
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _unit_tests() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in RULE_TESTS]


# the labels that tell one alerting thing from another (a host, a CAKE tin, a textfile)
IDENTITY = ("host", "interface", "tin", "file", "instance")


def _identity(labels: dict[str, str]) -> tuple:
    return tuple(labels.get(key) for key in IDENTITY)


def test_every_alert_fires_in_a_unit_test_and_has_a_near_miss():
    """Each alert is expected to fire somewhere, and to stay silent somewhere: an evaluation
    that expects no alert, or an input series (host, tin, file) it does not expect to alert."""
    fires, silent = set(), set()
    for document in _unit_tests():
        for case in document["tests"]:
            inputs = {
                _identity(dict(re.findall(r'(\w+)="([^"]*)"', series["series"])))
                for series in case.get("input_series", [])
            }
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                fired = {_identity(alert["exp_labels"]) for alert in expected}
                if expected:
                    fires.add(check["alertname"])
                if not expected or inputs - fired:
                    silent.add(check["alertname"])
    alerts = set(alert_rules())
    assert alerts - fires == set(), "alerts no unit test sees firing"
    assert alerts - silent == set(), "alerts no unit test checks silent on a near miss"
    assert len(RULE_TESTS) >= 4


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_alert_has_severity_summary_description_and_runbook(name):
    rule = alert_rules()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook"}
    # the host, or for the controller's own textfile the node-exporter that serves it
    where = "$labels.instance" if "node_textfile_mtime_seconds" in rule["expr"] else "$labels.host"
    assert where in annotations["summary"] and where in annotations["description"]
    assert "$value" in annotations["description"]
    assert "conntune " in annotations["runbook"] or "conntune-reconcile" in annotations["runbook"]


def test_rules_use_only_metrics_conntune_writes():
    written, recorded = written_metric_names(), recorded_names()
    for group in rule_groups():
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            assert set(METRIC_NAME.findall(rule["expr"])) <= written, name
            assert set(RECORDED_NAME.findall(rule["expr"])) - {rule.get("record")} <= recorded, name


def test_counters_are_exposed_with_the_total_suffix():
    """The names the rules and the dashboard are checked against are the ones a scraper reads."""
    assert exposed_sample_names() == written_metric_names()
    assert "conntune_conntrack_drop_total" in exposed_sample_names()
    assert "conntune_conntrack_drop" not in exposed_sample_names()


def test_usage_thresholds_are_the_audits():
    """75 % (node-exporter mixin), 90 % (Netdata warns), 95 % (Netdata critical), `>=` as the
    audit's verdict (74.9 % is not at risk)."""
    rules = alert_rules()
    at_risk, warning, critical = audit.AT_RISK / 100, audit.WARNING / 100, audit.CRITICAL / 100
    assert rules["ConntuneConntrackTableFilling"]["expr"] == (
        f"conntune_conntrack_usage_ratio >= {at_risk} < {critical}"
    )
    assert (
        f"ge $value {warning}"
        in rules["ConntuneConntrackTableFilling"]["annotations"]["description"]
    )
    assert rules["ConntuneConntrackTableNearlyFull"]["expr"] == (
        f"conntune_conntrack_usage_ratio >= {critical}"
    )


def test_every_alert_is_in_the_monitoring_readme():
    text = MONITORING_README.read_text()
    missing = [name for name in alert_rules() if f"`{name}`" not in text]
    assert missing == []
