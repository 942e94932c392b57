"""
Differences between a host's reading and a plan: what a run would change, old -> new.

Shared by the operations (to decide and to print the dry-run diff) and by the CLI (drift).
Pure Python.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from conntune.hostfacts import HostFacts
from conntune.policy import CakePlan, Plan
from conntune.units import format_rate

HASHSIZE_PATH = "/sys/module/nf_conntrack/parameters/hashsize"


@dataclass(frozen=True)
class Change:
    """One value that differs: ``old`` is ``None`` when it does not exist yet."""

    name: str
    old: str | None
    new: str | None
    is_file: bool = False

    def __str__(self) -> str:
        if self.is_file:
            verb = "create" if self.old is None else "remove" if self.new is None else "modify"
            return f"{self.name}: {verb}"
        old = "(absent)" if self.old is None else self.old
        new = "(absent)" if self.new is None else self.new
        return f"{self.name}: {old} → {new}"


def live_changes(facts: HostFacts, sysctls: dict[str, int], buckets: int | None) -> list[Change]:
    """Live conntrack values that differ from the plan, in the order they must be written."""
    changes = []
    if buckets is not None and facts.buckets != buckets:
        old = facts.buckets
        changes.append(
            Change("nf_conntrack hashsize", None if old is None else str(old), str(buckets))
        )
    for key, value in sysctls.items():
        old_value = facts.sysctls.get(key)
        if old_value != str(value):
            changes.append(Change(key, old_value, str(value)))
    return changes


def file_changes(facts: HostFacts, files: dict[str, str | None]) -> list[Change]:
    """Owned files whose content differs (``new`` None: the file is to be removed)."""
    return [
        Change(path, facts.owned_files.get(path), content, is_file=True)
        for path, content in files.items()
        if facts.owned_files.get(path) != content
    ]


def describe_qdisc(qdisc: dict | None) -> str:
    if qdisc is None:
        return "none"
    kind = qdisc.get("kind") or "?"
    options = qdisc.get("options") or {}
    if kind == "cake":
        bandwidth = options.get("bandwidth")
        rate = format_rate(bandwidth * 8) if isinstance(bandwidth, int) else str(bandwidth)
        return f"cake {rate} {options.get('diffserv', '?')}"
    return str(kind)


def cake_matches(qdisc: dict | None, cake: CakePlan) -> bool:
    """Whether a root qdisc from ``tc -j qdisc show`` is the planned CAKE (bandwidth in bytes/s)."""
    if qdisc is None or qdisc.get("kind") != "cake":
        return False
    options = qdisc.get("options") or {}
    return options.get("bandwidth") == cake.bandwidth_bytes and options.get("diffserv") == (
        cake.diffserv
    )


def cake_change(facts: HostFacts, cake: CakePlan) -> Change | None:
    qdisc = facts.root_qdisc(cake.interface)
    if cake_matches(qdisc, cake):
        return None
    return Change(
        f"qdisc root dev {cake.interface}",
        describe_qdisc(qdisc),
        f"cake {cake.rate} {cake.diffserv}",
    )


def drift(facts: HostFacts, plan: Plan) -> list[Change]:
    """Every difference between the host and its plan (the dry run's list)."""
    changes = live_changes(facts, plan.sysctls, plan.buckets)
    if plan.load_conntrack:
        changes.insert(0, Change("nf_conntrack module", "not loaded", "loaded"))
    changes += file_changes(facts, plan.files)
    if plan.cake is not None:
        change = cake_change(facts, plan.cake)
        if change:
            changes.append(change)
    return changes


def unified_diff(path: str, old: str | None, new: str | None) -> list[str]:
    """A unified diff of a file's text, for the dry run."""
    return list(
        difflib.unified_diff(
            (old or "").splitlines(),
            (new or "").splitlines(),
            fromfile=path if old is not None else "/dev/null",
            tofile=path if new is not None else "/dev/null",
            lineterm="",
        )
    )
