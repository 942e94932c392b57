"""Rendering audit rows: a terminal table, JSON, and node-exporter textfile metrics."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from conntune.audit import HostAudit, fleet_summary
from conntune.units import format_bytes


def write_atomically(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def table(rows: list[HostAudit], verbose: bool = False) -> str:
    header = [
        "HOST",
        "VERDICT",
        "RAM",
        "CPU",
        "KERNEL",
        "COUNT/MAX",
        "USE%",
        "BUCKETS",
        "E/B",
        "DROP",
        "EARLY",
        "INSFAIL",
        "CHAIN",
        "FULL",
        "DRIFT",
        "QDISC",
        "FIREWALLD",
    ]
    lines: list[list[str]] = [header]
    for row in rows:
        if row.verdict == "unreachable":
            lines.append([row.host, row.verdict] + ["-"] * (len(header) - 2))
            continue
        count_max = f"{_cell(row.conntrack_count)}/{_cell(row.conntrack_max)}"
        lines.append(
            [
                row.host,
                row.verdict,
                format_bytes(row.mem_bytes) if row.mem_bytes else "-",
                _cell(row.cpus),
                _cell(row.kernel),
                count_max,
                _cell(row.usage_percent),
                _cell(row.buckets),
                _cell(row.entries_per_bucket_at_max),
                _cell(row.drop),
                _cell(row.early_drop),
                _cell(row.insert_failed),
                _cell(row.chaintoolong),
                str(row.table_full_lines),
                str(row.drift_count),
                f"{row.qdisc_interface}: {row.qdisc}" if row.qdisc else "-",
                _cell(row.firewalld),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    text.append("")
    for row in rows:
        text.append(f"{row.host}: {row.verdict}: {row.reason}")
        if row.qdisc_planned and row.qdisc_planned != row.qdisc:
            text.append(
                f"  qdisc on {row.qdisc_interface}: {row.qdisc}, planned {row.qdisc_planned}"
            )
        if row.neighbours:
            text.append(f"  manages conntrack/firewall state itself: {', '.join(row.neighbours)}")
        if verbose:
            text += [f"  drift: {item}" for item in row.drift]
            text += [f"  warning: {item}" for item in row.warnings]
    text += ["", fleet_summary(rows)]
    return "\n".join(text)


def as_json(rows: list[HostAudit]) -> str:
    return json.dumps(
        {
            "summary": fleet_summary(rows),
            "generated_at": int(time.time()),
            "hosts": [row.as_dict() for row in rows],
        },
        indent=2,
    )


_METRICS = [
    ("conntune_host_up", "gauge", "1 when conntune could read the host"),
    ("conntune_conntrack_entries", "gauge", "nf_conntrack_count"),
    ("conntune_conntrack_max", "gauge", "nf_conntrack_max"),
    ("conntune_conntrack_usage_ratio", "gauge", "nf_conntrack_count / nf_conntrack_max"),
    ("conntune_conntrack_buckets", "gauge", "conntrack hash table buckets"),
    ("conntune_conntrack_drop_total", "counter", "packets dropped by conntrack since boot"),
    ("conntune_conntrack_early_drop_total", "counter", "entries early-dropped since boot"),
    ("conntune_conntrack_insert_failed_total", "counter", "failed inserts since boot"),
    ("conntune_conntrack_chaintoolong_total", "counter", "inserts refused: hash chain too long"),
    ("conntune_table_full_log_lines", "gauge", "'table full' lines in the kernel log"),
    ("conntune_drift_settings", "gauge", "settings that differ from the conntune plan"),
    ("conntune_verdict", "gauge", "1 for the host's audit verdict"),
    ("conntune_last_audit_success_timestamp_seconds", "gauge", "when the host was last read"),
]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _previous_success(path: Path) -> dict[str, str]:
    """Last-success times of the previous file, kept for hosts that fail this time."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    pattern = r'^conntune_last_audit_success_timestamp_seconds\{host="((?:[^"\\]|\\.)*)"\} (\S+)$'
    return {host: value for host, value in re.findall(pattern, text, re.MULTILINE)}


def prometheus(
    rows: list[HostAudit], previous: Path | None = None, now: float | None = None
) -> str:
    """node-exporter textfile-collector format, one sample per host and metric."""
    now = time.time() if now is None else now
    carried = _previous_success(previous) if previous else {}
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _METRICS}
    for row in rows:
        host = f'host="{_label(row.host)}"'
        up = row.verdict != "unreachable"
        samples["conntune_host_up"].append(f"{{{host}}} {int(up)}")
        samples["conntune_verdict"].append(f'{{{host},verdict="{_label(row.verdict)}"}} 1')
        if not up:
            if _label(row.host) in carried:
                value = carried[_label(row.host)]
                samples["conntune_last_audit_success_timestamp_seconds"].append(
                    f"{{{host}}} {value}"
                )
            continue
        values = {
            "conntune_conntrack_entries": row.conntrack_count,
            "conntune_conntrack_max": row.conntrack_max,
            "conntune_conntrack_usage_ratio": None
            if row.usage_percent is None
            else round(row.usage_percent / 100, 4),
            "conntune_conntrack_buckets": row.buckets,
            "conntune_conntrack_drop_total": row.drop,
            "conntune_conntrack_early_drop_total": row.early_drop,
            "conntune_conntrack_insert_failed_total": row.insert_failed,
            "conntune_conntrack_chaintoolong_total": row.chaintoolong,
            "conntune_table_full_log_lines": row.table_full_lines,
            "conntune_drift_settings": row.drift_count,
            "conntune_last_audit_success_timestamp_seconds": int(now),
        }
        for name, value in values.items():
            if value is not None:
                samples[name].append(f"{{{host}}} {value}")
    lines = []
    for name, kind, help_text in _METRICS:
        if samples[name]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{sample}" for sample in samples[name]]
    return "\n".join(lines) + "\n"
