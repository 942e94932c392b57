"""
Prometheus metrics of an audit, for node-exporter's textfile collector
(``conntune audit --prometheus FILE``, ``conntune reconcile --prometheus FILE``).

Rendered with prometheus_client. Every sample has a ``host`` label. A figure conntune could not
read (e.g. conntrack counters on a kernel without /proc/net/stat/nf_conntrack and without
conntrack-tools) has no sample at all, never a 0; ``conntune_conntrack_stats_available`` says
which hosts those are. CAKE figures are per tin, with the names ``conntune watch`` shows.
monitoring/conntune.rules.yml alerts on these; monitoring/conntune-dashboard.json graphs them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from conntune.audit import UNREACHABLE, HostAudit

# (name, type, help, the HostAudit field it comes from); counters get "_total" when rendered
HOST_METRICS = [
    ("conntune_conntrack_entries", "gauge", "nf_conntrack_count", "conntrack_count"),
    ("conntune_conntrack_max", "gauge", "nf_conntrack_max", "conntrack_max"),
    ("conntune_conntrack_buckets", "gauge", "conntrack hash table buckets", "buckets"),
    ("conntune_conntrack_drop", "counter",
     "packets dropped by conntrack since boot (table full)", "drop"),
    ("conntune_conntrack_early_drop", "counter",
     "entries evicted to make room since boot (table full)", "early_drop"),
    ("conntune_conntrack_insert_failed", "counter",
     "packets dropped at insert since boot (tuple clash or chain too long)", "insert_failed"),
    ("conntune_conntrack_chaintoolong", "counter",
     "inserts refused on a too-long hash chain since boot", "chaintoolong"),
    ("conntune_table_full_log_lines", "gauge",
     "conntrack 'table full' lines in the kernel log", "table_full_lines"),
    ("conntune_drift_settings", "gauge",
     "settings that differ from the conntune plan", "drift_count"),
]  # fmt: skip
# (name, type, help, the CakeTin field) per tin of the CAKE qdisc on the shaped interface
TIN_METRICS = [
    ("conntune_cake_tin_sent_bytes", "counter",
     "bytes offered to the tin (sch_cake counts them at enqueue)", "sent_bytes"),
    ("conntune_cake_tin_sent_packets", "counter", "packets offered to the tin", "sent_packets"),
    ("conntune_cake_tin_drops", "counter", "packets the tin dropped", "drops"),
    ("conntune_cake_tin_ecn_marks", "counter", "packets the tin ECN-marked", "ecn_mark"),
    ("conntune_cake_tin_backlog_bytes", "gauge", "bytes queued in the tin", "backlog_bytes"),
    ("conntune_cake_tin_peak_delay_seconds", "gauge", "the tin's peak delay", "peak_delay_us"),
    ("conntune_cake_tin_avg_delay_seconds", "gauge", "the tin's average delay", "avg_delay_us"),
    ("conntune_cake_tin_sparse_delay_seconds", "gauge",
     "the tin's sparse-flow delay (tc: sp_delay)", "base_delay_us"),
    ("conntune_cake_tin_target_delay_seconds", "gauge", "CoDel's target delay for the tin",
     "target_us"),
    ("conntune_cake_tin_sparse_flows", "gauge", "sparse flows in the tin", "sparse_flows"),
    ("conntune_cake_tin_bulk_flows", "gauge", "bulk flows in the tin", "bulk_flows"),
    ("conntune_cake_tin_unresponsive_flows", "gauge",
     "flows that ignore congestion signals", "unresponsive_flows"),
]  # fmt: skip
LAST_SUCCESS = "conntune_last_audit_success_timestamp_seconds"


def _family(name: str, kind: str, help_text: str, labels: list[str]) -> Metric:
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def previous_success(path: Path | None) -> dict[str, float]:
    """Last-success times in a previous metrics file, kept for hosts that fail this time."""
    try:
        text = path.read_text() if path else ""
    except OSError:
        return {}
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == LAST_SUCCESS:
            found.update({s.labels["host"]: s.value for s in family.samples})
    return found


class _AuditCollector:
    def __init__(self, rows: list[HostAudit], previous: dict[str, float], now: float) -> None:
        self.rows, self.previous, self.now = rows, previous, now

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("conntune_host_up", "1 when conntune could read the host",
                               labels=["host"])  # fmt: skip
        verdict = GaugeMetricFamily(
            "conntune_verdict", "1 for the host's audit verdict (worst first: unreachable, "
            "dropping, at risk, refused, drift, ok)", labels=["host", "verdict"],
        )  # fmt: skip
        usage = GaugeMetricFamily(
            "conntune_conntrack_usage_ratio", "nf_conntrack_count / nf_conntrack_max",
            labels=["host"],
        )  # fmt: skip
        stats = GaugeMetricFamily(
            "conntune_conntrack_stats_available",
            "1 when the drop counters could be read (/proc/net/stat/nf_conntrack or conntrack -S)",
            labels=["host", "source"],
        )  # fmt: skip
        success = GaugeMetricFamily(LAST_SUCCESS, "when conntune last read the host (unix time)",
                                    labels=["host"])  # fmt: skip
        families = {name: _family(name, kind, text, ["host"]) for name, kind, text, _ in
                    HOST_METRICS}  # fmt: skip
        qdisc_drops = CounterMetricFamily(
            "conntune_qdisc_drops", "packets the root qdisc of the shaped interface dropped",
            labels=["host", "interface", "kind"],
        )  # fmt: skip
        bandwidth = GaugeMetricFamily(
            "conntune_cake_bandwidth_bits_per_second", "the rate CAKE shapes to (0: unlimited)",
            labels=["host", "interface", "kind"],
        )  # fmt: skip
        tins = {name: _family(name, kind, text, ["host", "interface", "tin"])
                for name, kind, text, _ in TIN_METRICS}  # fmt: skip
        for row in self.rows:
            answered = row.verdict != UNREACHABLE
            up.add_metric([row.host], int(answered))
            verdict.add_metric([row.host, row.verdict], 1)
            if not answered:
                if row.host in self.previous:
                    success.add_metric([row.host], self.previous[row.host])
                continue
            success.add_metric([row.host], int(self.now))
            if row.conntrack_count is not None and row.conntrack_max:  # unrounded: 74.99 %
                usage.add_metric([row.host], row.conntrack_count / row.conntrack_max)
            source = row.sources.get("drop")
            known = row.drop is not None
            stats.add_metric([row.host, source if known and source else "none"], int(known))
            for name, _, _, attribute in HOST_METRICS:
                value = getattr(row, attribute)
                if value is not None:
                    families[name].add_metric([row.host], value)
            if row.qdisc_interface and row.qdisc_kind and row.qdisc_drops is not None:
                qdisc_drops.add_metric(
                    [row.host, row.qdisc_interface, row.qdisc_kind], row.qdisc_drops
                )
            if row.qdisc_interface and row.qdisc_bandwidth_bit is not None:
                bandwidth.add_metric(
                    [row.host, row.qdisc_interface, row.qdisc_kind or "cake"],
                    row.qdisc_bandwidth_bit,
                )
            for tin in row.cake_tins:
                for name, _, _, attribute in TIN_METRICS:
                    value = tin.get(attribute)
                    if value is None:
                        continue
                    if attribute.endswith("_us"):
                        value = value / 10**6
                    tins[name].add_metric([row.host, row.qdisc_interface, tin["name"]], value)
        yield from (up, verdict, usage, stats, success, *families.values(), qdisc_drops,
                    bandwidth, *tins.values())  # fmt: skip


def textfile(rows: list[HostAudit], previous: Path | None = None, now: float | None = None) -> str:
    """The node-exporter textfile of an audit; a host that does not answer keeps its last
    success time from ``previous`` (the file this one replaces)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _AuditCollector(rows, previous_success(previous), time.time() if now is None else now)
    )
    return generate_latest(registry).decode()
