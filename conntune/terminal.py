"""
What conntune draws on a terminal, with rich: the audit table, the watch screen and progress on
long fleet runs. Without a terminal (a pipe, a file, cron) the same content is plain text: no
colour, no escape codes, no box drawing; ``--json`` output never comes through here.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import shutil
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from conntune.audit import BY_HOST, SEVERITY, HostAudit, fleet_summary
from conntune.units import format_bytes, human_rate
from conntune.watch import COUNTERS, HostView, Screen

VERDICT_STYLE = {"unreachable": "bold red", "dropping": "bold red", "at risk": "yellow",
                 "refused": "magenta", "drift": "cyan", "ok": "green"}  # fmt: skip
PLAIN_WIDTH = 400  # wide enough that a plain table never wraps


def console(file=None, terminal: bool | None = None) -> Console:
    """A console on ``file`` (stdout): rich on a terminal, plain text elsewhere."""
    file = file or sys.stdout
    terminal = file.isatty() if terminal is None else terminal
    if terminal:
        return Console(file=file, highlight=False, force_terminal=True)
    return Console(file=file, width=PLAIN_WIDTH, color_system=None, highlight=False,
                   force_terminal=False, emoji=False, soft_wrap=True)  # fmt: skip


def render(renderable: RenderableType, terminal: bool = False, width: int | None = None) -> str:
    """
    A renderable as text: plain, or with ``terminal`` styled and ``width`` columns wide (the
    terminal's width, at least 200: a table of 17 columns wraps rather than cut its cells).
    """
    buffer = io.StringIO()
    out = console(buffer, terminal)
    if terminal:
        out.width = width or max(200, shutil.get_terminal_size().columns)
    out.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _counter(row: HostAudit, name: str) -> str:
    value = getattr(row, name)
    if value is None and (row.sources.get(name) or "").startswith("unknown"):
        return "unknown"
    return _cell(value)


def audit_table(rows: list[HostAudit], verbose: bool = False, terminal: bool = False):
    """The summary, the hosts worst first (one row each), then each host's reason."""
    ordered = sorted(rows, key=lambda row: (SEVERITY.index(row.verdict), BY_HOST(row.host)))
    table = Table(box=box.SIMPLE_HEAD if terminal else None, pad_edge=False, show_edge=False)
    for name in ("HOST", "VERDICT", "RAM", "CPU", "KERNEL", "COUNT/MAX", "USE%", "BUCKETS",
                 "E/B", "DROP", "EARLY", "INSFAIL", "CHAIN", "FULL", "DRIFT", "QDISC",
                 "FIREWALLD"):  # fmt: skip
        table.add_column(name, no_wrap=True)
    for row in ordered:
        verdict = Text(row.verdict, style=VERDICT_STYLE.get(row.verdict, "") if terminal else "")
        if row.verdict == "unreachable":
            table.add_row(row.host, verdict, *["-"] * 15)
            continue
        table.add_row(
            row.host, verdict, format_bytes(row.mem_bytes) if row.mem_bytes else "-",
            _cell(row.cpus), _cell(row.kernel),
            f"{_cell(row.conntrack_count)}/{_cell(row.conntrack_max)}", _cell(row.usage_percent),
            _cell(row.buckets), _cell(row.entries_per_bucket_at_max),
            *(_counter(row, name) for name in ("drop", "early_drop", "insert_failed",
                                               "chaintoolong")),
            str(row.table_full_lines), str(row.drift_count),
            f"{row.qdisc_interface}: {row.qdisc}" if row.qdisc else "-", _cell(row.firewalld),
        )  # fmt: skip
    reasons = []
    for row in ordered:
        reasons.append(f"{row.host}: {row.verdict}: {row.reason}")
        if row.qdisc_planned and row.qdisc_planned != row.qdisc:
            reasons.append(f"  qdisc on {row.qdisc_interface}: {row.qdisc}, "
                           f"planned {row.qdisc_planned}")  # fmt: skip
        if row.neighbours:
            reasons.append(
                f"  manages conntrack/firewall state itself: {', '.join(row.neighbours)}"
            )
        if verbose:
            reasons += [f"  drift: {item}" for item in row.drift]
            reasons += [f"  warning: {item}" for item in row.warnings]
    return Group(Text(fleet_summary(rows)), Text(""), table, Text(""), Text("\n".join(reasons)))


# --- the watch ------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}/s"


def _ms(us: int | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f}ms"


def _bar(percent: float | None, width: int = 20) -> str:
    if percent is None:
        return "[" + " " * width + "]"
    filled = min(width, round(width * percent / 100))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _churn(v: HostView) -> str:
    if v.churn_new_per_s is not None:
        return f"churn: new {v.churn_new_per_s:.1f}/s, deleted {v.churn_deleted_per_s:.1f}/s"
    change = "-" if v.entries_change_per_s is None else f"{v.entries_change_per_s:+.1f}/s"
    return f"entries {change} (this kernel does not count new/deleted entries)"


def header(screen: Screen, quit_key: str) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(screen.at))
    pace = f"every {screen.interval_s:g} s"
    if screen.period_s is not None and screen.period_s > 1.2 * screen.interval_s:
        pace = f"every {screen.period_s:.1f} s (asked {screen.interval_s:g} s; hosts answer slower)"
    return (
        f"conntune watch  {clock}  {pace}  "
        f"{screen.answering} hosts answering, {screen.stale} stale  ({quit_key} to quit)"
    )


def watch_text(screen: Screen, quit_key: str = "Ctrl-C") -> str:
    """The screen as plain lines: the header, then a block per host, worst first."""
    lines = [header(screen, quit_key)]
    for v in screen.hosts:
        if v.stale:
            lines.append(f"{v.host}: STALE ({v.error})")
            continue
        usage = "-" if v.usage_percent is None else f"{v.usage_percent:5.1f} %"
        head = f"{v.host}: conntrack {v.count}/{v.max} {_bar(v.usage_percent)} {usage}"
        head += f"  {v.entries_per_bucket} per bucket" if v.entries_per_bucket is not None else ""
        lines.append(head)
        rates = "  ".join(f"{name} {_rate(v.per_second.get(name))}" for name in COUNTERS)
        lines.append(f"  {rates}  table-full lines {v.table_full_since_start}")
        lines.append(f"  {_churn(v)}")
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
            lines.append("  ! " + "; ".join(v.attention))
    return "\n".join(lines)


def watch_screen(screen: Screen, quit_key: str = "q or Ctrl-C") -> RenderableType:
    """The screen for a terminal: a table of hosts, worst first, and the CAKE tins below."""
    table = Table(box=box.SIMPLE_HEAD, title=header(screen, quit_key), title_justify="left",
                  expand=False)  # fmt: skip
    for name in ("HOST", "CONNTRACK", "USE%", "/BUCKET", "DROP", "INSFAIL", "CHAIN", "EARLY",
                 "NEW", "DEL", "ΔENTRIES", "FULL", "QDISC", "SENT", "QDROP", "!"):  # fmt: skip
        table.add_column(name, no_wrap=name != "!")
    tins = Table(box=box.SIMPLE_HEAD, title="CAKE tins", title_justify="left")
    for name in ("HOST", "TIN", "OFFERED", "PK DELAY", "AV DELAY", "SP DELAY", "TARGET",
                 "FLOWS s/b/u", "BACKLOG", "DROPS", "ECN"):  # fmt: skip
        tins.add_column(name, no_wrap=True)
    for v in screen.hosts:
        if v.stale:
            table.add_row(Text(v.host, style="bold red"), Text(f"STALE: {v.error}", "red"))
            continue
        hot = "bold red" if v.rank[0] == 0 else "yellow" if v.rank[0] <= 3 else ""
        table.add_row(
            Text(v.host, style=hot), f"{v.count}/{v.max}",
            "-" if v.usage_percent is None else f"{v.usage_percent:.1f}",
            _cell(v.entries_per_bucket),
            *(_rate(v.per_second.get(name)) for name in COUNTERS),
            *((_rate(v.churn_new_per_s), _rate(v.churn_deleted_per_s))
              if v.churn_new_per_s is not None else ("n/a", "n/a")),
            "-" if v.entries_change_per_s is None else f"{v.entries_change_per_s:+.1f}/s",
            str(v.table_full_since_start), v.qdisc_kind or "-",
            f"{human_rate(v.qdisc_throughput_bit or 0)}/s" if v.qdisc_kind else "-",
            _rate(v.qdisc_drops_per_s) if v.qdisc_kind else "-",
            Text("; ".join(v.attention), style="bold red" if v.attention else ""),
        )  # fmt: skip
        for tin in v.tins:
            tins.add_row(
                v.host, tin.name, f"{human_rate(tin.offered_bit)}/s", _ms(tin.peak_delay_us),
                _ms(tin.avg_delay_us), _ms(tin.sparse_delay_us), _ms(tin.target_us),
                f"{tin.sparse_flows}/{tin.bulk_flows}/{tin.unresponsive_flows}",
                _cell(tin.backlog_bytes), f"{tin.drops_per_s:.1f}/s",
                f"{tin.ecn_marks_per_s:.1f}/s",
            )  # fmt: skip
    return Group(table, tins) if tins.row_count else table


@contextlib.contextmanager
def live_screen(on_terminal: bool, stop: threading.Event) -> Iterator[Callable]:
    """``show(renderable)`` redraws the screen in place; ``q`` sets ``stop`` (Ctrl-C too)."""
    if not on_terminal:
        yield lambda renderable: None
        return
    with _quit_key(stop), Live(console=console(), screen=True, auto_refresh=False) as live:
        yield lambda renderable: live.update(renderable, refresh=True)


@contextlib.contextmanager
def _quit_key(stop: threading.Event) -> Iterator[None]:
    """Read single keys from the terminal while the screen is up; ``q`` stops the watch."""
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                stop.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(timeout=1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# --- progress on long fleet runs ------------------------------------------------------------


@contextlib.contextmanager
def progress(what: str, stream=None, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """
    ``progress(done, total)`` drawn as a transient bar on a terminal's stderr; nothing when
    stderr is not a terminal (cron, a pipe) or not ``enabled`` (``--json``).
    """
    stream = stream or sys.stderr
    if not enabled or not stream.isatty():
        yield lambda done, total: None
        return
    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(file=stream), transient=True)  # fmt: skip
    task = bar.add_task(what, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)
