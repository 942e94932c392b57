"""Test helpers that build HostFacts as a real host would report them."""

from __future__ import annotations

from conntune import cake_options, paths
from conntune.facts import config_lines, parse
from conntune.hostfacts import (
    BUCKETS_KEY,
    MAX_KEY,
    ConntrackStats,
    Docker,
    Firewalld,
    HostFacts,
    Interface,
    Route,
    Tools,
)
from conntune.profiles import LINUX_DEFAULTS
from conntune.qdisc import Qdisc

GIB = 2**30

TOOLS = Tools(
    sysctl="/usr/sbin/sysctl",
    modprobe="/usr/sbin/modprobe",
    systemctl="/usr/bin/systemctl",
    tc="/usr/sbin/tc",
    conntrack="/usr/sbin/conntrack",
    flock="/usr/bin/flock",
    tc_version="tc utility, iproute2-6.1.0, libbpf 1.1.2",
    tc_cake=True,
    tc_cake_mq=False,
)


def kernel_sysctls(conntrack_max: int = 65536, buckets: int = 65536, count: int = 10) -> dict:
    values = dict(LINUX_DEFAULTS)
    values.update(
        {
            "net.netfilter.nf_conntrack_max": conntrack_max,
            "net.netfilter.nf_conntrack_buckets": buckets,
            "net.netfilter.nf_conntrack_count": count,
        }
    )
    return values


def make_facts(**overrides) -> HostFacts:
    """
    A Debian 12 VM with 2 GiB, a 1 GbE eth0 running fq_codel, firewalld active, as root.

    Shorthands: ``default_iface`` (a default route through it, or none), ``tc_path`` and
    ``sysctl_path`` (``None``: the tool is missing), ``docker_version`` (+ ``docker_chains``),
    ``stats`` (procfs counters), ``sizing_writable=False`` (the table knobs 0444: a container),
    ``sysctl_file_lines`` / ``modprobe_options`` (``grep -H -n`` text, parsed for real).
    """
    base: dict = {
        "complete": True,
        "uid": 0,
        "kernel": "6.1.0-28-amd64",
        "mem_bytes": 2 * GIB,
        "cpus": 2,
        "routes": [Route(4, ("eth0",), 0, "10.0.2.2")],
        "interfaces": {
            "eth0": Interface("eth0", 1000, "up", True, tx_queues=1),
            "lo": Interface("lo", None, "unknown", True, tx_queues=1),
        },
        "qdiscs": [Qdisc(dev="eth0", kind="fq_codel", handle="0:", root=True)],
        "tools": TOOLS,
        "cake_available": True,
        "conntrack_loaded": True,
        "sysctls": kernel_sysctls(),
        "hashsize": 65536,
        "slab_objsize": 320,
        "stats": ConntrackStats({"entries": 10, "drop": 0}, "/proc/net/stat/nf_conntrack"),
        "firewalld": Firewalld(True, True, True, (1, 3, 3), "1.3.3-1~deb12u1", None, False),
        "systemd": True,
        "owned_files": {path: None for path in paths.OWNED_FILES},
    }
    if "default_iface" in overrides:
        iface = overrides.pop("default_iface")
        base["routes"] = [Route(4, (iface,))] if iface else []
    tools = {}
    if "tc_path" in overrides:
        tools["tc"] = overrides.pop("tc_path")
    if "sysctl_path" in overrides:
        tools["sysctl"] = overrides.pop("sysctl_path")
    if tools:
        base["tools"] = Tools(**{**TOOLS.__dict__, **tools})
    if "docker_version" in overrides:
        text = overrides.pop("docker_version")
        chains = overrides.pop("docker_chains", False)
        base["docker"] = Docker(parse.version_tuple(text), text, chains)
    if "stats" in overrides:
        base["stats"] = ConntrackStats(overrides.pop("stats"), "/proc/net/stat/nf_conntrack")
    if overrides.pop("sizing_writable", True) is False:
        base["sysctl_modes"] = {
            "/proc/sys/net/netfilter/nf_conntrack_max": 0o444,
            "/proc/sys/net/netfilter/nf_conntrack_buckets": 0o444,
        }
    if "table_full_lines" in overrides and "table_full_last" not in overrides:
        text = "\n".join(overrides["table_full_lines"])
        base["table_full_last"] = parse.last_table_full_time(text)
    if "sysctl_file_lines" in overrides:
        base["sysctl_lines"] = config_lines.sysctl_lines(overrides.pop("sysctl_file_lines"))
    if "modprobe_options" in overrides:
        base["modprobe_lines"] = config_lines.modprobe_lines(overrides.pop("modprobe_options"))
    base.update(overrides)
    return HostFacts(**base)


def converged(facts: HostFacts, desired) -> HostFacts:
    """The same host after a successful apply of ``desired``."""
    sysctls = dict(facts.sysctls)
    sysctls.update(desired.sysctls)
    if desired.buckets is not None:
        sysctls[BUCKETS_KEY] = desired.buckets
    owned = dict(facts.owned_files)
    owned.update(desired.files)
    qdiscs = list(facts.qdiscs or [])
    if desired.cake is not None:
        cake = desired.cake
        qdiscs = [q for q in qdiscs if q.dev != cake.interface] + [
            Qdisc(
                dev=cake.interface,
                kind=cake.kind,
                handle="8001:",
                root=True,
                cake=cake_options.expected(cake),
            )
        ]
    assert MAX_KEY in sysctls
    return HostFacts(
        **{
            **facts.__dict__,
            "sysctls": sysctls,
            "hashsize": desired.buckets if desired.buckets is not None else facts.hashsize,
            "owned_files": owned,
            "qdiscs": qdiscs,
            "cake_unit_enabled": desired.cake is not None,
            "conntrack_loaded": True,
            "unreadable": [],
        }
    )
