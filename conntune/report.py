"""Rendering audit rows: a terminal table and JSON (metrics: conntune.metrics)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from conntune.audit import HostAudit, fleet_summary
from conntune.terminal import audit_table, render


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


def table(rows: list[HostAudit], verbose: bool = False, terminal: bool = False) -> str:
    """The audit as text: the summary, a row per host worst first, each host's reason."""
    return render(audit_table(rows, verbose=verbose, terminal=terminal), terminal=terminal)


def as_json(rows: list[HostAudit]) -> str:
    return json.dumps(
        {
            "summary": fleet_summary(rows),
            "generated_at": int(time.time()),
            "hosts": [row.as_dict() for row in rows],
        },
        indent=2,
    )
