"""
Undo (``conntune_state: absent``, ``conntune revert``): remove conntune's files and CAKE, and
restore the live values recorded in ``paths.ORIGINAL_FILE`` before conntune's first change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conntune import paths
from conntune.hostfacts import MAX_KEY, HostFacts
from conntune.plan import Plan
from conntune.render import HASHSIZE_RECORD


@dataclass
class Original:
    """What ``render.original_record`` recorded: the live values before conntune's first change."""

    sysctls: dict[str, int] = field(default_factory=dict)
    buckets: int | None = None
    qdiscs: dict[str, str] = field(default_factory=dict)


def parse_original(text: str) -> Original:
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


def plan_absent(facts: HostFacts, out: Plan) -> None:
    original_text = facts.owned_files.get(paths.ORIGINAL_FILE)
    original = parse_original(original_text or "")
    if original_text is None:
        out.warnings.append(
            f"{paths.ORIGINAL_FILE} is missing: live values cannot be restored, files only"
        )
    out.buckets = original.buckets
    out.timeouts = {key: value for key, value in original.sysctls.items() if key != MAX_KEY}
    out.conntrack_max = original.sysctls.get(MAX_KEY)
    if not facts.knob_writable(MAX_KEY):
        out.conntrack_max = out.buckets = None
    out.timeouts = {key: value for key, value in out.timeouts.items() if facts.knob_writable(key)}
    for iface, kind in original.qdiscs.items():
        current = facts.root_qdisc(iface)
        if kind not in ("cake", "cake_mq") and current is not None and current.is_cake:
            out.cake_remove = iface
    out.files = {path: None for path in paths.OWNED_FILES}
    out.reasons.append(
        "conntune_state: absent: remove conntune's files and CAKE, restore "
        f"{len(original.sysctls) + (original.buckets is not None)} recorded live values"
    )
