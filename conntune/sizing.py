"""
Sizing the conntrack table: ``nf_conntrack_max``, the number of hash buckets, and what a full
table costs in memory. Sources: docs/kernel-facts.md §1-§2 (nf_conntrack_core.c).
"""

from __future__ import annotations

import math

from conntune.hostfacts import (
    BUCKETS_KEY,
    HASHSIZE_PARAMETER,
    MAX_KEY,
    HostFacts,
)
from conntune.plan import Conflict, Plan
from conntune.settings import SettingError, Settings
from conntune.units import format_bytes

# Buckets are allocated in whole pages of 8-byte hlist_nulls_head: the kernel rounds the hash
# size up to PAGE_SIZE / sizeof(struct hlist_nulls_head) = 4096 / 8 = 512
# (nf_conntrack_core.c, nf_ct_alloc_hashtable: roundup(*sizep, PAGE_SIZE / sizeof(...))).
BUCKET_ROUNDING = 512
# The nf_conntrack slab object is 256-384 bytes by kernel and arch (/proc/slabinfo); extensions
# (NAT, acct, timestamp) add ~64-200 bytes. Used when the host's slabinfo is unreadable.
DEFAULT_OBJSIZE = 320
EXTENSIONS_BYTES = 128
BUCKET_BYTES = 8


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def default_conntrack_max(mem_bytes: int) -> int:
    """
    The blog's rule, which is the 2.4/2.6-era kernel default: RAM / 16384 / 2, rounded up to a
    power of two (64 GB -> 2097152). Costs about 1.2 % of RAM when the table is full.
    """
    return next_power_of_two(math.ceil(mem_bytes / 16384 / 2))


def buckets_for(conntrack_max: int, ratio: float) -> int:
    """max / ratio entries per bucket, rounded up to the kernel's allocation unit."""
    raw = math.ceil(conntrack_max / ratio)
    return max(BUCKET_ROUNDING, math.ceil(raw / BUCKET_ROUNDING) * BUCKET_ROUNDING)


def memory_worst_case(conntrack_max: int, buckets: int, objsize: int | None) -> int:
    """Bytes the table costs when full: entries with extensions, plus the bucket array."""
    per_entry = (objsize or DEFAULT_OBJSIZE) + EXTENSIONS_BYTES
    return conntrack_max * per_entry + buckets * BUCKET_BYTES


def live_ratio_explained(
    conntrack_max: int | None, buckets: int | None, kernel: tuple[int, int] | None = None
) -> str | None:
    """What the live max/buckets ratio says about how the table was sized (``kernel``: the
    running kernel's version, when known: a default is named only where it is one)."""
    if not conntrack_max or not buckets:
        return None
    ratio = conntrack_max / buckets
    known = {
        1: "the kernel default since 5.15 (max = buckets, d532bcd0b269)",
        4: "the kernel default before 5.15 (max = 4 x buckets)",
        8: "max = 8 x hashsize: what a `hashsize=` module option sets at load",
    }
    if kernel is not None:
        del known[4 if kernel >= (5, 15) else 1]
    why = known.get(int(ratio)) if ratio.is_integer() else None
    return (
        f"live table: nf_conntrack_max {conntrack_max}, {buckets} buckets, "
        f"{ratio:g} per bucket when full" + (f": {why}" if why else "")
    )


def table_read_only(facts: HostFacts) -> str | None:
    """Why the table size cannot be set from this host, or ``None`` when it can."""
    if not facts.conntrack_loaded:
        return None  # loaded by the plan (check_host refuses where it cannot be loaded)
    if MAX_KEY not in facts.sysctls:
        return (
            "nf_conntrack_max does not exist in this network namespace (it belongs to a user "
            "namespace, e.g. an unprivileged or systemd-nspawn -U container): the table is "
            "sized by the host's kernel; size it on the host"
        )
    old_kernel = facts.kernel_version is not None and facts.kernel_version < (5, 13)
    if old_kernel and facts.shares_host_network_namespace is False and facts.knob_writable(MAX_KEY):
        # before 5.13 the global knobs stayed 0644 in other network namespaces, and a write
        # there sets the host's table (2671fa4dc010 made them 0444); the hash size refuses
        # any namespace but the host's (nf_conntrack_set_hashsize: EOPNOTSUPP)
        return (
            "this is a network namespace other than the host's (no net.nf_conntrack_max "
            "alias, which the kernel registers in the host's only): nf_conntrack_max here is "
            "the host's table, writable from a container only on kernels before 5.13 "
            "(2671fa4dc010), and the hash size cannot be set here at all: the table is sized "
            "by the host's kernel; size it on the host"
        )
    if not facts.knob_writable(MAX_KEY):
        mount = facts.mount_covering("/proc/sys/net/netfilter/nf_conntrack_max")
        userns = facts.userns_net_blocked()
        if userns is not None:
            why = userns
        elif mount is not None and mount.read_only:
            why = f"{mount.mountpoint} is mounted read-only"
        else:
            why = "0444 in a network namespace other than the host's, e.g. a container"
        return (
            f"nf_conntrack_max and the hash size are read-only here ({why}): the table is "
            "sized by the host's kernel; size it on the host"
        )
    return None


def plan_sizing(
    facts: HostFacts,
    s: Settings,
    out: Plan,
    errors: list[SettingError],
    conflicts: dict[str, Conflict],
) -> None:
    """The table size in force after this run: conntune's own, or the one another party keeps."""
    blocked = table_read_only(facts)
    if blocked:
        out.warnings.append(blocked)
        return
    live_max = facts.conntrack_max
    explained = live_ratio_explained(live_max, facts.buckets, facts.kernel_version)
    if explained:
        out.reasons.append(explained)
    owner = conflicts.get(MAX_KEY)
    if owner is not None and owner.wins:
        kept = _int(owner.value) if owner.value is not None else live_max
        if kept is None:
            out.warnings.append(f"nf_conntrack_max is set by {owner.owner}: left alone")
            return
        target = kept
        why = (
            f"nf_conntrack_max {kept}: kept, set by {owner.owner}; conntune does not write it "
            "(conntune_override_conflicts: true takes it over)"
        )
    else:
        target, why = _own_max(facts, s, errors)
        if target is None:
            return
        if live_max == 0:
            out.warnings.append(
                "the live nf_conntrack_max is 0: no limit (kernels before 6.x accept 0); "
                f"conntune writes {target}, never 0"
            )
        elif live_max is not None and live_max > target and not s.conntrack_allow_shrink:
            why = (
                f"nf_conntrack_max {live_max}: kept, the live value is above the planned "
                f"{target} (conntune never shrinks the table unless conntrack_allow_shrink is set)"
            )
            target = live_max
        out.conntrack_max = target
    out.reasons.append(why)

    ratio = s.conntrack_hashsize_ratio
    buckets = buckets_for(target, ratio)
    buckets_owner = conflicts.get(BUCKETS_KEY)
    sys_mount = facts.mount_covering(HASHSIZE_PARAMETER)
    if buckets_owner is not None and buckets_owner.wins:
        out.reasons.append(f"hash size: left to {buckets_owner.owner}")
    elif sys_mount is not None and sys_mount.read_only:
        out.warnings.append("the hash size cannot be set here: /sys is mounted read-only")
    else:
        out.buckets = buckets
        out.reasons.append(
            f"hash size {buckets}: nf_conntrack_max {target} / {ratio:g}"
            + (
                " (the kernel's own ratio since 5.15, d532bcd0b269)"
                if ratio == 1
                else f" ({ratio:g} entries per bucket when full)"
            )
            + f", rounded up to a multiple of {BUCKET_ROUNDING}; more than 4 per bucket drops "
            "packets below max since 5.15 (chain-length limit, d7e7747ac5c2)"
        )
    _plan_memory(facts, s, out, errors, target, out.buckets or facts.buckets or buckets)
    out.load_conntrack = not facts.conntrack_loaded


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _own_max(facts: HostFacts, s: Settings, errors: list[SettingError]) -> tuple[int | None, str]:
    count = facts.conntrack_count or 0
    if s.conntrack_max is not None:
        if s.conntrack_max < count:
            errors.append(SettingError(
                "conntrack_max",
                f"{s.conntrack_max} is below the {count} connections tracked right now: new "
                "connections would be dropped at once",
            ))  # fmt: skip
        return s.conntrack_max, f"nf_conntrack_max {s.conntrack_max}: set by conntrack_max"
    if facts.mem_bytes is None:
        errors.append(
            SettingError(
                "conntrack_max", "MemTotal could not be read: set conntrack_max explicitly"
            )
        )
        return None, ""
    target = default_conntrack_max(facts.mem_bytes)
    return target, (
        f"nf_conntrack_max {target}: MemTotal {format_bytes(facts.mem_bytes)} / 16384 / 2 = "
        f"{facts.mem_bytes // 32768}, rounded up to a power of two (the 2.6-era kernel default "
        "the blog used)"
    )


def _plan_memory(
    facts: HostFacts, s: Settings, out: Plan, errors: list[SettingError], target: int, buckets: int
) -> None:
    worst = memory_worst_case(target, buckets, facts.slab_objsize)
    out.memory_worst_case_bytes = worst
    if not facts.mem_bytes:
        return
    objsize = facts.slab_objsize or DEFAULT_OBJSIZE
    source = "slabinfo" if facts.slab_objsize else "typical, slabinfo unreadable"
    budget = int(facts.mem_bytes * s.conntrack_max_memory_percent / 100)
    out.memory_budget_bytes = budget
    share = 100 * worst / facts.mem_bytes
    out.reasons.append(
        f"memory when full: {target} x ({objsize} B object ({source}) + {EXTENSIONS_BYTES} B "
        f"extensions) + {buckets} x {BUCKET_BYTES} B = {format_bytes(worst)}, {share:.2f} % of "
        f"RAM (limit {s.conntrack_max_memory_percent:g} %)"
    )
    if worst > budget:
        message = (
            f"a table of {target} entries may use {format_bytes(worst)} ({share:.1f} % of "
            f"RAM), above conntrack_max_memory_percent={s.conntrack_max_memory_percent:g}"
        )
        if out.conntrack_max is None or target == facts.conntrack_max:
            out.warnings.append(f"nf_conntrack_max in force: {message}")
        else:
            errors.append(SettingError("conntrack_max", message))
