"""
The undo record (``paths.ORIGINAL_FILE``): each live value conntune owns, as it was before
conntune first changed it. ``conntune revert`` (``conntune_state: absent``) puts them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conntune import paths, profiles
from conntune.hostfacts import BUCKETS_KEY, MAX_KEY, HostFacts
from conntune.plan import Plan
from conntune.settings import INT_MAX

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
    # lines that are not a value conntune records, or a value the kernel would refuse: an undo
    # never writes them (the record is a root-owned file, but a hand edit must not reach the kernel)
    skipped: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.sysctls) + (self.buckets is not None) + len(self.qdiscs)


def _valid(key: str, value: str) -> bool:
    if not re.fullmatch(r"-?\d+", value):
        return False
    number = int(value)
    if key == MAX_KEY:  # 0 was "no limit" before Linux 7.x; a C int (settings.INT_MAX)
        return 0 <= number <= INT_MAX
    if key == HASHSIZE_RECORD:
        return 1 <= number <= INT_MAX
    return key in profiles.LINUX_DEFAULTS and 1 <= number <= profiles.MAX_TIMEOUT


def parse_original(text: str) -> Original:
    """The record's values; every other line (comments aside) is listed in ``skipped``."""
    original = Original()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not line.strip() or key.startswith("#"):
            continue
        if key.startswith("qdisc.") and re.fullmatch(r"[\w.-]+", value):
            original.qdiscs[key.removeprefix("qdisc.")] = value
        elif sep and _valid(key, value):
            if key == HASHSIZE_RECORD:
                original.buckets = int(value)
            else:
                original.sysctls[key] = int(value)
        else:
            original.skipped.append(line.strip())
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


def released_timeouts(facts: HostFacts, sysctl_file: str) -> dict[str, int]:
    """
    The timeouts conntune's sysctl file sets on the host today, with the value each had before
    conntune first set it: a plan that no longer asks for one puts it back to that value
    (rather than leaving conntune's old value live until the next boot).
    """
    on_host = facts.owned_files.get(sysctl_file)
    recorded = parse_original(facts.owned_files.get(paths.ORIGINAL_FILE) or "")
    released = {}
    for line in (on_host or "").splitlines():
        key = line.partition("=")[0].strip()
        if key in profiles.LINUX_DEFAULTS and key in recorded.sysctls:
            released[key] = recorded.sysctls[key]
    return released
