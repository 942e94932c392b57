"""
The host reading: the script that reads a host in one command (``reading.sh``, shipped beside
this module) and the parser that turns its output into ``HostFacts``.

A reading is plain text, a marker line ``@@conntune:NAME`` before each section's raw output
(README.md, "The reading format"), so it can be saved and replayed anywhere. Missing or
unreadable sections become ``None`` and are listed in ``HostFacts.unreadable``; the parser never
raises on odd output. Pure Python: the fact, the CLI and the tests share it.

Format 1 readings (conntune 0.1: no ``format`` section, positional ``netdev`` lines) still parse.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from importlib.resources import files

from conntune.facts import config_lines, parse, sections, tc_json
from conntune.hostfacts import (
    MAX_KEY,
    Docker,
    HostFacts,
)
from conntune.paths import OWNED_FILES

MARKER = "@@conntune:"
FORMAT = 2
UNREADABLE = "%%conntune-unreadable%%"


class ReadingError(ValueError):
    """A saved reading conntune cannot replay (a format it does not know)."""


@cache
def script() -> str:
    """The whole reading script (``reading.sh``)."""
    return files(__package__).joinpath("reading.sh").read_text()


def script_functions(*names: str) -> str:
    """Named shell functions of ``reading.sh``, for commands that need only part of it."""
    found = []
    for name in names:
        # "name() { ...; }" on one line, or "name() {" ... "}" at the start of a line
        pattern = rf"^{name}\(\) {{(?: [^\n]*}}\n|\n.*?^}}\n)"
        match = re.search(pattern, script(), re.MULTILINE | re.DOTALL)
        if match is None:
            raise KeyError(f"reading.sh has no function {name}()")
        found.append(match.group(0))
    return "".join(found)


def buffered(command: str) -> str:
    """
    ``command`` with its standard output sent in one piece when it has finished. A reading
    prints a few hundred short lines: unbuffered, most cross as SSH packets of their own, which the
    controller decrypts, checks and queues one by one (~10 ms of controller CPU per host, measured
    by bench/run.py); buffered, the same text crosses in a few packets. The exit status is the
    command's.
    """
    return (
        f"conntune_buffered() {{\n{command}\n}}\n"
        "conntune_out=$(conntune_buffered); conntune_rc=$?\n"
        "printf '%s\\n' \"$conntune_out\"; exit $conntune_rc\n"
    )


def reading_command() -> str:
    """What the host fact runs: the whole script (it reads everything when given no arguments),
    its output buffered on the host."""
    return buffered(script())


def sample_command(interface: str | None) -> str:
    """``conntune watch``'s one short command per sample: only the functions a sample uses."""
    functions = script_functions("section", "table_full_lines", "conntrack_counters", "sample")
    return functions + "sample " + shlex.quote(interface or "")


def split_sections(text: str) -> dict[str, str]:
    """Split a reading into ``{section name: text}``."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARKER):
            current = sections.setdefault(line[len(MARKER) :].strip(), [])
        elif current is not None:
            current.append(line)
    # each section starts after a marker preceded by an empty line: drop that separator
    result = {}
    for name, lines in sections.items():
        while lines and lines[-1] == "":
            lines.pop()
        result[name] = "\n".join(lines) + ("\n" if lines else "")
    return result


def reading_format(text: str) -> int:
    """The format of a saved reading; raises ``ReadingError`` for one conntune cannot replay."""
    sections = split_sections(text)
    if not sections:
        raise ReadingError("not a conntune reading: no '@@conntune:' section markers")
    raw = (sections.get("format") or "1").strip()
    version = parse.int_or_none(raw)
    if version is None or not 1 <= version <= FORMAT:
        raise ReadingError(
            f"reading format {raw!r} is not one this conntune replays (1..{FORMAT}): "
            "capture it again with `conntune reading`"
        )
    return version


# the reading has no "end" section: the command failed (sudo, SSH) or its output was truncated
CUT_SHORT = (
    "the host reading failed or was cut short (no 'end' section; pyinfra's error, if any, is "
    "above; `conntune reading` saves what the host answered)"
)


def host_facts(text: str) -> HostFacts:
    """Build ``HostFacts`` from a reading. Never raises on odd output."""
    s = split_sections(text)
    try:
        version = reading_format(text)
    except ReadingError:
        version = FORMAT
    facts = HostFacts(format=version)
    unreadable = facts.unreadable

    facts.uid = parse.int_or_none(s.get("uid"))
    facts.cap_eff, facts.uid_map = parse.caps(s.get("caps", ""))
    facts.kernel = (s.get("kernel") or "").strip() or None
    try:
        facts.mem_bytes = parse.meminfo_bytes(s.get("meminfo", ""))
    except ValueError:
        unreadable.append("MemTotal (/proc/meminfo)")
    facts.cpus = parse.int_or_none(s.get("nproc"))

    facts.routes = parse.default_routes(s.get("route", ""), 4) + parse.default_routes(
        s.get("route6", ""), 6
    )
    route_dev = facts.default_interfaces[0] if facts.default_interfaces else None
    facts.interfaces = sections.with_ethtool_speeds(
        sections.interfaces(s.get("netdev", ""), version), s, route_dev
    )

    facts.tools = sections.tools(s)
    qdisc_text = s.get("qdisc", "")
    if facts.tools.tc is None:
        facts.qdiscs = None
        unreadable.append("qdiscs (tc is not installed: iproute2)")
    elif qdisc_text.strip() and not qdisc_text.lstrip().startswith("["):
        facts.qdiscs = None
        unreadable.append(f"qdiscs (`tc -j qdisc show` answered: {qdisc_text.strip()[:80]!r})")
    else:
        facts.qdiscs = tc_json.qdiscs(qdisc_text)

    modules = set((s.get("modules") or "").split())
    facts.sysctls = {
        key: value
        for key, value in parse.sysctl_ints(s.get("sysctl", "")).items()
        if "conntrack" in key
    }
    if "net.nf_conntrack_max" in facts.sysctls and MAX_KEY not in facts.sysctls:
        facts.sysctls[MAX_KEY] = facts.sysctls["net.nf_conntrack_max"]
    facts.conntrack_loaded = (
        "nf_conntrack" in modules
        or MAX_KEY in facts.sysctls
        or any(key.startswith("net.netfilter.nf_conntrack_") for key in facts.sysctls)
    )
    facts.cake_available = (s.get("cake") or "").strip() == "yes"
    facts.cake_mq_available = (s.get("cake_mq") or "").strip() == "yes"
    loadable = (s.get("conntrack_loadable") or "").strip()
    if version == 1:
        loadable = parse.key_values(s.get("tools", "")).get("conntrack_loadable", "yes")

    if version == 1:
        facts.sysctl_modes, facts.mounts = sections.format1_modes(s)
    else:
        facts.sysctl_modes = parse.file_modes(s.get("modes", ""))
        facts.mounts = parse.mounts(s.get("mounts", ""))
    # modprobe -n only finds the module file; loading it also needs the right to (the mounts
    # and capabilities above say whether this is a container that has it)
    facts.conntrack_loadable = loadable != "no" and facts.module_load_blocked is None
    facts.hashsize = parse.int_or_none(s.get("hashsize"))
    if facts.conntrack_loaded and facts.hashsize is None:
        unreadable.append(
            "/sys/module/nf_conntrack/parameters/hashsize (mode 0600: needs root; "
            "using net.netfilter.nf_conntrack_buckets)"
        )

    facts.stats = sections.conntrack_stats(s)
    if facts.conntrack_loaded and facts.stats.source is None:
        unreadable.append(
            "conntrack statistics (no /proc/net/stat/nf_conntrack in this kernel and no "
            "`conntrack -S`: install conntrack-tools, Debian/Ubuntu package 'conntrack')"
        )
    facts.slab_objsize = parse.slab_objsize(s.get("slab", ""))
    if facts.conntrack_loaded and facts.slab_objsize is None:
        unreadable.append("nf_conntrack slab object size (/proc/slabinfo needs root)")

    facts.table_full_lines = parse.table_full_lines(s.get("tablefull") or "")
    facts.table_full_last = parse.last_table_full_time(s.get("tablefull") or "")
    facts.table_full_readable = (s.get("dmesg_readable") or "").strip() != "no"
    if not facts.table_full_readable:
        unreadable.append("kernel log (dmesg restricted: needs root)")

    modprobe_text = s.get("modprobe_files") or s.get("modprobe_options") or ""
    facts.modprobe_lines = config_lines.modprobe_lines(
        modprobe_text
    ) + config_lines.cmdline_module_options(s.get("cmdline", ""))
    facts.sysctl_lines = config_lines.sysctl_lines(s.get("sysctl_files", ""))

    facts.firewalld = sections.firewalld(s.get("firewalld", ""))
    facts.systemd = (s.get("systemd") or "").strip() == "yes"

    host = parse.key_values(s.get("host", "") or s.get("tools", ""))
    facts.etc_read_only = "ro" in (host.get("etc_options") or "").split(",")
    facts.etc_free_kb = parse.int_or_none(host.get("etc_free_kb"))
    facts.varlib_free_kb = parse.int_or_none(host.get("varlib_free_kb"))

    neighbours = parse.key_values(s.get("neighbours", ""))
    if neighbours.get("docker"):
        facts.docker = Docker(
            version=parse.version_tuple(neighbours["docker"]),
            version_text=neighbours["docker"],
            chains=neighbours.get("docker_chains") == "yes",
        )
    facts.kube_proxy = neighbours.get("kube_proxy") == "yes"
    facts.cilium = neighbours.get("cilium") == "yes"
    facts.lease = sections.lease(s.get("lock", ""))
    facts.counters_at_change, facts.table_full_at_change, facts.boot_id_at_change = (
        sections.counters_at_change(s.get("counters_at_change", ""))
    )
    facts.boot_id = (s.get("boot_id") or "").strip() or None
    facts.cake_unit_enabled = (s.get("cake_unit") or "").strip() == "enabled"

    for name, content in s.items():
        kind, _, path = name.partition(" ")
        if kind == "file":
            if content.strip() == UNREADABLE:
                unreadable.append(f"{path} (not readable)")
                facts.owned_files[path] = None
            else:
                facts.owned_files[path] = content
        elif kind == "nofile":
            facts.owned_files[path] = None
    for path in OWNED_FILES:  # a hand-made reading may leave them out: absent
        facts.owned_files.setdefault(path, None)

    facts.complete = "end" in s
    if not facts.complete:
        unreadable.append(CUT_SHORT)
    return facts
