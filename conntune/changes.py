"""
Differences between a host's reading and a plan: what a run would change, old → new.

Shared by the operations (to decide and to print the dry-run diff) and by the audit (drift).
Pure Python.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum

from conntune import cake_options, paths
from conntune.hostfacts import HostFacts
from conntune.plan import CakePlan, Plan


class Kind(StrEnum):
    """What a change is; display text is never matched to find one."""

    MODULE = "module"
    BUCKETS = "buckets"
    SYSCTL = "sysctl"
    FILE = "file"
    UNIT = "unit"
    QDISC = "qdisc"


@dataclass(frozen=True)
class Change:
    """One value that differs: ``old`` is ``None`` when it does not exist yet."""

    kind: Kind
    name: str
    old: str | None
    new: str | None

    @property
    def verb(self) -> str:
        return "create" if self.old is None else "remove" if self.new is None else "modify"

    def __str__(self) -> str:
        if self.kind is Kind.FILE:
            return f"{self.name}: {self.verb}"
        old = "(absent)" if self.old is None else self.old
        new = "(absent)" if self.new is None else self.new
        return f"{self.name}: {old} → {new}"


def live_changes(facts: HostFacts, sysctls: dict[str, int], buckets: int | None) -> list[Change]:
    """Live conntrack values that differ from the plan, in the order they must be written."""
    changes = []
    if buckets is not None and facts.buckets != buckets:
        old = None if facts.buckets is None else str(facts.buckets)
        changes.append(Change(Kind.BUCKETS, "nf_conntrack hashsize", old, str(buckets)))
    for key, value in sysctls.items():
        old_value = facts.sysctls.get(key)
        if old_value != value:
            old = None if old_value is None else str(old_value)
            changes.append(Change(Kind.SYSCTL, key, old, str(value)))
    return changes


def file_changes(facts: HostFacts, files: dict[str, str | None]) -> list[Change]:
    """Owned files whose content differs (``new`` None: the file is to be removed)."""
    return [
        Change(Kind.FILE, path, facts.owned_files.get(path), content)
        for path, content in files.items()
        if facts.owned_files.get(path) != content
    ]


def unit_change(facts: HostFacts, files: dict[str, str | None]) -> Change | None:
    """The CAKE unit is wanted, its file is already right, but it is not enabled."""
    wanted = files.get(paths.CAKE_UNIT_FILE)
    if wanted is None or facts.owned_files.get(paths.CAKE_UNIT_FILE) != wanted:
        return None
    if facts.cake_unit_enabled:
        return None
    return Change(Kind.UNIT, paths.CAKE_UNIT, "disabled", "enabled")


def cake_change(facts: HostFacts, cake: CakePlan) -> Change | None:
    """The root qdisc of CAKE's interface against the planned CAKE, naming what differs."""
    qdisc = facts.root_qdisc(cake.interface)
    differ = cake_options.differences(qdisc, cake)
    if not differ:
        return None
    old = qdisc.describe() if qdisc else "none"
    new = cake.describe()
    options = [name for name in differ if name not in ("kind", "bandwidth_bit", "diffserv")]
    if qdisc is not None and qdisc.cake is not None and options:
        wanted = cake_options.expected(cake)
        old += " (" + ", ".join(f"{n} {getattr(qdisc.cake, n)}" for n in options) + ")"
        new += " (" + ", ".join(f"{n} {getattr(wanted, n)}" for n in options) + ")"
    return Change(Kind.QDISC, f"qdisc root dev {cake.interface}", old, new)


def drift(facts: HostFacts, plan: Plan) -> list[Change]:
    """Every difference between the host and its plan (the dry run's list)."""
    changes = live_changes(facts, plan.sysctls, plan.buckets)
    if plan.load_conntrack:
        changes.insert(0, Change(Kind.MODULE, "nf_conntrack module", "not loaded", "loaded"))
    changes += file_changes(facts, plan.files)
    unit = unit_change(facts, plan.files)
    if unit:
        changes.append(unit)
    if plan.cake is not None:
        change = cake_change(facts, plan.cake)
        if change:
            changes.append(change)
    if plan.cake_remove is not None:
        changes.append(
            Change(Kind.QDISC, f"qdisc root dev {plan.cake_remove}", "cake", "(kernel default)")
        )
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
