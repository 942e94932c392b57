"""
Diagnosis of one host from its reading and its plan: the figures an SRE reads to tell whether
conntrack is the problem, and a verdict in words. Pure Python (the CLI renders it).

Thresholds (domain.md §7): usage >= 75 % is at risk (node-exporter mixin alert), >= 90 %
warning and >= 95 % critical (Netdata); any table-full log line or ``drop`` > 0 is dropping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from conntune.changes import Change, describe_qdisc, drift
from conntune.hostfacts import HostFacts
from conntune.policy import plan
from conntune.settings import InvalidSettings, settings_from_data
from facts import parse

AT_RISK = 75.0
WARNING = 90.0
CRITICAL = 95.0

OK, DRIFT, AT_RISK_VERDICT, DROPPING, UNREACHABLE, REFUSED = (
    "ok",
    "drift",
    "at risk",
    "dropping",
    "unreachable",
    "refused",
)
# worst first: the fleet summary and exit codes rank by this
SEVERITY = [UNREACHABLE, DROPPING, AT_RISK_VERDICT, REFUSED, DRIFT, OK]


@dataclass
class HostAudit:
    """One host's row. Field names are the stable keys of ``conntune audit --json``."""

    host: str
    verdict: str
    reason: str
    error: str | None = None
    kernel: str | None = None
    mem_bytes: int | None = None
    cpus: int | None = None
    conntrack_count: int | None = None
    conntrack_max: int | None = None
    usage_percent: float | None = None
    buckets: int | None = None
    entries_per_bucket_at_max: float | None = None
    drop: int | None = None
    early_drop: int | None = None
    insert_failed: int | None = None
    chaintoolong: int | None = None
    table_full_lines: int = 0
    table_full_last: str | None = None
    drift_count: int = 0
    drift: list[str] = field(default_factory=list)
    qdisc_interface: str | None = None
    qdisc: str | None = None
    qdisc_drops: int | None = None
    qdisc_planned: str | None = None
    firewalld: str | None = None
    neighbours: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def unreachable(host: str, error: str) -> HostAudit:
    return HostAudit(host=host, verdict=UNREACHABLE, reason=error, error=error)


def audit_host(host: str, facts: HostFacts, data: dict) -> HostAudit:
    """Audit one host: its figures, its drift from the plan its data asks for, a verdict."""
    row = HostAudit(host=host, verdict=OK, reason="")
    row.kernel, row.mem_bytes, row.cpus = facts.kernel, facts.mem_bytes, facts.cpus
    row.conntrack_count, row.conntrack_max = facts.conntrack_count, facts.conntrack_max
    if row.conntrack_count is not None and row.conntrack_max:
        row.usage_percent = round(100 * row.conntrack_count / row.conntrack_max, 1)
    row.buckets = facts.buckets
    if row.buckets and row.conntrack_max:
        row.entries_per_bucket_at_max = round(row.conntrack_max / row.buckets, 2)
    stats = facts.stats
    row.drop, row.early_drop = stats.get("drop"), stats.get("early_drop")
    row.insert_failed = stats.get("insert_failed")
    # /proc/net/stat prints the chaintoolong counter under the header "chainlength" (5.15+)
    row.chaintoolong = stats.get("chaintoolong", stats.get("chainlength"))
    log = "\n".join(facts.table_full_lines)
    row.table_full_lines = parse.table_full_events(log)
    row.table_full_last = parse.last_table_full_time(log)
    fw = facts.firewalld
    row.firewalld = "not installed" if not fw.installed else ("active" if fw.active else "inactive")
    row.neighbours = [
        name
        for name, present in (
            (f"docker ({facts.docker_version})", facts.docker_version),
            ("kube-proxy", facts.kube_proxy),
            ("cilium", facts.cilium),
        )
        if present
    ]
    row.warnings = list(facts.unreadable)

    changes: list[Change] = []
    try:
        desired = plan(facts, settings_from_data(data))
    except InvalidSettings as refused:
        row.error = str(refused)
        desired = None
    if desired is not None:
        changes = drift(facts, desired)
        row.warnings += desired.warnings
        row.qdisc_interface = desired.cake.interface if desired.cake else facts.default_iface
        if desired.cake:
            row.qdisc_planned = f"cake {desired.cake.rate} {desired.cake.diffserv}"
    else:
        row.qdisc_interface = facts.default_iface
    if row.qdisc_interface:
        qdisc = facts.root_qdisc(row.qdisc_interface)
        row.qdisc = describe_qdisc(qdisc)
        row.qdisc_drops = qdisc.get("drops") if qdisc else None
    row.drift = [str(change) for change in changes]
    row.drift_count = len(changes)
    row.verdict, row.reason = _verdict(row)
    return row


def _verdict(row: HostAudit) -> tuple[str, str]:
    if row.table_full_lines or (row.drop or 0) > 0:
        reasons = []
        if row.table_full_lines:
            reasons.append(
                f"{row.table_full_lines} 'table full' kernel-log lines"
                + (f" (newest {row.table_full_last})" if row.table_full_last else "")
            )
        if row.drop:
            reasons.append(f"{row.drop} packets dropped by conntrack since boot")
        return DROPPING, "; ".join(reasons)
    usage = (
        100 * row.conntrack_count / row.conntrack_max
        if row.conntrack_count is not None and row.conntrack_max
        else None
    )  # unrounded: 74.99 % is not at risk
    if usage is not None and usage >= AT_RISK:
        level = "critical" if usage >= CRITICAL else "warning" if usage >= WARNING else "at risk"
        return AT_RISK_VERDICT, (
            f"table {usage:.0f} % full ({row.conntrack_count}/{row.conntrack_max}), {level}"
        )
    if row.error:
        return REFUSED, f"settings refused: {row.error}"
    if row.drift_count:
        return DRIFT, f"{row.drift_count} settings differ from the plan"
    usage_text = f"table {usage:.0f} % full" if usage is not None else "conntrack not loaded"
    return OK, f"{usage_text}, no drift"


def fleet_summary(rows: list[HostAudit]) -> str:
    counts = {verdict: 0 for verdict in SEVERITY}
    for row in rows:
        counts[row.verdict] += 1
    parts = [f"{counts[v]} {v}" for v in SEVERITY if counts[v]]
    return f"{len(rows)} hosts: " + ", ".join(parts)
