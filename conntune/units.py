"""Parsing of human-written rates and sizes (no pyinfra, no host access)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# tc(8) units: decimal SI for bit rates, IEC with "i" (TC "Rates" section); "bps" means BYTES/s.
_RATE_UNITS = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "kibit": 2**10,
    "mibit": 2**20,
    "gibit": 2**30,
    "tibit": 2**40,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
}

# tc keeps whole bytes per second (iproute2 lib/utils_math.c, get_rate64: "bps /= 8"), and a
# CAKE bandwidth of 0 means unlimited (tc-cake(8)): a rate below this would shape nothing
TC_MIN_RATE_BIT = 8

# Above the fastest Ethernet in service; anything larger is a typo (10tbit), not a link.
MAX_RATE_BIT = 800 * 10**9

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_rate_bit(value: object) -> int:
    """
    A rate as tc spells it (``1000mbit``, ``1gbit``, ``2.5gbit``, ``100mibit``) in bit/s.
    A bare number means Mbit/s. Raises ``ValueError`` with the reason.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a rate")
    if isinstance(value, int | float):
        number, unit = float(value), "mbit"
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a rate (expected e.g. 1000mbit or 1gbit)")
        number, unit = float(match.group(1)), (match.group(2).lower() or "mbit")
    else:
        raise ValueError(f"{value!r} is not a rate")
    if unit not in _RATE_UNITS:
        raise ValueError(
            f"unknown rate unit {unit!r} (tc's units: bit, kbit, mbit, gbit, tbit, kibit..tibit; "
            "bps, kbps, mbps, gbps are BYTES per second)"
        )
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a rate")
    bits = round(number * _RATE_UNITS[unit])
    if bits <= 0:
        raise ValueError(f"{value!r}: a rate must be above zero")
    if bits < TC_MIN_RATE_BIT:
        raise ValueError(
            f"{value!r} is below 8bit: tc would store 0 bytes/s, which CAKE reads as unlimited"
        )
    if bits > MAX_RATE_BIT:
        raise ValueError(f"{value!r} is above {MAX_RATE_BIT // 10**9} gbit: not a real link")
    return bits


@dataclass(frozen=True)
class Bandwidth:
    """A CAKE rate as the operator gave it: bits per second, or a share of the link speed."""

    bit: int | None = None
    percent: float | None = None

    def resolve(self, link_mbit: int | None) -> int | None:
        """Bits per second; ``None`` for a share of a link whose speed is unknown."""
        if self.bit is not None:
            return self.bit
        if link_mbit is None or self.percent is None:
            return None
        return round(link_mbit * 10**6 * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else format_rate(self.bit or 0)


def parse_bandwidth(value: object) -> Bandwidth:
    """``cake_bandwidth``: a tc rate (``parse_rate_bit``) or a percentage of the link, ``95%``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1].strip()
        if not re.fullmatch(r"\d+(?:\.\d+)?", text):
            raise ValueError(f"{value!r} is not a rate or a percentage (e.g. 95%)")
        percent = float(text)
        if not 0 < percent <= 100:
            raise ValueError(f"{value!r}: a share of the link speed must be in (0, 100] %")
        return Bandwidth(percent=percent)
    return Bandwidth(bit=parse_rate_bit(value))


def parse_size_bytes(value: object) -> int:
    """A memory size (``65786680000``, ``64G``, ``64GiB``) in bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r}")
    size = round(number * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"{value!r}: a size must be above zero")
    return size


def format_rate(bits: int) -> str:
    """The shortest exact tc spelling of a bit rate: 1000000000 -> ``1gbit``."""
    if bits == 0:
        return "0bit"
    for unit in ("tbit", "gbit", "mbit", "kbit"):
        scale = _RATE_UNITS[unit]
        if bits % scale == 0:
            return f"{bits // scale}{unit}"
    return f"{bits}bit"


def format_bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def human_rate(bits: float) -> str:
    """A measured rate for people: ``9.9 Mbit``."""
    for unit, scale in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
        if bits >= scale:
            return f"{bits / scale:.1f} {unit}"
    return f"{bits:.0f} bit"
