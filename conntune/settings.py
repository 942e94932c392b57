"""
conntune's settings: read from pyinfra host/group data (or the CLI), validated before any host
is touched. Documented for operators in ``inventories/group_data/all.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from conntune import profiles
from conntune.units import parse_rate_bit

DIFFSERV_MODES = ("besteffort", "diffserv3", "diffserv4", "diffserv8", "precedence")
FIREWALLD_RESTART = ("on-change", "never", "always")
STATES = ("present", "absent")

# Every key conntune reads from host data, with its default.
DEFAULTS: dict[str, object] = {
    "conntrack_max": None,
    "conntrack_allow_shrink": False,
    "conntrack_hashsize_ratio": 1,
    "conntrack_max_memory_percent": 5,
    "conntrack_timeout_profile": profiles.DEFAULT_PROFILE,
    "conntrack_timeouts": {},
    "cake": True,
    "cake_interface": None,
    "cake_bandwidth": None,
    "cake_diffserv": "besteffort",
    "firewalld_restart": "on-change",
    "firewalld_restart_old_docker": False,
    "conntune_state": "present",
    "conntune_override_conflicts": False,
}
KNOWN_TIMEOUTS = [profiles.short_name(key) for key in profiles.LINUX_DEFAULTS]
_PREFIXES = ("conntrack_", "cake_", "conntune_", "firewalld_")


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


@dataclass(frozen=True)
class Settings:
    conntrack_max: int | None = None
    conntrack_allow_shrink: bool = False
    conntrack_hashsize_ratio: float = 1
    conntrack_max_memory_percent: float = 5
    conntrack_timeout_profile: str = profiles.DEFAULT_PROFILE
    conntrack_timeouts: dict[str, int] = field(default_factory=dict)
    cake: bool = True
    cake_interface: str | None = None
    cake_bandwidth_bit: int | None = None
    cake_diffserv: str = "besteffort"
    firewalld_restart: str = "on-change"
    firewalld_restart_old_docker: bool = False
    conntune_state: str = "present"
    conntune_override_conflicts: bool = False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bool(name: str, value: object, errors: list[SettingError]) -> bool:
    if isinstance(value, bool):
        return value
    errors.append(SettingError(name, f"{value!r} is not true or false"))
    return False


def settings_from_data(data: Mapping[str, object]) -> Settings:
    """
    Validate host data into ``Settings``. Raises ``InvalidSettings`` listing every bad key.
    Keys that look like conntune's (``conntrack_*``, ``cake_*``...) but are unknown are refused:
    a typo must not silently fall back to a default.
    """
    errors: list[SettingError] = []
    get = {key: data.get(key, default) for key, default in DEFAULTS.items()}
    for key in data:
        if key.startswith(_PREFIXES) and key not in DEFAULTS:
            errors.append(SettingError(key, "unknown setting (see inventories/group_data/all.py)"))

    conntrack_max = get["conntrack_max"]
    if conntrack_max is not None and (not _is_int(conntrack_max) or conntrack_max < 1):
        errors.append(SettingError("conntrack_max", f"{conntrack_max!r} is not a positive integer"))
        conntrack_max = None

    allow_shrink = _bool("conntrack_allow_shrink", get["conntrack_allow_shrink"], errors)

    ratio = get["conntrack_hashsize_ratio"]
    if not _is_number(ratio) or not 1 <= ratio <= 4:
        reason = f"{ratio!r} is outside 1..4"
        if _is_number(ratio) and ratio > 4:
            reason += (
                ": since Linux 5.15 (d7e7747ac5c2) the kernel drops inserts when one hash chain"
                " grows past a random limit, so more than 4 entries per bucket at max drops"
                " packets before the table is full"
            )
        errors.append(SettingError("conntrack_hashsize_ratio", reason))
        ratio = 1

    percent = get["conntrack_max_memory_percent"]
    if not _is_number(percent) or not 0 < percent <= 50:
        errors.append(
            SettingError("conntrack_max_memory_percent", f"{percent!r} is outside (0, 50]")
        )
        percent = 5

    profile = get["conntrack_timeout_profile"]
    if profile not in profiles.PROFILES:
        errors.append(
            SettingError(
                "conntrack_timeout_profile",
                f"unknown profile {profile!r} (one of: {', '.join(profiles.PROFILES)})",
            )
        )
        profile = "kernel"

    timeouts: dict[str, int] = {}
    raw_timeouts = get["conntrack_timeouts"]
    if not isinstance(raw_timeouts, Mapping):
        errors.append(SettingError("conntrack_timeouts", "must be a mapping of name -> seconds"))
        raw_timeouts = {}
    for name, seconds in raw_timeouts.items():
        key = profiles.timeout_key(str(name))
        setting = f"conntrack_timeouts.{name}"
        if key not in profiles.LINUX_DEFAULTS:
            errors.append(
                SettingError(
                    setting,
                    f"unknown timeout (known: {', '.join(KNOWN_TIMEOUTS)})",
                )
            )
        elif not _is_int(seconds) or not 1 <= seconds <= profiles.MAX_TIMEOUT:
            errors.append(
                SettingError(
                    setting,
                    f"{seconds!r} is not a whole number of seconds in 1..{profiles.MAX_TIMEOUT}",
                )
            )
        else:
            timeouts[key] = seconds

    cake = _bool("cake", get["cake"], errors)
    interface = get["cake_interface"]
    if interface is not None and (not isinstance(interface, str) or not _valid_ifname(interface)):
        errors.append(SettingError("cake_interface", f"{interface!r} is not an interface name"))
        interface = None

    bandwidth_bit = None
    if get["cake_bandwidth"] is not None:
        try:
            bandwidth_bit = parse_rate_bit(get["cake_bandwidth"])
        except ValueError as error:
            errors.append(SettingError("cake_bandwidth", str(error)))

    diffserv = get["cake_diffserv"]
    if diffserv not in DIFFSERV_MODES:
        errors.append(
            SettingError(
                "cake_diffserv", f"unknown mode {diffserv!r} (one of: {', '.join(DIFFSERV_MODES)})"
            )
        )
        diffserv = "besteffort"

    restart = get["firewalld_restart"]
    if restart not in FIREWALLD_RESTART:
        errors.append(
            SettingError(
                "firewalld_restart", f"{restart!r} is not one of {', '.join(FIREWALLD_RESTART)}"
            )
        )
        restart = "on-change"

    state = get["conntune_state"]
    if state not in STATES:
        errors.append(
            SettingError("conntune_state", f"{state!r} is not one of {', '.join(STATES)}")
        )
    old_docker = _bool("firewalld_restart_old_docker", get["firewalld_restart_old_docker"], errors)
    override = _bool("conntune_override_conflicts", get["conntune_override_conflicts"], errors)

    if errors:
        raise InvalidSettings(errors)
    return Settings(
        conntrack_max=conntrack_max,
        conntrack_allow_shrink=allow_shrink,
        conntrack_hashsize_ratio=ratio,
        conntrack_max_memory_percent=percent,
        conntrack_timeout_profile=profile,
        conntrack_timeouts=timeouts,
        cake=cake,
        cake_interface=interface,
        cake_bandwidth_bit=bandwidth_bit,
        cake_diffserv=diffserv,
        firewalld_restart=restart,
        firewalld_restart_old_docker=old_docker,
        conntune_state=state,
        conntune_override_conflicts=override,
    )


def _valid_ifname(name: str) -> bool:
    # IFNAMSIZ is 16 with the NUL; the kernel refuses "/", whitespace and ":" (dev_valid_name).
    return (
        0 < len(name) < 16
        and name not in (".", "..")
        and not any(c in name for c in "/: \t\n'\"$`;&|<>\\")
    )
