"""
`conntune watch`: second-by-second conntrack pressure and CAKE behaviour, as rates. Pure
Python: the sample command, its parser, the rates between two samples, and the rendering.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from conntune.audit import AT_RISK
from conntune.facts import parse
from conntune.facts.reading import conntrack_stats, split_sections
from conntune.qdisc import Qdisc
from conntune.units import human_rate

COUNTERS = ("drop", "early_drop", "insert_failed", "chaintoolong")


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
    counters = {name: value for name in COUNTERS if (value := stats.get(name)) is not None}
    roots = [q for q in parse.qdiscs(sections.get("qdisc", "")) if q.root]
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
    per_second: dict[str, float] = field(default_factory=dict)
    table_full_since_start: int = 0
    qdisc_kind: str | None = None
    qdisc_throughput_bit: float | None = None
    qdisc_backlog_bytes: int | None = None
    qdisc_drops_per_s: float | None = None
    qdisc_ecn_marks_per_s: float | None = None
    tins: list[Tin] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)

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
    if current.count is not None and current.max:
        out.usage_percent = round(100 * current.count / current.max, 1)
        if out.usage_percent >= AT_RISK:
            out.attention.append(f"table {out.usage_percent:.0f} % full")
    if current.count is not None and current.buckets:
        out.entries_per_bucket = round(current.count / current.buckets, 2)
    for name in COUNTERS:
        rate = _rate(current.counters.get(name), previous.counters.get(name), seconds)
        out.per_second[name] = round(rate, 2)
        if rate > 0 and name in ("drop", "insert_failed", "chaintoolong"):
            out.attention.append(f"{name} {rate:.1f}/s")
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


def _bar(percent: float | None, width: int = 20) -> str:
    if percent is None:
        return "[" + " " * width + "]"
    filled = min(width, round(width * percent / 100))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render(views: list[HostView], color: bool) -> str:
    """The screen (or, without a terminal, plain lines): one block per host."""

    def hot(text: str) -> str:
        return f"\x1b[1;31m{text}\x1b[0m" if color else text

    lines = []
    for v in views:
        if v.stale:
            lines.append(hot(f"{v.host}: STALE ({v.error})"))
            continue
        usage = "-" if v.usage_percent is None else f"{v.usage_percent:5.1f} %"
        head = f"{v.host}: conntrack {v.count}/{v.max} {_bar(v.usage_percent)} {usage}"
        head += f"  {v.entries_per_bucket} per bucket" if v.entries_per_bucket is not None else ""
        lines.append(head)
        rates = "  ".join(f"{name} {v.per_second.get(name, 0):.1f}/s" for name in COUNTERS)
        lines.append(f"  {rates}  table-full lines {v.table_full_since_start}")
        if v.qdisc_kind:
            lines.append(
                f"  qdisc {v.qdisc_kind}: {human_rate(v.qdisc_throughput_bit or 0)}/s sent, "
                f"backlog {v.qdisc_backlog_bytes} B, drops {v.qdisc_drops_per_s:.1f}/s"
                + (
                    f", ecn {v.qdisc_ecn_marks_per_s:.1f}/s"
                    if v.qdisc_ecn_marks_per_s is not None
                    else ""
                )
            )
        for tin in v.tins:
            lines.append(
                f"    {tin.name:<10} offered {human_rate(tin.offered_bit)}/s  "
                f"delay pk {_ms(tin.peak_delay_us)} av {_ms(tin.avg_delay_us)} "
                f"sp {_ms(tin.sparse_delay_us)} (target {_ms(tin.target_us)})  flows "
                f"{tin.sparse_flows}/{tin.bulk_flows}/{tin.unresponsive_flows} "
                f"(sparse/bulk/unresp)  drops {tin.drops_per_s:.1f}/s"
            )
        if v.attention:
            lines.append(hot("  ! " + "; ".join(v.attention)))
    return "\n".join(lines)


def _ms(us: int | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f}ms"
