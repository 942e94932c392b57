"""
The undo record (``paths.ORIGINAL_FILE``): each live value conntune owns, as it was before
conntune first changed it. ``conntune revert`` (``conntune_state: absent``) puts them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conntune.hostfacts import BUCKETS_KEY, HostFacts
from conntune.plan import Plan

# the key the record uses for the live hash size (a module parameter, not a sysctl)
HASHSIZE_RECORD = "nf_conntrack.hashsize"
HEADER = (
    "# conntune: live values before conntune first changed each of them.\n"
    "# `conntune revert` restores them. A value is added when conntune first owns it, never "
    "updated.\n"
)


@dataclass
class Original:
    """The parsed record: sysctl values, the hash size (buckets) and the root qdisc kinds."""

    sysctls: dict[str, int] = field(default_factory=dict)
    buckets: int | None = None
    qdiscs: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.sysctls) + (self.buckets is not None) + len(self.qdiscs)


def parse_original(text: str) -> Original:
    """The record's values; lines it does not know are skipped."""
    original = Original()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key.startswith("#"):
            continue
        if key == HASHSIZE_RECORD and value.isdigit():
            original.buckets = int(value)
        elif key.startswith("qdisc."):
            original.qdiscs[key.removeprefix("qdisc.")] = value
        elif value.lstrip("-").isdigit():
            original.sysctls[key] = int(value)
    return original


def original_record(facts: HostFacts, plan: Plan, recorded: str | None = None) -> str:
    """
    The record after this run: ``recorded`` (the file as it is, or ``None``) kept line for line,
    with a line added for each value this plan owns that the record lacks. Such a value has
    never been changed by conntune, so its live value now is the one to restore.
    """
    known = parse_original(recorded or "")
    lines = [recorded] if recorded else [HEADER]
    if plan.buckets is not None and facts.buckets is not None and known.buckets is None:
        lines.append(f"{HASHSIZE_RECORD} = {facts.buckets}\n")
    for key in plan.sysctls:
        if key in facts.sysctls and key != BUCKETS_KEY and key not in known.sysctls:
            lines.append(f"{key} = {facts.sysctls[key]}\n")
    if plan.cake is not None and plan.cake.interface not in known.qdiscs:
        qdisc = facts.root_qdisc(plan.cake.interface)
        lines.append(f"qdisc.{plan.cake.interface} = {qdisc.kind if qdisc else 'none'}\n")
    if recorded and not recorded.endswith("\n") and len(lines) > 1:
        lines[0] += "\n"
    return "".join(lines)
