"""
What the monitoring tests share: the shipped rules and dashboard, the metric names conntune
writes, and Debian's Prometheus tools (skipped when missing here, a failure when CI is set).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conntune import metrics
from conntune.audit import HostAudit

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "conntune.rules.yml"
DASHBOARD = REPO / "monitoring" / "conntune-dashboard.json"
MONITORING_README = REPO / "monitoring" / "README.md"
RULE_TESTS = sorted((REPO / "tests" / "monitoring").glob("*.test.yml"))

# a conntune metric name in a PromQL expression, and a recording rule of ours
METRIC_NAME = re.compile(r"\bconntune_[a-z0-9_]+\b")
RECORDED_NAME = re.compile(r"\bconntune:[a-zA-Z0-9_:]+")

# binary -> the Debian package that ships it (scripts/test.sh installs them)
DEBIAN_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-node-exporter": "prometheus-node-exporter",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def debian_tool(name: str) -> str:
    """The path of a Prometheus tool; skips the test without it, fails it when CI is set."""
    found = shutil.which(name)
    if found:
        return found
    message = (
        f"{name} is not installed (Debian package {DEBIAN_PACKAGES[name]}; "
        "scripts/test.sh installs it)"
    )
    if in_ci():
        pytest.fail(f"{message}: CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alert_rules() -> dict[str, dict]:
    return {rule["alert"]: rule for g in rule_groups() for rule in g["rules"] if "alert" in rule}


def recorded_names() -> set[str]:
    return {rule["record"] for g in rule_groups() for rule in g["rules"] if "record" in rule}


def _full_audit() -> HostAudit:
    """A host row with every figure conntune can write, CAKE tins included."""
    tin = {attribute: 1 for *_, attribute in metrics.TIN_METRICS}
    return HostAudit(
        host="h", verdict="ok", reason="", conntrack_count=1, conntrack_max=2, usage_percent=50.0,
        buckets=2, drop=1, early_drop=1, insert_failed=1, chaintoolong=1, table_full_lines=1,
        drift_count=1, qdisc_interface="eth0", qdisc_kind="cake", qdisc_bandwidth_bit=10**7,
        qdisc_drops=1, cake_tins=[{**tin, "name": "besteffort"}],
        sources={"drop": "/proc/net/stat/nf_conntrack"},
    )  # fmt: skip


def written_metric_names() -> set[str]:
    """
    Every metric name conntune's textfile can hold, as node-exporter and Prometheus see it:
    the declared host and tin metrics (counters exposed with the ``_total`` suffix), and every
    family the real textfile declares (``# TYPE`` lines, written even without samples).
    """
    declared = {
        name + ("_total" if kind == "counter" else "")
        for name, kind, *_ in (*metrics.HOST_METRICS, *metrics.TIN_METRICS)
    }
    text = metrics.textfile([_full_audit()], now=0)
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return declared | typed | {metrics.LAST_SUCCESS}


def exposed_sample_names() -> set[str]:
    """The sample names of a textfile with every figure, parsed as a scraper parses them."""
    text = metrics.textfile([_full_audit()], now=0)
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
