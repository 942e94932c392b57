"""
Pure parsers for what a Linux host prints about conntrack, links, qdiscs and their config files.

Every function takes text and returns typed values (``conntune.hostfacts``);
none runs a command or imports pyinfra, so the host reading, the CLI and the tests share them.
They are written for outputs from many kernels and tools: header-driven, tolerant of extra or
missing columns, trailing spaces and a missing final newline. Text that does not contain what a
function looks for gives an empty result (or ``None``) rather than an exception, except
``meminfo_bytes``, which has no sensible empty value. ``tc -j`` output: facts/tc_json.py; other
parties' sysctl.d and modprobe.d lines: facts/config_lines.py.
"""

from __future__ import annotations

import re

from conntune.hostfacts import Mount, Route

_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def meminfo_bytes(text: str) -> int:
    """MemTotal of a /proc/meminfo text, in bytes (the kernel prints kB, meaning KiB)."""
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip() == "MemTotal":
            parts = rest.split()
            if parts and parts[0].isdigit():
                unit = parts[1].lower() if len(parts) > 1 else ""
                return int(parts[0]) * _UNITS.get(unit, 1024)
    raise ValueError("no MemTotal line in meminfo text")


def _is_hex(token: str) -> bool:
    return bool(re.fullmatch(r"(0x)?[0-9a-fA-F]+", token))


def conntrack_stat(text: str) -> dict[str, int]:
    """
    Totals of /proc/net/stat/nf_conntrack (or the older ip_conntrack file).

    The header names the columns; each following row holds one CPU's counters in hex. Columns
    changed across kernels (``searched`` became ``clashres``, ``delete_list`` became
    ``chainlength`` in 5.15), so values are matched to names by position in the header, never
    by a fixed layout. ``entries`` is a global count repeated on every row: it is taken once.
    """
    header: list[str] | None = None
    totals: dict[str, int] = {}
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if header is None:
            if "entries" in tokens and not all(_is_hex(t) for t in tokens):
                header = tokens
            continue
        if not all(_is_hex(t) for t in tokens):
            continue  # a second header (files concatenated) or noise: keep the first header
        for name, token in zip(header, tokens, strict=False):
            value = int(token, 16)
            if name == "entries":
                totals.setdefault(name, value)
            else:
                totals[name] = totals.get(name, 0) + value
    return totals


def conntrack_cli_stats(text: str) -> dict[str, int]:
    """
    Totals of ``conntrack -S`` (conntrack-tools): ``cpu=N key=value ...`` lines summed over CPUs.

    ``entries`` (printed by old conntrack-tools on every CPU line) is a global count: taken once.
    """
    totals: dict[str, int] = {}
    for line in text.splitlines():
        pairs = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line)
        if not pairs or pairs[0][0] != "cpu":
            continue
        for key, raw in pairs[1:]:
            try:
                value = int(raw, 0) if raw.lower().startswith("0x") else int(raw)
            except ValueError:
                continue
            if key == "entries":
                totals.setdefault(key, value)
            else:
                totals[key] = totals.get(key, 0) + value
    return totals


_SYSCTL_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+-]*")


def sysctl(text: str) -> dict[str, str]:
    """``key = value`` lines, as ``sysctl -a`` or ``sysctl KEY...`` print them (errors skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _SYSCTL_KEY.fullmatch(key):
            continue
        values[key] = value.strip()
    return values


def sysctl_ints(text: str) -> dict[str, int]:
    """``sysctl(text)`` with the values that are whole numbers, as ``int``."""
    found = {}
    for key, value in sysctl(text).items():
        number = int_or_none(value)
        if number is not None:
            found[key] = number
    return found


# SPEED_UNKNOWN is -1 (include/uapi/linux/ethtool.h); some old drivers report 0xffff or the
# u32 form of -1 through sysfs. None of those is a real rate.
_UNKNOWN_SPEEDS = {0, 65535, 4294967295}


def link_speed_mbit(text: str) -> int | None:
    """
    Link speed in Mbit/s from ``ethtool IF`` output or the content of /sys/class/net/IF/speed.

    ``None`` when the link speed is unknown: virtual NICs print ``Speed: Unknown!``, ``-1``, an
    error, or nothing at all.
    """
    match = re.search(r"^\s*Speed:\s*(\S+)", text, re.MULTILINE)
    if match:
        token = match.group(1)
        number = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([GMK])b/s", token, re.IGNORECASE)
        if not number:
            return None
        scale = {"g": 1000, "m": 1, "k": 0.001}[number.group(2).lower()]
        speed = int(float(number.group(1)) * scale)
    else:
        stripped = text.strip()
        if not re.fullmatch(r"-?\d+", stripped):
            return None
        speed = int(stripped)
    if speed <= 0 or speed in _UNKNOWN_SPEEDS:
        return None
    return speed


# Kernel wording (net/netfilter/nf_conntrack_core.c, __nf_conntrack_alloc): "nf_conntrack: table
# full, dropping packet" (2.6.15+), "ip_conntrack: table full, dropping packet." before that,
# printed with a doubled "nf_conntrack: " prefix by kernels that also set pr_fmt, and
# "table full in netns N" in other network namespaces. "expectation table full" is a different
# limit (nf_conntrack_expect.c) and does not count.
_TABLE_FULL = re.compile(r"conntrack\b.*?\btable full\b", re.IGNORECASE)
_EXPECTATION = re.compile(r"expectation table full", re.IGNORECASE)


def _is_table_full(line: str) -> bool:
    return bool(_TABLE_FULL.search(line)) and not _EXPECTATION.search(line)


def table_full_events(text: str) -> int:
    """How many kernel-log lines report the conntrack table full, in any wording or timestamp."""
    return sum(1 for line in text.splitlines() if _is_table_full(line))


def table_full_lines(text: str) -> list[str]:
    """The kernel-log lines that report the conntrack table full."""
    return [line for line in text.splitlines() if _is_table_full(line)]


_TIMESTAMP = re.compile(
    r"^\s*(?:\[(?P<bracket>[^\]]+)\]"  # dmesg: [12345.678901] or dmesg -T: [Thu Jan  5 ...]
    r"|(?P<iso>\d{4}-\d\d-\d\dT[0-9:.,]+(?:Z|[+-]\d\d:?\d\d)?)"  # dmesg/journalctl ISO
    r"|(?P<syslog>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d))"  # syslog / journalctl short
)


def last_table_full_time(text: str) -> str | None:
    """The timestamp of the newest table-full line, as the log printed it, or ``None``."""
    stamp = None
    for line in text.splitlines():
        if _is_table_full(line):
            match = _TIMESTAMP.match(line)
            stamp = next((g for g in match.groups() if g), None) if match else None
            stamp = stamp.strip() if stamp else line.strip()
    return stamp


def slab_objsize(text: str, cache: str = "nf_conntrack") -> int | None:
    """Object size in bytes of a slab cache from /proc/slabinfo (header-driven: ``<objsize>``)."""
    columns: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("# name"):
            columns = [c.strip("<>") for c in line[1:].split()]
            continue
        tokens = line.split()
        if tokens and tokens[0] == cache:
            index = columns.index("objsize") if columns and "objsize" in columns else 3
            if len(tokens) > index and tokens[index].isdigit():
                return int(tokens[index])
    return None


def default_routes(text: str, family: int = 4) -> list[Route]:
    """Default routes from ``ip [-6] -o route show default``, ECMP next hops included."""
    routes = []
    for line in text.splitlines():
        tokens = line.replace("\\", " ").split()
        if not tokens or tokens[0] != "default":
            continue
        devices = tuple(
            dict.fromkeys(tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "dev")
        )
        metric = tokens[tokens.index("metric") + 1] if "metric" in tokens[:-1] else "0"
        via = tokens[tokens.index("via") + 1] if "via" in tokens[:-1] else None
        if devices:
            routes.append(Route(family, devices, int_or_none(metric) or 0, via))
    return routes


def default_route_dev(text: str) -> str | None:
    """The ``dev`` of the first default route in ``ip [-o] route show default`` output."""
    routes = default_routes(text)
    return routes[0].devices[0] if routes else None


def mounts(text: str) -> list[Mount]:
    """/proc/mounts lines (``device mountpoint fstype options dump pass``)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1].startswith("/"):
            found.append(Mount(fields[1], fields[2], tuple(fields[3].split(","))))
    return found


def file_modes(text: str) -> dict[str, int]:
    """``stat -c '%a %n'`` output as ``{path: mode}``."""
    modes = {}
    for line in text.splitlines():
        mode, _, path = line.strip().partition(" ")
        if path and re.fullmatch(r"[0-7]{3,4}", mode):
            modes[path.strip()] = int(mode, 8)
    return modes


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """The first dotted version in a text: ``Docker version 20.10.24+dfsg1`` -> (20, 10, 24)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def int_or_none(text: str | None) -> int | None:
    """A whole number printed alone (``cat /proc/sys/...``), or ``None``."""
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def key_values(text: str) -> dict[str, str]:
    """``key=value`` lines (the format the conntune fact script prints its small sections in)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def yes_no(text: str | None) -> bool | None:
    """firewalld.conf booleans: ``yes``/``true``/``no``/``false`` (any case); else ``None``."""
    value = (text or "").strip().lower()
    return {"yes": True, "true": True, "no": False, "false": False}.get(value)


def caps(text: str) -> tuple[int | None, tuple[int, int, int] | None]:
    """
    The ``caps`` section: ``cap_eff=`` (CapEff of /proc/self/status, hex) and ``uid_map=``
    (the first line of /proc/self/uid_map, three numbers). Each ``None`` when absent or odd.
    """
    values = key_values(text)
    try:
        cap_eff = int(values.get("cap_eff", ""), 16)
    except ValueError:
        cap_eff = None
    numbers = values.get("uid_map", "").split()
    uid_map = None
    if len(numbers) == 3 and all(n.isdigit() for n in numbers):
        uid_map = (int(numbers[0]), int(numbers[1]), int(numbers[2]))
    return cap_eff, uid_map
