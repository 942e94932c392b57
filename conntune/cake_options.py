"""
CAKE's options beyond the rate: what each setting sends to ``tc`` and what the kernel then
reports back through ``tc -j`` (so drift is seen), from iproute2's tc/q_cake.c
(cake_parse_opt, cake_print_opt) and tc-cake(8).

``tc qdisc replace`` on an existing CAKE changes only the options it is given (the kernel's
cake_change keeps the others), so every option is always sent, defaults included: the live
qdisc then depends on the settings alone, never on what was set before.
"""

from __future__ import annotations

import re

from conntune.plan import CakePlan
from conntune.qdisc import CakeOptions, Qdisc

# rtt keywords and their interval in µs (tc/q_cake.c, presets[]: "internet" is CAKE's default)
RTT_PRESETS = {
    "datacentre": 100,
    "lan": 1_000,
    "metro": 10_000,
    "regional": 30_000,
    "internet": 100_000,
    "oceanic": 300_000,
    "satellite": 1_000_000,
    "interplanetary": 1_000_000_000,
}
# overhead keywords: (overhead bytes, atm mode, mpu) as cake_parse_opt sets them; "raw" also
# sets the raw flag (no compensation at all, CAKE's default)
OVERHEAD_PRESETS: dict[str, tuple[int, str | None, int | None]] = {
    "raw": (0, None, None),
    "ethernet": (38, "noatm", 84),
    "docsis": (18, "noatm", 64),
    "pppoe-ptm": (30, "ptm", None),
    "bridged-ptm": (22, "ptm", None),
    "conservative": (48, "atm", None),
}
FLOW_ISOLATION = (
    "triple-isolate", "dual-srchost", "dual-dsthost", "hosts", "flows", "srchost", "dsthost",
    "flowblind",
)  # fmt: skip
ACK_FILTER = {"disabled": "no-ack-filter", "enabled": "ack-filter",
              "aggressive": "ack-filter-aggressive"}  # fmt: skip
# tc rejects these (cake_parse_opt: "Illegal \"overhead\", valid range is -64 to 256", mpu 0..256)
OVERHEAD_RANGE = (-64, 256)
MPU_RANGE = (0, 256)
_TIME_UNITS = {"s": 1_000_000, "sec": 1_000_000, "ms": 1_000, "msec": 1_000, "us": 1,
               "usec": 1}  # fmt: skip


def parse_rtt(value: object) -> str | int:
    """``cake_rtt``: a keyword (``internet``, ``lan``...) or a time with a unit (``50ms``) in µs."""
    if value in RTT_PRESETS:
        return value  # type: ignore[return-value]
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|ms|msec|us|usec)\s*", str(value))
    if not isinstance(value, str) or not match:
        raise ValueError(
            f"{value!r} is not a round-trip time: a time with its unit (50ms, 1s) or one of "
            + ", ".join(RTT_PRESETS)
        )
    micros = round(float(match.group(1)) * _TIME_UNITS[match.group(2)])
    if not 1 <= micros <= 3_600_000_000:
        raise ValueError(f"{value!r} is outside 1us..3600s")
    return micros


def parse_overhead(value: object) -> str | int:
    """``cake_overhead``: bytes per packet (-64..256) or a link-layer keyword."""
    if value in OVERHEAD_PRESETS:
        return value  # type: ignore[return-value]
    low, high = OVERHEAD_RANGE
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    raise ValueError(
        f"{value!r} is not bytes of overhead in {low}..{high} nor one of "
        + ", ".join(OVERHEAD_PRESETS)
    )


def rtt_micros(rtt: str | int) -> int:
    return RTT_PRESETS[rtt] if isinstance(rtt, str) else rtt


def tokens(cake: CakePlan) -> list[str]:
    """Every option after the rate and the diffserv mode, in tc's words."""
    words = [
        cake.flowmode,
        "nat" if cake.nat else "nonat",
        "wash" if cake.wash else "nowash",
        "split-gso" if cake.split_gso else "no-split-gso",
        ACK_FILTER[cake.ack_filter],
    ]
    words += [cake.rtt] if isinstance(cake.rtt, str) else ["rtt", f"{cake.rtt}us"]
    if isinstance(cake.overhead, str):
        # "noatm" first: a keyword that leaves the ATM mode alone would keep the old one
        words += [cake.overhead] if cake.overhead == "raw" else ["noatm", cake.overhead]
    else:
        words += ["noatm", "overhead", str(cake.overhead)]
    if cake.mpu is not None:
        words += ["mpu", str(cake.mpu)]
    return words


def expected(cake: CakePlan) -> CakeOptions:
    """The options ``tc -j`` reports once ``cake`` is applied."""
    if isinstance(cake.overhead, str):
        overhead, atm, mpu = OVERHEAD_PRESETS[cake.overhead]
    else:
        overhead, atm, mpu = cake.overhead, "noatm", None
    if cake.mpu is not None:
        mpu = cake.mpu
    return CakeOptions(
        bandwidth_bit=cake.bandwidth_bit,
        diffserv=cake.diffserv,
        flowmode=cake.flowmode,
        nat=cake.nat,
        wash=cake.wash,
        ingress=False,
        ack_filter=cake.ack_filter,
        split_gso=cake.split_gso,
        rtt_us=rtt_micros(cake.rtt),
        raw=cake.overhead == "raw",
        atm=atm,
        overhead=overhead,
        mpu=mpu or None,  # tc prints mpu only when it is not 0
    )


def differences(qdisc: Qdisc | None, cake: CakePlan) -> list[str]:
    """The options of a live root qdisc that differ from the planned CAKE, by name."""
    if qdisc is None or qdisc.kind != cake.kind or qdisc.cake is None:
        return ["kind"]
    want, have = expected(cake), qdisc.cake
    return [
        name for name in want.__dataclass_fields__ if getattr(want, name) != getattr(have, name)
    ]


def needs_recreate(qdisc: Qdisc | None, cake: CakePlan) -> bool:
    """
    Whether ``replace`` cannot get there: tc sends mpu only when it is above 0, so a live mpu
    cannot be set back to 0 in place; the qdisc is then deleted and added again.
    """
    if qdisc is None or qdisc.kind != cake.kind or qdisc.cake is None:
        return False
    return bool(qdisc.cake.mpu) and not expected(cake).mpu


def describe(cake: CakePlan) -> list[str]:
    """Each chosen option and why, for `conntune plan`."""
    why = [f"flow isolation {cake.flowmode}" + (" (CAKE's default)" if cake.flowmode ==
                                               "triple-isolate" else "")]  # fmt: skip
    if cake.nat:
        why.append("nat: fairness by the hosts behind the NAT (reads conntrack's mappings)")
    if cake.wash:
        why.append("wash: DSCP marks cleared on egress (after CAKE used them for its tins)")
    if cake.ack_filter != "disabled":
        why.append(f"ack filter {cake.ack_filter}: drops redundant TCP ACKs (asymmetric links)")
    if not cake.split_gso:
        why.append("no-split-gso: GSO super-packets kept whole (more throughput above "
                   "~10 Gbit/s, tc-cake(8))")  # fmt: skip
    rtt = rtt_micros(cake.rtt)
    why.append(f"rtt {rtt / 1000:g} ms" + (f" ({cake.rtt})" if isinstance(cake.rtt, str) else ""))
    if isinstance(cake.overhead, str):
        overhead, atm, mpu = OVERHEAD_PRESETS[cake.overhead]
        if cake.overhead == "raw":
            why.append("overhead raw: no link-layer compensation (an Ethernet NIC shaped at "
                       "its own rate)")  # fmt: skip
        else:
            why.append(f"overhead {cake.overhead}: {overhead} bytes per packet"
                       + (f", {atm} framing" if atm and atm != "noatm" else "")
                       + (f", mpu {mpu}" if mpu else ""))  # fmt: skip
    else:
        why.append(f"overhead {cake.overhead} bytes per packet")
    if cake.mpu is not None:
        why.append(f"mpu {cake.mpu} bytes")
    return why
