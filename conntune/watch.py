"""
`conntune watch`: second-by-second conntrack pressure, churn and CAKE behaviour, as rates. Pure
Python: a sample's parser, the rates between two samples, what needs attention, and the order
of the hosts (worst first). conntune.terminal draws it; ``--json`` prints ``Screen.as_dict()``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from conntune.audit import AT_RISK, BY_HOST
from conntune.facts import parse, tc_json
from conntune.facts.reading import split_sections
from conntune.facts.sections import conntrack_stats
from conntune.qdisc import Qdisc

# Drops and table pressure, by the kernel's counter names
COUNTERS = ("drop", "insert_failed", "chaintoolong", "early_drop")
LOST = ("drop", "insert_failed", "chaintoolong")  # packets lost, not only pressure
# Churn: the kernel counted created and deleted entries in "new" and "delete"; current kernels
# print 0 in both columns (nf_conntrack_standalone.c, ct_cpu_seq_show), and conntrack -S has
# neither. Where they never move, the watch shows the net change of the entry count instead.
CHURN = ("new", "delete")


@dataclass
class Sample:
    at: float  # controller clock, seconds
    count: int | None = None
    max: int | None = None
    buckets: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    table_full: int = 0
    qdisc: Qdisc | None = None
    stats_source: str | None = None


def parse_sample(text: str, at: float) -> Sample:
    sections = split_sections(text)
    stats = conntrack_stats(sections)
    names = (*COUNTERS, *CHURN)
    counters = {name: value for name in names if (value := stats.get(name)) is not None}
    roots = [q for q in tc_json.qdiscs(sections.get("qdisc", "")) if q.root]
    return Sample(
        at=at,
        count=parse.int_or_none(sections.get("count")),
        max=parse.int_or_none(sections.get("max")),
        buckets=parse.int_or_none(sections.get("buckets")),
        counters=counters,
        table_full=parse.int_or_none(sections.get("tablefull")) or 0,
        qdisc=roots[0] if roots else None,
        stats_source=stats.source,
    )


@dataclass
class Tin:
    """One CAKE tin over the interval; the names are conntune.metrics' per-tin metrics."""

    name: str
    # sch_cake counts a tin's sent_bytes at enqueue (cake_enqueue: b->bytes += len), dropped
    # packets included: it is the load offered to the tin, not what left it
    offered_bit: float
    peak_delay_us: int | None
    avg_delay_us: int | None
    sparse_delay_us: int | None
    target_us: int | None
    sparse_flows: int | None
    bulk_flows: int | None
    unresponsive_flows: int | None
    backlog_bytes: int | None
    drops_per_s: float
    ecn_marks_per_s: float


@dataclass
class HostView:
    host: str
    stale: bool = False
    error: str | None = None
    interval_s: float | None = None
    count: int | None = None
    max: int | None = None
    usage_percent: float | None = None
    entries_per_bucket: float | None = None
    # per counter: per second over the interval; None: this host cannot give the counter
    per_second: dict[str, float | None] = field(default_factory=dict)
    stats_source: str | None = None
    # created / deleted entries per second where the kernel counts them, else None
    churn_new_per_s: float | None = None
    churn_deleted_per_s: float | None = None
    entries_change_per_s: float | None = None
    table_full_since_start: int = 0
    qdisc_kind: str | None = None
    qdisc_throughput_bit: float | None = None
    qdisc_backlog_bytes: int | None = None
    qdisc_drops_per_s: float | None = None
    qdisc_ecn_marks_per_s: float | None = None
    tins: list[Tin] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)

    @property
    def rank(self) -> tuple[int, float]:
        """Worst first: losing packets now, stale, filling, under pressure, the rest by usage."""
        usage = self.usage_percent or 0.0
        if any((self.per_second.get(n) or 0) > 0 for n in LOST) or self.table_full_since_start:
            return (0, -usage)
        if self.stale:
            return (1, 0.0)
        if usage >= AT_RISK:
            return (2, -usage)
        if self.attention:
            return (3, -usage)
        return (4, -usage)

    def as_dict(self) -> dict:
        return asdict(self)


def _rate(new: float | None, old: float | None, seconds: float) -> float:
    if new is None or old is None or seconds <= 0:
        return 0.0
    return max(0.0, (new - old) / seconds)  # counters reset (reboot): no negative rate


def view(host: str, first: Sample, previous: Sample, current: Sample) -> HostView:
    """Rates between two samples, levels from the current one, what needs attention."""
    seconds = current.at - previous.at
    out = HostView(host=host, interval_s=round(seconds, 3), count=current.count, max=current.max)
    out.stats_source = current.stats_source
    if current.count is not None and current.max:
        out.usage_percent = round(100 * current.count / current.max, 1)
        if out.usage_percent >= AT_RISK:
            out.attention.append(f"table {out.usage_percent:.0f} % full")
    if current.count is not None and current.buckets:
        out.entries_per_bucket = round(current.count / current.buckets, 2)
    for name in COUNTERS:
        if name not in current.counters:
            out.per_second[name] = None  # unknown, never 0
            continue
        rate = _rate(current.counters.get(name), previous.counters.get(name), seconds)
        out.per_second[name] = round(rate, 2)
        if rate > 0:
            out.attention.append(f"{name} {rate:.1f}/s")
    if current.stats_source is None:
        out.attention.append("drop counters unknown (install conntrack)")
    if current.count is not None and previous.count is not None and seconds > 0:
        out.entries_change_per_s = round((current.count - previous.count) / seconds, 2)
    counted = any(first.counters.get(n) or current.counters.get(n) for n in CHURN)
    if counted:
        new = _rate(current.counters.get("new"), previous.counters.get("new"), seconds)
        gone = _rate(current.counters.get("delete"), previous.counters.get("delete"), seconds)
        out.churn_new_per_s, out.churn_deleted_per_s = round(new, 2), round(gone, 2)
    out.table_full_since_start = max(0, current.table_full - first.table_full)
    if out.table_full_since_start:
        out.attention.append(f"{out.table_full_since_start} table-full lines")
    _qdisc(out, previous.qdisc, current.qdisc, seconds)
    return out


def _qdisc(out: HostView, old: Qdisc | None, new: Qdisc | None, seconds: float) -> None:
    if new is None:
        return
    out.qdisc_kind = new.kind
    out.qdisc_throughput_bit = round(_rate(new.bytes, old and old.bytes, seconds) * 8)
    out.qdisc_backlog_bytes = new.backlog
    out.qdisc_drops_per_s = round(_rate(new.drops, old and old.drops, seconds), 2)
    if out.qdisc_drops_per_s:
        out.attention.append(f"qdisc drops {out.qdisc_drops_per_s:.1f}/s")
    old_tins = {tin.name: tin for tin in (old.tins if old else ())}
    ecn_total = 0.0
    for tin in new.tins:
        before = old_tins.get(tin.name)
        ecn = _rate(tin.ecn_mark, before and before.ecn_mark, seconds)
        ecn_total += ecn
        entry = Tin(
            name=tin.name,
            offered_bit=round(_rate(tin.sent_bytes, before and before.sent_bytes, seconds) * 8),
            peak_delay_us=tin.peak_delay_us,
            avg_delay_us=tin.avg_delay_us,
            sparse_delay_us=tin.base_delay_us,
            target_us=tin.target_us,
            sparse_flows=tin.sparse_flows,
            bulk_flows=tin.bulk_flows,
            unresponsive_flows=tin.unresponsive_flows,
            backlog_bytes=tin.backlog_bytes,
            drops_per_s=round(_rate(tin.drops, before and before.drops, seconds), 2),
            ecn_marks_per_s=round(ecn, 2),
        )
        out.tins.append(entry)
        if entry.avg_delay_us and entry.target_us and entry.avg_delay_us > entry.target_us:
            out.attention.append(
                f"{entry.name} delay {entry.avg_delay_us / 1000:.1f} ms > target "
                f"{entry.target_us / 1000:.1f} ms"
            )
    out.qdisc_ecn_marks_per_s = round(ecn_total, 2) if new.tins else None


@dataclass
class Screen:
    """One refresh of the watch: when, how often, how many hosts answer, the hosts worst first."""

    interval_s: float  # asked for (--interval)
    hosts: list[HostView]
    at: float = field(default_factory=time.time)
    period_s: float | None = None  # measured between the last two samples (slow hosts: longer)

    def __post_init__(self) -> None:
        self.hosts = sorted(self.hosts, key=lambda v: (v.rank, BY_HOST(v.host)))

    @property
    def answering(self) -> int:
        return sum(1 for v in self.hosts if not v.stale)

    @property
    def stale(self) -> int:
        return len(self.hosts) - self.answering

    def as_dict(self) -> dict:
        return {
            "generated_at": int(self.at),
            "interval_s": self.interval_s,
            "period_s": None if self.period_s is None else round(self.period_s, 3),
            "hosts_answering": self.answering,
            "hosts_stale": self.stale,
            "hosts": [v.as_dict() for v in self.hosts],
        }
