"""Rendering audit rows: a terminal table and JSON (metrics: conntune.metrics)."""

from __future__ import annotations

import json
import os
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
