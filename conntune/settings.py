"""
conntune's settings, each declared once: the fields of ``Settings``, with their type, default,
allowed values and help. The same declarations drive validation (``settings_from_data``), the
defaults, the options of ``conntune plan`` and the check that ``inventories/group_data/all.py``
documents every setting. Values come from pyinfra host/group data (or ``--data``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from conntune import cake_options, profiles
from conntune.units import Bandwidth, parse_bandwidth


class SettingError(ValueError):
    """A setting (or a host fact it depends on) that conntune refuses, and why."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class InvalidSettings(ValueError):
    """All the reasons a host's settings were refused (reported together, before any change)."""

    def __init__(self, errors: list[SettingError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


# --- value checkers: each returns the clean value or raises ValueError with the reason ---------


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not true or false")


def integer(low: int, high: int | None = None, optional: bool = False) -> Callable:
    def check(value: object) -> int | None:
        if value is None and optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            if low == 1:
                what = "a positive integer" + (f" up to {high}" if high is not None else "")
            else:
                what = f"an integer in {low}..{high}"
            raise ValueError(f"{value!r} is not {what}")
        return value

    check.range = (low, high)  # type: ignore[attr-defined]
    return check


def number(low: float, high: float, low_open: bool = False, reason: str = "") -> Callable:
    def check(value: object) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and (value > low if low_open else value >= low) and value <= high:
            return value  # type: ignore[return-value]
        bound = f"({low:g}, {high:g}]" if low_open else f"{low:g}..{high:g}"
        extra = reason if ok and value > high else ""
        raise ValueError(f"{value!r} is outside {bound}{extra}")

    return check


def choice(*allowed: str, unknown: str = "") -> Callable:
    """One of ``allowed``; ``unknown`` names the thing in the message ("unknown mode 'x'")."""

    def check(value: object) -> str:
        if value in allowed:
            return value  # type: ignore[return-value]
        if unknown:
            raise ValueError(f"unknown {unknown} {value!r} (one of: {', '.join(allowed)})")
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")

    check.choices = allowed  # type: ignore[attr-defined]
    return check


def interface_name(value: object) -> str | None:
    # IFNAMSIZ is 16 with the NUL; the kernel refuses "/", whitespace and ":" (dev_valid_name)
    if value is None:
        return None
    if (
        isinstance(value, str)
        and 0 < len(value) < 16
        and value not in (".", "..")
        and not any(c in value for c in "/: \t\n'\"$`;&|<>\\")
    ):
        return value
    raise ValueError(f"{value!r} is not an interface name")


def bandwidth(value: object) -> Bandwidth | None:
    return None if value is None else parse_bandwidth(value)


def timeouts(value: object) -> dict[str, int]:
    """``{name: seconds}`` with short or full sysctl names; each bad entry is named."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of name -> seconds")
    clean: dict[str, int] = {}
    spelled: dict[str, str] = {}
    problems = []
    for name, seconds in value.items():
        key = profiles.timeout_key(str(name))
        where = f"conntrack_timeouts.{name}"
        if key in spelled:
            problems.append(
                SettingError(where, f"the same timeout as {spelled[key]!r}: give it once")
            )
        spelled.setdefault(key, str(name))
        if key not in profiles.LINUX_DEFAULTS:
            known = ", ".join(profiles.short_name(k) for k in profiles.LINUX_DEFAULTS)
            problems.append(SettingError(where, f"unknown timeout (known: {known})"))
        elif (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or not (1 <= seconds <= profiles.MAX_TIMEOUT)
        ):
            problems.append(SettingError(
                where, f"{seconds!r} is not a whole number of seconds in 1..{profiles.MAX_TIMEOUT}"
            ))  # fmt: skip
        else:
            clean[key] = seconds
    if problems:
        raise InvalidSettings(problems)
    return clean


def setting(default: Any, check: Callable, help: str, cli: tuple[str, ...] = ()) -> Any:
    """A ``Settings`` field: its default, its checker, its help and extra CLI option names."""
    metadata = {"check": check, "help": help, "cli": cli}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# nf_conntrack_max is a C int read by proc_dointvec(_minmax), which refuses larger values
# (net/netfilter/nf_conntrack_standalone.c nf_ct_sysctl_table[NF_SYSCTL_CT_MAX]: maxlen sizeof(int);
# kernel/sysctl.c do_proc_dointvec_conv)
INT_MAX = 2**31 - 1

CHAIN_LIMIT_REASON = (
    ": since Linux 5.15 (d7e7747ac5c2) the kernel drops inserts when one hash chain grows past "
    "a random limit, so more than 4 entries per bucket at max drops packets before the table "
    "is full"
)


@dataclass(frozen=True)
class Settings:
    """Every conntune setting. The metadata of each field is its whole declaration."""

    conntrack_max: int | None = setting(
        None, integer(1, INT_MAX, optional=True),
        "nf_conntrack_max. Default: MemTotal / 16384 / 2 rounded up to a power of two",
        cli=("--max",),
    )  # fmt: skip
    conntrack_allow_shrink: bool = setting(
        False, boolean, "lower a live nf_conntrack_max that is already higher than the plan"
    )
    conntrack_hashsize_ratio: float = setting(
        1, number(1, 4, reason=CHAIN_LIMIT_REASON),
        "entries per hash bucket when the table is full (buckets = max / ratio), 1..4",
        cli=("--hashsize-ratio",),
    )  # fmt: skip
    conntrack_max_memory_percent: float = setting(
        5, number(0, 50, low_open=True),
        "refuse a plan whose worst-case table memory is above this share of RAM",
    )  # fmt: skip
    conntrack_timeout_profile: str = setting(
        profiles.DEFAULT_PROFILE, choice(*profiles.PROFILES, unknown="profile"),
        "timeout profile: server, routeros, kube-proxy or kernel (`conntune profiles`)",
        cli=("--profile",),
    )  # fmt: skip
    conntrack_timeouts: dict[str, int] = setting(
        {}, timeouts, "single timeout overrides in seconds, short or full sysctl names"
    )
    cake: bool = setting(True, boolean, "put CAKE on the egress interface")
    cake_interface: str | None = setting(
        None, interface_name, "CAKE's interface. Default: the device of the default route"
    )
    cake_bandwidth: Bandwidth | None = setting(
        None, bandwidth,
        "CAKE's rate: tc units (1gbit, 950mbit; a bare number is Mbit/s) or a share of the "
        "link speed (95%). Default: the link speed the NIC reports",
        cli=("--bandwidth",),
    )  # fmt: skip
    cake_diffserv: str = setting(
        "besteffort", choice("besteffort", "diffserv3", "diffserv4", "diffserv8", "precedence",
                             unknown="mode"),
        "CAKE's priority tins", cli=("--diffserv",),
    )  # fmt: skip
    cake_flow_isolation: str = setting(
        "triple-isolate", choice(*cake_options.FLOW_ISOLATION, unknown="flow isolation"),
        "CAKE's flow isolation: triple-isolate, dual-srchost, dual-dsthost, hosts, flows, "
        "srchost, dsthost or flowblind",
    )  # fmt: skip
    cake_nat: bool = setting(False, boolean, "isolate hosts behind NAT by their inner address")
    cake_wash: bool = setting(False, boolean, "clear DSCP marks after CAKE has used them")
    cake_ack_filter: str = setting(
        "disabled", choice(*cake_options.ACK_FILTER, unknown="ack filter"),
        "drop redundant TCP ACKs: disabled, enabled or aggressive",
    )  # fmt: skip
    cake_split_gso: bool = setting(True, boolean, "split GSO super-packets (CAKE's default)")
    cake_rtt: str | int = setting(
        "internet", cake_options.parse_rtt,
        "expected round-trip time: 50ms, 1s... or datacentre, lan, metro, regional, internet "
        "(100 ms, the default), oceanic, satellite, interplanetary",
    )  # fmt: skip
    cake_overhead: str | int = setting(
        "raw", cake_options.parse_overhead,
        "per-packet link-layer overhead: bytes (-64..256) or ethernet, docsis, pppoe-ptm, "
        "bridged-ptm, conservative, raw (none, the default)",
    )  # fmt: skip
    cake_mpu: int | None = setting(
        None, integer(*cake_options.MPU_RANGE, optional=True),
        "minimum packet size CAKE accounts, bytes (0..256)",
    )  # fmt: skip
    cake_force_single_queue: bool = setting(
        False, boolean,
        "put one single-queue CAKE in front of a link faster than one instance shapes (2.5 Gbit/s)",
    )  # fmt: skip
    firewalld_restart: str = setting(
        "on-change", choice("on-change", "never", "always"),
        "restart firewalld: when this run changed a conntune file, never, or always",
    )  # fmt: skip
    firewalld_restart_old_docker: bool = setting(
        False, boolean, "restart firewalld even next to Docker < 28.3.3 (CVE-2025-54388)"
    )
    conntune_state: str = setting(
        "present", choice("present", "absent"), "absent: undo conntune on the host"
    )
    conntune_override_conflicts: bool = setting(
        False, boolean, "manage keys that another sysctl file, kube-proxy or Cilium also sets"
    )
    conntune_lock_wait: int = setting(
        30, integer(0, 3600),
        "seconds to wait for another conntune run converging the same host before calling it busy",
    )  # fmt: skip


SPECS = {spec.name: spec for spec in fields(Settings)}
DEFAULTS: dict[str, object] = {
    name: (spec.default_factory() if spec.default is MISSING else spec.default)  # type: ignore[misc]
    for name, spec in SPECS.items()
}
_PREFIXES = ("conntrack_", "cake_", "conntune_", "firewalld_", "nf_conntrack", "net.netfilter")
# what a revert (conntune_state: absent) reads: a bad value elsewhere must not block an undo
UNDO_SETTINGS = (
    "conntune_state", "conntune_lock_wait", "firewalld_restart", "firewalld_restart_old_docker"
)  # fmt: skip


def _unknown_key(key: str) -> SettingError | None:
    """A key that is not a setting but looks like one (a prefix, or a near spelling)."""
    if key in SPECS:
        return None
    near = difflib.get_close_matches(key.lower().replace("-", "_"), SPECS, n=1, cutoff=0.85)
    if near:
        return SettingError(key, f"unknown setting: did you mean {near[0]}?")
    if key.lower().startswith(_PREFIXES):
        return SettingError(key, "unknown setting (see inventories/group_data/all.py)")
    return None


def settings_from_data(data: Mapping[str, object]) -> Settings:
    """
    Validate host data into ``Settings``. Raises ``InvalidSettings`` listing every bad key.
    Keys that look like conntune's (``conntrack_*``, ``cake_*``, ``nf_conntrack_max``, or a near
    spelling of a setting) but are unknown are refused: a typo must not silently fall back to a
    default. With ``conntune_state: absent`` only ``UNDO_SETTINGS`` are read: an undo plans from
    the host's record, so a bad value elsewhere never blocks it.
    """
    undo = data.get("conntune_state") == "absent"
    errors = [] if undo else [e for key in data if (e := _unknown_key(str(key))) is not None]
    values = {}
    for name, spec in SPECS.items():
        if undo and name not in UNDO_SETTINGS:
            values[name] = DEFAULTS[name]  # an undo plans from the record, not from settings
            continue
        raw = data.get(name, DEFAULTS[name])
        try:
            values[name] = spec.metadata["check"](raw)
        except InvalidSettings as named:  # a mapping whose entries are named one by one
            errors += named.errors
        except ValueError as error:
            errors.append(SettingError(name, str(error)))
    if errors:
        raise InvalidSettings(errors)
    return Settings(**values)
