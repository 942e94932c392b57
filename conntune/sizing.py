"""
Conntrack table sizing arithmetic (domain.md §1-§2). Pure functions of numbers.
"""

from __future__ import annotations

import math

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
