"""systemd service + timer units that run `conntune reconcile` on the controller."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``15m``, ``1h``, ``6h``, ``1d`` in seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|min|h|d)\s*", text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration (e.g. 15m, 1h, 1d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def on_calendar(seconds: int) -> str:
    """
    An OnCalendar= expression firing every ``seconds``. Calendar timers (not OnUnitActiveSec)
    because Persistent=true, which catches up a run missed while the controller was off, only
    applies to OnCalendar= (systemd.timer(5)).
    """
    if seconds % 86400 == 0 and seconds // 86400 == 1:
        return "*-*-* 00:00:00"
    if seconds % 3600 == 0 and 24 % (seconds // 3600) == 0:
        return f"*-*-* 00/{seconds // 3600}:00:00"
    if seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        return f"*-*-* *:00/{seconds // 60}:00"
    raise ValueError("the period must divide an hour (5m, 15m, 30m) or a day (1h, 6h, 1d)")


def conntune_command(executable: str | None = None) -> list[str]:
    """
    The absolute command that runs this conntune from a unit, however it was started: a
    relative path (``.venv/bin/conntune``), a symlink, a PATH lookup, or a virtualenv that is not
    activated. systemd refuses a relative ExecStart ("Neither a valid executable name nor an
    absolute path") and has no venv on its PATH.
    """
    if executable:
        found = shutil.which(executable) if "/" not in executable else executable
        return [str(Path(found or executable).resolve())]
    # the console script beside the interpreter running now: right for a venv, activated or not
    # (the interpreter's own path is kept unresolved: a venv's python is a symlink)
    beside = Path(sys.executable).absolute().parent / "conntune"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.resolve())]
    found = shutil.which("conntune")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "conntune.cli"]


@dataclass(frozen=True)
class Schedule:
    inventory: Path
    every: str
    check: bool
    user: bool
    command: tuple[str, ...]  # absolute: conntune_command()
    workdir: Path
    state_dir: Path
    metrics_file: Path

    @property
    def name(self) -> str:
        digest = hashlib.sha256(str(self.inventory).encode()).hexdigest()[:8]
        return f"conntune-reconcile-{self.inventory.stem}-{digest}"

    @property
    def unit_dir(self) -> Path:
        return Path.home() / ".config/systemd/user" if self.user else Path("/etc/systemd/system")

    def units(self) -> dict[str, str]:
        seconds = parse_duration(self.every)
        command = [*self.command, "reconcile", str(self.inventory),
                   "--report", str(self.state_dir / f"{self.name}.json"),
                   "--prometheus", str(self.metrics_file)]  # fmt: skip
        if self.check:
            command.append("--check")
        service = (
            "[Unit]\n"
            f"Description=conntune: reconcile {self.inventory}\n"
            "Documentation=https://pypi.org/project/conntune/\n"
            "After=network-online.target\n"
            "Wants=network-online.target\n"
            "\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"WorkingDirectory={self.workdir}\n"
            f"ExecStart={shlex.join(command)}\n"
            # 2: drift found in --check mode is a finding, not a service failure
            "SuccessExitStatus=2\n"
            "TimeoutStartSec=1h\n"
        )
        timer = (
            "[Unit]\n"
            f"Description=conntune: reconcile {self.inventory} every {self.every}\n"
            "\n"
            "[Timer]\n"
            f"OnCalendar={on_calendar(seconds)}\n"
            f"RandomizedDelaySec={max(1, min(seconds // 10, 900))}\n"
            "Persistent=true\n"
            "\n"
            "[Install]\n"
            "WantedBy=timers.target\n"
        )
        return {f"{self.name}.service": service, f"{self.name}.timer": timer}
