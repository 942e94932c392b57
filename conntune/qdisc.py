"""
Queueing disciplines as ``tc -j -s qdisc show`` reports them, typed.

Units are converted once, here: iproute2 prints CAKE's ``bandwidth`` and a tin's
``threshold_rate`` in bytes per second (tc/q_cake.c, cake_print_opt: ``print_uint(PRINT_JSON,
"bandwidth", ...)`` of the kernel's byte rate), the fields below are bits per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from conntune.units import format_rate

# CAKE's tin names by tin count (tc/q_cake.c, cake_print_xstats: "Bulk Best Effort Video Voice")
TIN_NAMES = {
    1: ("besteffort",),
    3: ("bulk", "besteffort", "voice"),
    4: ("bulk", "besteffort", "video", "voice"),
}


@dataclass(frozen=True)
class CakeOptions:
    """The options of a ``cake`` or ``cake_mq`` qdisc, as the kernel reports them back."""

    bandwidth_bit: int | None  # None: unlimited
    diffserv: str | None = None
    flowmode: str | None = None
    nat: bool | None = None
    wash: bool | None = None
    ingress: bool | None = None
    ack_filter: str | None = None  # "disabled", "enabled", "aggressive"
    split_gso: bool | None = None
    rtt_us: int | None = None
    raw: bool | None = None
    atm: str | None = None  # "noatm", "atm", "ptm"
    overhead: int | None = None
    mpu: int | None = None


@dataclass(frozen=True)
class CakeTin:
    """One CAKE tin's statistics (``tc -s``). Delays in µs; bytes counted at enqueue."""

    name: str
    threshold_rate_bit: int | None = None
    sent_bytes: int | None = None
    sent_packets: int | None = None
    backlog_bytes: int | None = None
    target_us: int | None = None
    interval_us: int | None = None
    peak_delay_us: int | None = None
    avg_delay_us: int | None = None
    base_delay_us: int | None = None  # tc's text output calls it "sp_delay"
    drops: int | None = None
    ecn_mark: int | None = None
    ack_drops: int | None = None
    sparse_flows: int | None = None
    bulk_flows: int | None = None
    unresponsive_flows: int | None = None


@dataclass(frozen=True)
class Qdisc:
    """One qdisc of one device; counters are ``None`` without ``tc -s``."""

    dev: str | None
    kind: str | None
    handle: str | None = None
    parent: str | None = None
    root: bool = False
    cake: CakeOptions | None = None  # for kind "cake" and "cake_mq"
    bytes: int | None = None
    packets: int | None = None
    drops: int | None = None
    backlog: int | None = None
    tins: tuple[CakeTin, ...] = ()

    @property
    def is_cake(self) -> bool:
        return self.kind in ("cake", "cake_mq")

    def describe(self) -> str:
        """``cake 1gbit besteffort``, ``cake_mq 10gbit diffserv3`` or just the kind."""
        if self.cake is None:
            return self.kind or "?"
        rate = (
            "unlimited" if self.cake.bandwidth_bit is None else format_rate(self.cake.bandwidth_bit)
        )
        return f"{self.kind} {rate} {self.cake.diffserv or '?'}"
