"""Reading what the pyinfra CLI printed: the old → new lines, the results table, the commands."""

from __future__ import annotations

import re


def changes_of(text: str, host: str) -> list[str]:
    """The old → new lines a run printed for one host (without the host prefix)."""
    prefix = f"[{host}]"
    return [
        line.split(prefix, 1)[1].strip()
        for line in text.splitlines()
        if prefix in line and "→" in line
    ]


def results(text: str) -> dict[str, tuple[str, str]]:
    """Success and Error columns of pyinfra's results table, per conntune operation."""
    rows = {}
    for line in text.split("--> Results:")[-1].splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0].startswith("conntune |") and len(cells) >= 5:
            rows[cells[0]] = (cells[2], cells[3])
    return rows


def commands_per_host(text: str) -> dict[str, int]:
    """Remote commands pyinfra sent, counted from its --debug log."""
    counts: dict[str, int] = {}
    for host in re.findall(r"Running command on (\S+?):", text):
        counts[host] = counts.get(host, 0) + 1
    return counts
