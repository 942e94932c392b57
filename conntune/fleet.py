"""
Whole-inventory jobs: audit (read only) and reconcile (audit, converge the drifting hosts with
the deploy.py operations, audit again). pyinfra is reached only through conntune.pyinfra_api.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conntune import pyinfra_api, terminal
from conntune.audit import BY_HOST, UNREACHABLE, HostAudit, audit_host, unreachable
from conntune.facts.reading import script
from conntune.report import write_atomically

# Exit statuses of `conntune reconcile`, for schedulers (documented in the README).
EXIT_OK = 0  # converged, or nothing to do
EXIT_DRIFT = 2  # --check: some hosts drift from their plan (nothing was changed)
EXIT_FAILED = 3  # some hosts could not be read, were refused, or failed to converge
EXIT_LOCKED = 75  # another reconcile of the same inventory is running (EX_TEMPFAIL)
# one reading takes 0.1-2 s; a busy host or a slow sudo may take longer
READING_TIMEOUT = 120


def audit_fleet(
    fleet: pyinfra_api.Fleet, fresh: bool = False, show_progress: bool = True
) -> list[HostAudit]:
    rows = [unreachable(name, error) for name, error in fleet.errors.items()]
    with terminal.progress("reading hosts", enabled=show_progress) as progress:
        readings = pyinfra_api.read_fleet(fleet, fresh=fresh, progress=progress)
    hosts = {host.name: host for host in fleet.hosts}
    for name, facts in readings.items():
        if isinstance(facts, str):
            rows.append(unreachable(name, facts))
        else:
            rows.append(audit_host(name, facts, hosts[name].data.dict()))
    return sorted(rows, key=lambda row: BY_HOST(row.host))


def connect(
    inventory: str,
    limit: list[str] | None = None,
    data: dict | None = None,
    show_progress: bool = True,
):
    """``pyinfra_api.open_fleet`` with a progress line on a terminal (200 hosts take seconds)."""
    with terminal.progress("connecting", enabled=show_progress) as progress:
        return pyinfra_api.open_fleet(inventory, limit=limit, data=data, progress=progress)


def audit(
    inventory: str,
    limit: list[str] | None = None,
    data: dict | None = None,
    show_progress: bool = True,
) -> list[HostAudit]:
    """Every host's audit row, hosts in name order; progress on a terminal's stderr."""
    fleet = connect(inventory, limit=limit, data=data, show_progress=show_progress)
    try:
        return audit_fleet(fleet, show_progress=show_progress)
    finally:
        pyinfra_api.close_fleet(fleet)


def save_readings(
    inventory: str, directory: Path, limit: list[str] | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Each host's raw reading into ``directory/HOST.reading``; the hosts that failed, why."""
    directory.mkdir(parents=True, exist_ok=True)
    fleet = pyinfra_api.open_fleet(inventory, limit=limit)
    try:
        commands = {host.name: script() for host in fleet.hosts}  # run_on_hosts buffers it
        results = pyinfra_api.run_on_hosts(fleet, commands, timeout=READING_TIMEOUT)
    finally:
        pyinfra_api.close_fleet(fleet)
    saved, failed = {}, dict(fleet.errors)
    for name, text in sorted(results.items()):
        if isinstance(text, Exception):
            failed[name] = str(text) or type(text).__name__
            continue
        path = directory / (re.sub(r"[^A-Za-z0-9@._-]", "_", name) + ".reading")
        write_atomically(path, text)
        saved[name] = path
    return saved, failed


class Locked(RuntimeError):
    pass


def lock_path(inventory: str) -> Path:
    key = hashlib.sha256(os.path.abspath(inventory).encode()).hexdigest()[:16]
    base = os.environ.get("CONNTUNE_LOCK_DIR") or (
        "/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir()
    )
    return Path(base) / f"conntune-reconcile-{key}.lock"


@contextlib.contextmanager
def inventory_lock(inventory: str) -> Iterator[Path]:
    """One reconcile per inventory at a time: a second one fails at once, it does not queue."""
    path = lock_path(inventory)
    handle = open(path, "a+")  # noqa: SIM115 (held for the whole reconcile)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise Locked(
                f"another conntune reconcile of {inventory} is running (pid {holder}, lock {path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()


@dataclass
class HostResult:
    host: str
    before: HostAudit
    after: HostAudit | None = None
    converged: bool = False
    changed: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "host": self.host,
            "verdict_before": self.before.verdict,
            "verdict_after": self.after.verdict if self.after else None,
            "drift_before": self.before.drift,
            "drift_after": self.after.drift if self.after else None,
            "converged": self.converged,
            "changed": self.changed,
            "error": self.error,
            "before": self.before.as_dict(),
            "after": self.after.as_dict() if self.after else None,
        }


@dataclass
class Reconciliation:
    inventory: str
    check: bool
    started: float
    finished: float = 0.0
    results: list[HostResult] = field(default_factory=list)
    exit_code: int = EXIT_OK

    @property
    def final_rows(self) -> list[HostAudit]:
        return [result.after or result.before for result in self.results]

    def as_dict(self) -> dict:
        return {
            "inventory": self.inventory,
            "check": self.check,
            "started": self.started,
            "finished": self.finished,
            "exit_code": self.exit_code,
            "hosts": [result.as_dict() for result in self.results],
        }


def reconcile(
    inventory: str,
    deploy_function,
    check: bool = False,
    limit: list[str] | None = None,
    data: dict | None = None,
) -> Reconciliation:
    """Audit; unless ``check``, converge every drifting host; audit again. Never prompts."""
    run = Reconciliation(inventory=inventory, check=check, started=time.time())
    fleet = connect(inventory, limit=limit, data=data)
    try:
        before = audit_fleet(fleet)
        run.results = [HostResult(row.host, row) for row in before]
        failing = {r.host for r in before if r.verdict == UNREACHABLE or r.error}
        drifting = [r.host for r in before if r.drift_count and r.host not in failing]
        if check:
            run.exit_code = EXIT_FAILED if failing else EXIT_DRIFT if drifting else EXIT_OK
            return run
        # refused hosts go through the deploy too: it reports why and changes nothing there
        targets = drifting + [r.host for r in before if r.error and r.verdict != UNREACHABLE]
        with terminal.progress("converging") as progress:
            progress(0, len(targets))  # pyinfra runs them together: the bar counts the time
            errors = pyinfra_api.converge_fleet(fleet, deploy_function, targets)
            progress(len(targets), len(targets))
        after = {row.host: row for row in audit_fleet(fleet, fresh=True)} if targets else {}
        for result in run.results:
            if result.host in after:
                result.after = after[result.host]
                result.changed = [d for d in result.before.drift if d not in result.after.drift]
            failure = errors.get(result.host)
            if failure and result.before.error:  # the audit already knows why: say that
                failure = result.before.error
            result.error = failure or result.before.error
            if result.before.verdict == UNREACHABLE:
                result.error = result.before.reason
            final = result.after or result.before
            result.converged = result.error is None and final.drift_count == 0
        if not all(result.converged for result in run.results):
            run.exit_code = EXIT_FAILED
        return run
    finally:
        run.finished = time.time()
        pyinfra_api.close_fleet(fleet)


def _host_lines(result: HostResult, check: bool, done: str) -> tuple[int, list[str]]:
    """A host's lines and its rank: unreachable, failed, drifting, changed, nothing to do."""
    final = result.after or result.before
    if result.before.verdict == UNREACHABLE:
        return 0, [f"{result.host}: unreachable: {result.before.reason}"]
    if check and result.before.error:  # refused or unreadable: a real run would fail there
        return 1, [f"{result.host}: FAILED: {result.before.error}"]
    if check:
        what = f"{final.drift_count} drifting" if final.drift_count else "converged"
        return (2 if final.drift_count else 4), [
            f"{result.host}: {what} ({final.verdict}: {final.reason})"
        ]
    if result.error:
        return 1, [f"{result.host}: FAILED: {result.error}"]
    if result.changed:
        changes = [f"  {change}" for change in result.changed]
        return 3, [f"{result.host}: {done}, {len(result.changed)} changed", *changes]
    return 4, [f"{result.host}: nothing to do ({final.verdict}: {final.reason})"]


def describe(run: Reconciliation, verb: str = "reconcile", done: str = "converged") -> str:
    """The summary first (what happened to how many hosts), then each host, worst first."""
    ranked = sorted(
        ((*_host_lines(result, run.check, done), result.host) for result in run.results),
        key=lambda item: (item[0], BY_HOST(item[2])),
    )
    names = ["unreachable", "failed", "drifting", done,
             "converged" if run.check else "nothing to do"]  # fmt: skip
    counts = [sum(1 for rank, _, _ in ranked if rank == index) for index in range(len(names))]
    tally = ", ".join(f"{count} {name}" for count, name in zip(counts, names, strict=True) if count)
    states = {EXIT_OK: "ok", EXIT_DRIFT: "drift found", EXIT_FAILED: "some hosts failed"}
    lines = [f"{verb}: {states.get(run.exit_code, run.exit_code)} "
             f"({len(run.results)} hosts: {tally or 'none'}; "
             f"{run.finished - run.started:.1f} s)"]  # fmt: skip
    for _, host_lines, _ in ranked:
        lines += host_lines
    return "\n".join(lines)
