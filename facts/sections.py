"""
The sections of a host reading, one builder each: the typed value a section (or a few of them)
holds. conntune.facts.reading puts them together into ``HostFacts``.
"""

from __future__ import annotations

from conntune.facts import parse
from conntune.hostfacts import ConntrackStats, Firewalld, Interface, Lease, Mount, Tools


def interfaces(text: str, version: int) -> dict[str, Interface]:
    found = {}
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" ")
        if not name or not rest:
            continue
        if version == 1:  # "name speed operstate carrier"
            fields = dict(zip(("speed", "operstate", "carrier"), rest.split(), strict=False))
        else:
            fields = parse.key_values(rest.replace(" ", "\n"))
        # a bridge port is both a lower_* link and a brif/ entry: once each, in reading order
        lower = tuple(dict.fromkeys(part for part in fields.get("lower", "").split(",") if part))
        operstate = fields.get("operstate", "")
        found[name] = Interface(
            name=name,
            speed_mbit=parse.link_speed_mbit(fields.get("speed", "")),
            operstate=None if operstate in ("", "-") else operstate,
            carrier={"1": True, "0": False}.get(fields.get("carrier", "")),
            tx_queues=parse.int_or_none(fields.get("txqueues")),
            kind=fields.get("kind") or None,
            lower=lower,
            physical={"1": True, "0": False}.get(fields.get("phys", "")),
        )
    return found


def with_ethtool_speeds(
    interfaces: dict[str, Interface], sections: dict[str, str], route_dev: str | None
) -> dict[str, Interface]:
    """ethtool's speed where sysfs gave none (drivers that only answer ethtool's ioctl)."""
    speeds = {}
    for name, text in sections.items():
        kind, _, dev = name.partition(" ")
        if kind == "ethtool":
            speeds[dev or route_dev] = parse.link_speed_mbit(text)
    result = dict(interfaces)
    for dev, speed in speeds.items():
        if dev and speed:
            known = result.get(dev) or Interface(dev)
            if not known.speed_mbit:
                result[dev] = Interface(**{**known.__dict__, "speed_mbit": speed})
    return result


def tc_knows(text: str | None) -> bool | None:
    """Whether ``tc qdisc add dev lo root KIND help`` printed the qdisc's usage."""
    if text is None or not text.strip():
        return None
    return "usage" in text.lower() and "unknown qdisc" not in text.lower()


def tools(s: dict[str, str]) -> Tools:
    """
    The tools section; a reading without one (format 1, or written by hand) is taken to have
    the usual tools, ``tc`` as its ``tc`` section says.
    """
    if "tools" not in s or "sysctl=" not in s["tools"]:
        tc = (s.get("tc") or "").strip() or ("tc" if s.get("qdisc", "").strip() else None)
        return Tools(sysctl="sysctl", modprobe="modprobe", systemctl="systemctl", tc=tc,
                     flock="flock", tc_cake=tc_knows(s.get("tc_cake")),
                     tc_cake_mq=tc_knows(s.get("tc_cake_mq")))  # fmt: skip
    paths = parse.key_values(s.get("tools", ""))
    return Tools(
        sysctl=paths.get("sysctl") or None,
        modprobe=paths.get("modprobe") or None,
        systemctl=paths.get("systemctl") or None,
        tc=paths.get("tc") or None,
        conntrack=paths.get("conntrack") or None,
        flock=paths.get("flock") or None,
        tc_version=(s.get("tc_version") or "").strip() or None,
        tc_cake=tc_knows(s.get("tc_cake")),
        tc_cake_mq=tc_knows(s.get("tc_cake_mq")),
    )


def firewalld(text: str) -> Firewalld:
    fw = parse.key_values(text)
    version_text = fw.get("version") or None
    return Firewalld(
        installed=fw.get("installed") == "yes" or bool(version_text),
        active=fw.get("active") == "active",
        enabled=fw.get("enabled") == "enabled",
        version=parse.version_tuple(version_text),
        version_text=version_text,
        cleanup_on_exit=parse.yes_no(fw.get("cleanup_on_exit")),
        cleanup_modules_on_exit=parse.yes_no(fw.get("cleanup_modules")),
    )


def conntrack_stats(s: dict[str, str]) -> ConntrackStats:
    """The counters of a reading's (or a watch sample's) ``stat``/``conntrack_S`` sections."""
    procfs = parse.conntrack_stat(s.get("stat", ""))
    if procfs:
        return ConntrackStats(procfs, "/proc/net/stat/nf_conntrack")
    # format 1 printed `conntrack -S` into the stat section when procfs was absent
    cli = parse.conntrack_cli_stats(s.get("conntrack_S", "") or s.get("stat", ""))
    if cli:
        return ConntrackStats(cli, "conntrack -S")
    return ConntrackStats()


def counters_at_change(text: str) -> tuple[ConntrackStats | None, int | None, str | None]:
    """
    ``paths.COUNTERS_FILE``: ``tablefull N boot ID`` (older records lack ``boot ID``), then
    /proc/net/stat or ``conntrack -S`` text. The counters, the table-full line count and the
    boot id (/proc/sys/kernel/random/boot_id) at the change.
    """
    first, _, rest = text.partition("\n")
    words = first.split()
    if not words or words[0] != "tablefull" or len(words) < 2:
        return None, None, None
    boot = words[3] if len(words) >= 4 and words[2] == "boot" else None
    stats = conntrack_stats({"stat": rest, "conntrack_S": rest})
    return (stats if stats.source else None), parse.int_or_none(words[1]), boot


def lease(text: str) -> Lease:
    fields = text.split()
    if len(fields) < 3:
        return Lease()
    holder, expires, generation = fields[0], fields[1], fields[2]
    last = fields[3] if len(fields) > 3 else None
    return Lease(
        holder=None if holder == "-" else holder,
        expires=parse.int_or_none(expires) or 0,
        generation=parse.int_or_none(generation) or 0,
        last=None if last in (None, "-") else last,
    )


def format1_modes(s: dict[str, str]) -> tuple[dict[str, int], list[Mount]]:
    """Format 1 read two modes and /proc/sys's mount options only."""
    modes = parse.file_modes(s.get("modes", ""))
    options = (s.get("procsys") or "").strip()
    mounts = [Mount("/proc/sys", "proc", tuple(options.split(",")))] if options else []
    return modes, mounts
