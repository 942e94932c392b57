"""
Pure parsers for what a Linux host prints about conntrack, links, qdiscs and their config files.

Every function takes text and returns typed values (``conntune.hostfacts``, ``conntune.qdisc``);
none runs a command or imports pyinfra, so the host reading, the CLI and the tests share them.
They are written for outputs from many kernels and tools: header-driven, tolerant of extra or
missing columns, trailing spaces and a missing final newline. Text that does not contain what a
function looks for gives an empty result (or ``None``) rather than an exception, except
``meminfo_bytes``, which has no sensible empty value.
"""

from __future__ import annotations

import json
import re

from conntune.hostfacts import ModprobeLine, Mount, Route, SysctlLine
from conntune.qdisc import TIN_NAMES, CakeOptions, CakeTin, Qdisc

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


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in ``text``: arrays of objects, single objects, several in a row."""
    decoder = json.JSONDecoder()
    found: list[dict] = []
    position = 0
    text = text.strip()
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        items = value if isinstance(value, list) else [value]
        found.extend(item for item in items if isinstance(item, dict))
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return found


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _cake_options(options: dict) -> CakeOptions:
    bandwidth = options.get("bandwidth")
    return CakeOptions(
        # bytes per second in tc's JSON, or the string "unlimited"
        bandwidth_bit=_int(bandwidth) * 8 if _int(bandwidth) else None,
        diffserv=_str(options.get("diffserv")),
        flowmode=_str(options.get("flowmode")),
        nat=_bool(options.get("nat")),
        wash=_bool(options.get("wash")),
        ingress=_bool(options.get("ingress")),
        ack_filter=_str(options.get("ack-filter")),
        split_gso=_bool(options.get("split_gso")),
        rtt_us=_int(options.get("rtt")),
        raw=_bool(options.get("raw")),
        atm=_str(options.get("atm")),
        overhead=_int(options.get("overhead")),
        mpu=_int(options.get("mpu")),
    )


_TIN_COUNTERS = (
    "sent_bytes", "sent_packets", "backlog_bytes", "target_us", "interval_us", "peak_delay_us",
    "avg_delay_us", "base_delay_us", "drops", "ecn_mark", "ack_drops", "sparse_flows",
    "bulk_flows", "unresponsive_flows",
)  # fmt: skip


def _tin(name: str, tin: dict) -> CakeTin:
    rate = _int(tin.get("threshold_rate"))
    return CakeTin(
        name=name,
        threshold_rate_bit=None if rate is None else rate * 8,
        **{key: _int(tin.get(key)) for key in _TIN_COUNTERS},
    )


def qdiscs(text: str) -> list[Qdisc]:
    """
    Qdiscs from ``tc -j [-s] qdisc show`` JSON. Several JSON arrays in a row (one ``tc`` call
    per device) are joined; text that is not JSON gives an empty list.
    """
    result = []
    for item in _json_objects(text):
        kind = _str(item.get("kind"))
        options = item.get("options") if isinstance(item.get("options"), dict) else {}
        tins = [tin for tin in item.get("tins") or [] if isinstance(tin, dict)]
        names = TIN_NAMES.get(len(tins), tuple(f"tin{i}" for i in range(len(tins))))
        result.append(
            Qdisc(
                dev=_str(item.get("dev")),
                kind=kind,
                handle=_str(item.get("handle")),
                parent=_str(item.get("parent")),
                root=item.get("root") is True,
                cake=_cake_options(options) if kind in ("cake", "cake_mq") else None,
                bytes=_int(item.get("bytes")),
                packets=_int(item.get("packets")),
                drops=_int(item.get("drops")),
                backlog=_int(item.get("backlog")),
                tins=tuple(_tin(name, tin) for name, tin in zip(names, tins, strict=True)),
            )
        )
    return result


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


def _grep_lines(text: str) -> list[tuple[str, int, str]]:
    """``grep -H -n`` output (``path:lineno:text``)."""
    found = []
    for line in text.splitlines():
        match = re.match(r"^(/[^:]*):(\d+):(.*)$", line)
        if match:
            found.append((match.group(1), int(match.group(2)), match.group(3).strip()))
    return found


# Legacy spellings of the conntrack knobs: the ip_conntrack module's net.ipv4.ip_conntrack_*
# (2.6.19 and older) and the compatibility net.ipv4.netfilter.ip_conntrack_* names of
# CONFIG_NF_CONNTRACK_PROC_COMPAT, and the net.nf_conntrack_max alias (init netns only;
# nf_conntrack_standalone.c, nf_ct_netfilter_table).
_LEGACY_PREFIXES = (
    ("net.ipv4.netfilter.ip_conntrack_", "net.netfilter.nf_conntrack_"),
    ("net.ipv4.ip_conntrack_", "net.netfilter.nf_conntrack_"),
    ("net.nf_conntrack_", "net.netfilter.nf_conntrack_"),
)


def canonical_sysctl_key(key: str) -> str:
    """
    The ``net.netfilter.nf_conntrack_*`` name a sysctl.d key sets, whatever its spelling:
    ``/`` or ``.`` separators (sysctl.d(5)), legacy names (above). Other keys are returned
    with their separators normalised.
    """
    key = key.strip().strip("/").replace("/", ".")
    for legacy, modern in _LEGACY_PREFIXES:
        if key.startswith(legacy):
            return modern + key[len(legacy) :]
    return key


def sysctl_lines(text: str) -> list[SysctlLine]:
    """
    Conntrack settings in sysctl.d files, from ``grep -H -n`` output over them. Accepts every
    form systemd-sysctl and procps read (sysctl.d(5)): a ``-`` prefix (errors ignored), ``/``
    separators, spaces or none around ``=``, globs; comments (``#``, ``;``) and lines that set
    no conntrack knob are dropped.
    """
    found = []
    for path, lineno, line in _grep_lines(text):
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        ignore_errors = key.startswith("-")
        name = key.lstrip("-").strip().strip("/").replace("/", ".")
        canonical = canonical_sysctl_key(name)
        if "conntrack" not in canonical and not any(c in canonical for c in "*?["):
            continue
        found.append(SysctlLine(path, lineno, line, canonical, value.strip(), ignore_errors, name))
    return found


# nf_conntrack's module parameters that take a number (nf_conntrack_core.c and
# nf_conntrack_expect.c: module_param_call(hashsize, ...), module_param_named(expect_hashsize,
# nf_ct_expect_hsize, uint, 0400)). A number parameter given without a value makes the module
# load fail with EINVAL (kernel/params.c, parse_one: "!val && !(ops->flags & NOARG)").
_NUMBER_PARAMETERS = ("hashsize", "expect_hashsize")


def _module_parameters(words: list[str]) -> tuple[dict[str, str | None], str | None]:
    """kmod passes the words after the module name to the kernel as they are."""
    parameters: dict[str, str | None] = {}
    problems = []
    for word in words:
        name, sep, value = word.partition("=")
        value = value.strip('"') if sep else None
        if not name:
            problems.append(f"'{word}' is not a parameter")
            continue
        parameters[name] = value
        if name in _NUMBER_PARAMETERS and not (value or "").isdigit():
            problems.append(
                f"'{name}' has no number" + (f" ({word!r})" if sep else " (no '=N' attached)")
            )
    if problems and any(w == "=" for w in words):
        problems.append("spaces around '=' split it into separate words")
    problem = None
    if problems:
        problem = (
            "; ".join(problems)
            + ": the kernel refuses the option and nf_conntrack fails to load (EINVAL)"
        )
    return parameters, problem


def modprobe_lines(text: str) -> list[ModprobeLine]:
    """
    ``options``/``install``/``remove``/``softdep`` lines for nf_conntrack from ``grep -H -n``
    over modprobe.d files, in any spelling kmod accepts (``nf-conntrack`` equals
    ``nf_conntrack``, modprobe.d(5)).
    """
    found = []
    for path, lineno, line in _grep_lines(text):
        words = line.split()
        if len(words) < 2 or words[0] not in ("options", "install", "remove", "softdep"):
            continue
        if words[1].replace("-", "_") != "nf_conntrack":
            continue
        parameters, problem = _module_parameters(words[2:]) if words[0] == "options" else ({}, None)
        found.append(ModprobeLine(path, lineno, line, words[0], parameters, problem))
    return found


def cmdline_module_options(text: str) -> list[ModprobeLine]:
    """``nf_conntrack.PARAM=VALUE`` words of /proc/cmdline (kmod applies them at load)."""
    words = [
        word.split(".", 1)[1]
        for word in text.split()
        if word.split(".", 1)[0].replace("-", "_") == "nf_conntrack" and "." in word
    ]
    if not words:
        return []
    parameters, problem = _module_parameters(words)
    return [ModprobeLine("/proc/cmdline", 1, " ".join(words), "cmdline", parameters, problem)]


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
