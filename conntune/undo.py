"""
Undo (``conntune_state: absent``, ``conntune revert``): remove conntune's files and CAKE, and
restore the live values recorded in ``paths.ORIGINAL_FILE`` before conntune's first change.
"""

from __future__ import annotations

from conntune import paths
from conntune.hostfacts import MAX_KEY, HostFacts
from conntune.original import parse_original
from conntune.plan import Plan


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
    if original.skipped:  # keep the record, so that whoever edited it can see what was left
        out.files[paths.ORIGINAL_FILE] = original_text
        out.warnings.append(
            f"{paths.ORIGINAL_FILE}: not restored, not a value conntune records or one the kernel "
            f"would refuse: {'; '.join(repr(line) for line in original.skipped)}. The record is "
            "kept; fix or remove those lines"
        )
    out.reasons.append(
        "conntune_state: absent: remove conntune's files and CAKE, restore "
        f"{len(original.sysctls) + (original.buckets is not None)} recorded live values"
    )
