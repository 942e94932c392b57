"""
Diagnosis of one host from its reading and its plan: the figures an SRE reads to tell whether
conntrack is the problem, and a verdict in words. Pure Python (the CLI renders it).

Verdicts, worst first (``SEVERITY``):

- **unreachable**: the host could not be read.
- **dropping**: the kernel dropped packets for conntrack since boot: "table full" kernel-log lines,
  ``drop`` (table full), ``insert_failed`` (two entries for one tuple raced to be confirmed, or,
  since 5.15, a chain-too-long insert: the classic 5 s DNS delay of NAT'd containers,
  kubernetes#56903) or ``chaintoolong`` (a hash chain too long: too few buckets).
- **at risk**: the table is filling (usage >= 75 %, node-exporter's mixin alert; "warning" >= 90 %,
  "critical" >= 95 %, Netdata's), ``early_drop`` > 0 (entries evicted to make room: the table
  was full), or nf_conntrack's module options break its next load (an option the kernel
  refuses, or the hash size given twice).
- **refused**: the host's settings are invalid.
- **drift**: settings differ from the plan.
- **ok**.

Counters a host cannot give (no /proc/net/stat/nf_conntrack and no ``conntrack -S``) are
"unknown", never 0; ``sources`` says where each figure came from (docs/kernel-facts.md §7, §8).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from natsort import natsort_keygen

from conntune.cake import SINGLE_INSTANCE_LIMIT_BIT
from conntune.changes import Change, drift
from conntune.conflicts import broken_module_options, hashsize_doubled
from conntune.hostfacts import HostFacts
from conntune.policy import plan
from conntune.settings import InvalidSettings, settings_from_data
from conntune.units import format_rate

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
# hosts in the order people number them: web-2 before web-10
BY_HOST = natsort_keygen()


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
    qdisc_kind: str | None = None
    qdisc_bandwidth_bit: int | None = None  # CAKE's shaped rate; 0: unlimited
    qdisc_drops: int | None = None
    qdisc_planned: str | None = None
    # the CAKE tins' statistics (conntune.qdisc.CakeTin fields), as tc -s reports them
    cake_tins: list[dict] = field(default_factory=list)
    firewalld: str | None = None
    neighbours: list[str] = field(default_factory=list)
    broken_config: list[str] = field(default_factory=list)
    # drops since conntune last changed the live values (its record on the host), or None when
    # there is no record: the verdict then counts since boot
    since_change: dict[str, int] | None = None
    # where each figure came from (None: unknown on this host, with what to install)
    sources: dict[str, str | None] = field(default_factory=dict)
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
    row.chaintoolong = stats.get("chaintoolong")
    row.table_full_lines = len(facts.table_full_lines)
    row.table_full_last = facts.table_full_last
    row.since_change = _since_change(facts, row)
    fw = facts.firewalld
    row.firewalld = "not installed" if not fw.installed else ("active" if fw.active else "inactive")
    docker = facts.docker
    row.neighbours = [
        name
        for name, present in (
            (f"docker ({docker.version_text if docker else ''})", docker is not None),
            ("kube-proxy", facts.kube_proxy),
            ("cilium", facts.cilium),
        )
        if present
    ]
    row.warnings = list(facts.unreadable)
    row.broken_config = [f"{line}: {line.problem}" for line in broken_module_options(facts)]
    row.broken_config += [
        f"{why}: the hash size reaches the kernel twice, which has crashed kernels (2045cdfa1b40)"
        for why in hashsize_doubled(facts)
    ]
    row.sources = _sources(facts)

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
            row.qdisc_planned = desired.cake.describe()
    else:
        row.qdisc_interface = facts.default_iface
    if row.qdisc_interface:
        qdisc = facts.root_qdisc(row.qdisc_interface)
        row.qdisc = qdisc.describe() if qdisc else "none"
        if qdisc is not None:
            row.qdisc_kind, row.qdisc_drops = qdisc.kind, qdisc.drops
            if qdisc.cake is not None:
                row.qdisc_bandwidth_bit = qdisc.cake.bandwidth_bit or 0
            row.cake_tins = [asdict(tin) for tin in qdisc.tins]
    row.drift = [str(change) for change in changes]
    row.drift_count = len(changes)
    row.verdict, row.reason = _verdict(row)
    return row


STATS_PACKAGE = "conntrack (Debian/Ubuntu; conntrack-tools on RHEL/SUSE)"


def _sources(facts: HostFacts) -> dict[str, str | None]:
    stats = facts.stats.source
    missing = None if stats else f"unknown: no /proc/net/stat/nf_conntrack, install {STATS_PACKAGE}"
    return {
        "conntrack_count": "sysctl net.netfilter.nf_conntrack_count",
        "conntrack_max": "sysctl net.netfilter.nf_conntrack_max",
        "buckets": "/sys/module/nf_conntrack/parameters/hashsize"
        if facts.hashsize is not None
        else "sysctl net.netfilter.nf_conntrack_buckets",
        "drop": stats or missing,
        "early_drop": stats or missing,
        "insert_failed": stats or missing,
        "chaintoolong": stats or missing,
        "table_full_lines": "dmesg" if facts.table_full_readable else "unknown: dmesg needs root",
        "qdisc": "tc -j -s qdisc show" if facts.qdiscs is not None else "unknown: no tc -j",
    }


# each drop counter the verdict names, and what it counted
_DROPS = {
    "drop": "{n} packets dropped by conntrack since boot (the table was full)",
    "insert_failed": "{n} packets dropped at insert since boot (two entries for one tuple raced: "
    "NAT/DNS clashes, kubernetes#56903; or a hash chain too long)",
    "chaintoolong": "{n} inserts refused on a too-long hash chain since boot (too few buckets)",
}


def _since_change(facts: HostFacts, row: HostAudit) -> dict[str, int] | None:
    """
    Each drop counter since conntune's last change of the live values. A boot id other than
    the recorded one, or any counter below its record, means they all started again since (a
    reboot, nf_conntrack loaded again, the kernel log wrapped): all of each is newer.
    """
    baseline = facts.counters_at_change
    if baseline is None or facts.stats.source is None:
        return None
    # the counters start at 0 at boot: after a reboot every count is newer than the change,
    # even one that has climbed back above its record (the boot ids tell; records without one
    # fall back to "below its record")
    rebooted = None not in (facts.boot_id, facts.boot_id_at_change) and (
        facts.boot_id != facts.boot_id_at_change
    )
    names = (*_DROPS, "early_drop")
    pairs = {name: (getattr(row, name), baseline.get(name)) for name in names}
    # the counters are one per-CPU block, zeroed at boot and when nf_conntrack is loaded again
    # (a firewalld restart that unloads it): one counter below its record means all restarted
    reset = rebooted or any(
        now is not None and then is not None and now < then for now, then in pairs.values()
    )
    since = {}
    for name, (now, then) in pairs.items():
        if now is not None:
            since[name] = now - then if then is not None and not reset else now
    # the kernel log is a ring of its own: it starts again at boot, or wraps
    lines, then = row.table_full_lines, facts.table_full_at_change
    fresh = rebooted or then is None or lines < then
    since["table_full_lines"] = lines if fresh else lines - then
    return since


def _verdict(row: HostAudit) -> tuple[str, str]:
    counted = row.since_change or {}
    when = " since conntune's last change" if row.since_change is not None else " since boot"
    dropped = []
    lines = counted.get("table_full_lines", row.table_full_lines)
    if lines:
        dropped.append(
            f"{lines} 'table full' kernel-log lines"
            + (f" (newest {row.table_full_last})" if row.table_full_last else "")
        )
    for name, meaning in _DROPS.items():
        value = counted.get(name, getattr(row, name))
        if value:
            text = meaning.format(n=value).replace(" since boot", when)
            dropped.append(f"{name} {value}: {text}")
    if dropped:
        return DROPPING, "; ".join(dropped)
    before = {name: getattr(row, name) for name in _DROPS if getattr(row, name)}
    history = (
        " (before conntune's last change: " + ", ".join(f"{k} {v}" for k, v in before.items())
        + "; none since)" if before and row.since_change is not None else ""
    )  # fmt: skip
    usage = (
        100 * row.conntrack_count / row.conntrack_max
        if row.conntrack_count is not None and row.conntrack_max
        else None
    )  # unrounded: 74.99 % is not at risk
    risks = []
    if usage is not None and usage >= AT_RISK:
        level = "critical" if usage >= CRITICAL else "warning" if usage >= WARNING else "at risk"
        risks.append(
            f"table {usage:.0f} % full ({row.conntrack_count}/{row.conntrack_max}), {level}"
        )
    early_drop = counted.get("early_drop", row.early_drop)
    if early_drop:
        risks.append(
            f"early_drop {early_drop}{when}: entries evicted to make room (the table was full)"
        )
    if row.broken_config:
        risks.append(
            "nf_conntrack's module options break its next load (it fails, or the hash size is "
            "given twice): " + "; ".join(row.broken_config)
        )
    shaped = row.qdisc_bandwidth_bit or 0
    # a single CAKE above what one instance shapes, and not conntune's choice
    # (cake_force_single_queue plans it): someone's recipe caps the host
    if row.qdisc_kind == "cake" and shaped > SINGLE_INSTANCE_LIMIT_BIT and not row.qdisc_planned:
        risks.append(
            f"one CAKE instance shapes {row.qdisc_interface} at {format_rate(shaped)}: above "
            f"{format_rate(SINGLE_INSTANCE_LIMIT_BIT)} it is CPU-bound and caps the host's "
            "throughput below that (the blog's recipe on a fast NIC?); `tc qdisc del dev "
            f"{row.qdisc_interface} root` restores the default"
        )
    if risks:
        return AT_RISK_VERDICT, "; ".join(risks)
    unknown = "" if row.drop is not None else f"; drop counters unknown (install {STATS_PACKAGE})"
    if row.error:
        return REFUSED, f"settings refused: {row.error}{unknown}"
    if row.drift_count:
        return DRIFT, f"{row.drift_count} settings differ from the plan{unknown}"
    if row.conntrack_max == 0:
        usage_text = "no table limit (nf_conntrack_max 0)"
    else:
        usage_text = f"table {usage:.0f} % full" if usage is not None else "conntrack not loaded"
    return OK, f"{usage_text}, no drift{history}{unknown}"


def fleet_summary(rows: list[HostAudit]) -> str:
    counts = {verdict: 0 for verdict in SEVERITY}
    for row in rows:
        counts[row.verdict] += 1
    parts = [f"{counts[v]} {v}" for v in SEVERITY if counts[v]]
    return f"{len(rows)} hosts: " + ", ".join(parts)
