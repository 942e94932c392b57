"""
Saved host readings: what ``conntune reading`` writes (the raw output of the one reading
command) and what ``conntune plan/audit --reading`` replay, anywhere, without the host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conntune.facts.reading import ReadingError, host_facts, reading_format, script
from conntune.hostfacts import HostFacts


def load_reading(path: str | Path) -> HostFacts:
    """The ``HostFacts`` of a saved reading. Raises ``ReadingError`` naming the file."""
    text = Path(path).read_text(errors="replace")
    try:
        reading_format(text)
    except ReadingError as error:
        raise ReadingError(f"{path}: {error}") from None
    facts = host_facts(text)
    if not facts.complete:  # a deploy refuses such a host: so does its replay
        raise ReadingError(
            f"{path}: the reading was cut short (no 'end' section): capture it again with "
            "`conntune reading`"
        )
    return facts


def read_this_machine() -> HostFacts:
    """This machine, read by the same script a deploy runs on a host."""
    result = subprocess.run(
        ["sh", "-c", script()], capture_output=True, text=True, timeout=120, check=False
    )
    return host_facts(result.stdout)
