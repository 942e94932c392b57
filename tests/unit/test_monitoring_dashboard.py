"""
monitoring/conntune-dashboard.json: a Grafana 9/10 dashboard whose every query parses
(`promtool check rules` on the queries as recording rules), uses only metrics conntune writes,
and is filtered by the `host` variable; every panel says what question it answers.

The parse check needs promtool (Debian's `prometheus` package, installed by scripts/test.sh):
skipped without it here, a failure when CI is set.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.prometheus_support import (
    DASHBOARD,
    METRIC_NAME,
    MONITORING_README,
    RECORDED_NAME,
    debian_tool,
    recorded_names,
    written_metric_names,
)

# a selector of a conntune metric: its name and its {matchers}, if any
SELECTOR = re.compile(r"\b(conntune_[a-z0-9_]+)\b(\{[^}]*\})?")
HOST_MATCHER = 'host=~"$host"'
# what Grafana puts in place of the variables, for promtool
VARIABLES = {
    "$host": ".*",
    "$window": "75m",
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    """Every panel that shows data (rows' nested panels included, rows themselves not)."""
    found = []
    for panel in dashboard()["panels"]:
        found += panel.get("panels", [])
        if panel["type"] != "row":
            found.append(panel)
    return found


def queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]


def substituted(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace("${" + variable[1:] + "}", value).replace(variable, value)
    return expr


def test_dashboard_imports_into_grafana_9_and_10():
    board = dashboard()
    assert board["schemaVersion"] >= 36  # Grafana 9.0; Grafana 10 migrates it on load
    assert board["uid"] and board["title"]
    assert "id" not in board or board["id"] is None  # an import gets its own id
    ids = [panel["id"] for panel in board["panels"]] + [
        nested["id"] for panel in board["panels"] for nested in panel.get("panels", [])
    ]
    assert len(ids) == len(set(ids))
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    host = variables["host"]
    assert host["type"] == "query"
    assert host["definition"] == "label_values(conntune_host_up, host)"
    # a string: Grafana 9.0-9.3 read that form, later ones convert it
    assert host["query"] == "label_values(conntune_host_up, host)"
    assert host["multi"] and host["includeAll"]
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_every_panel_says_what_question_it_answers():
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert "?" in panel["description"], panel["title"]
        assert len(panel["description"]) > 60, panel["title"]


def test_the_dashboard_has_the_panels_the_readme_describes():
    """conntrack usage, drops by reason, entries per bucket, drift, CAKE throughput per tin,
    CAKE drops and delay; each panel is described in monitoring/README.md."""
    exprs = "\n".join(expr for _, expr in queries())
    for needed in (
        "conntune_conntrack_usage_ratio",
        "rate(conntune_conntrack_drop_total",
        "rate(conntune_conntrack_insert_failed_total",
        "rate(conntune_conntrack_early_drop_total",
        "rate(conntune_conntrack_chaintoolong_total",
        "conntune_conntrack_max{" + HOST_MATCHER + "} / conntune_conntrack_buckets",
        "conntune_drift_settings",
        "rate(conntune_cake_tin_sent_bytes_total{" + HOST_MATCHER + "}[$window]) * 8",
        "rate(conntune_cake_tin_drops_total",
        "conntune_cake_tin_avg_delay_seconds",
        "conntune_cake_tin_target_delay_seconds",
    ):
        assert needed in exprs, needed
    readme = MONITORING_README.read_text()
    assert [p["title"] for p in panels() if f"**{p['title']}**" not in readme] == []


def test_every_query_uses_the_host_variable_on_every_selector():
    for title, expr in queries():
        selectors = SELECTOR.findall(expr)
        assert selectors, f"{title}: no conntune metric in {expr!r}"
        for name, matchers in selectors:
            assert HOST_MATCHER in matchers, f"{title}: {name} is not filtered by $host"


def test_every_metric_is_one_conntune_writes():
    written, recorded = written_metric_names(), recorded_names()
    for title, expr in queries():
        assert set(METRIC_NAME.findall(expr)) <= written, title
        assert set(RECORDED_NAME.findall(expr)) <= recorded, title
    host = next(var for var in dashboard()["templating"]["list"] if var["name"] == "host")
    assert set(METRIC_NAME.findall(host["definition"])) <= written


def test_every_query_parses(tmp_path):
    """Each query, variables replaced as Grafana would, as a recording rule for promtool."""
    rules = []
    for number, (title, expr) in enumerate(queries()):
        concrete = substituted(expr)
        assert "$" not in concrete, f"{title}: unknown variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{number}", "expr": concrete})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [debian_tool("promtool"), "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize(
    "broken", ['rate(conntune_conntrack_drop_total{host=~".*"}[75m]', "conntune_host_up +"]
)
def test_the_parse_check_catches_a_broken_query(tmp_path, broken):
    path = tmp_path / "broken.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "b", "rules": [
        {"record": "dashboard:broken", "expr": broken}]}]}))  # fmt: skip
    result = subprocess.run(
        [debian_tool("promtool"), "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
