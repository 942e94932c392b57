"""Test helpers that build HostFacts as a real host would report them."""

from __future__ import annotations

from conntune import paths
from conntune.hostfacts import Firewalld, HostFacts, Interface
from conntune.profiles import LINUX_DEFAULTS

GIB = 2**30


def kernel_sysctls(conntrack_max: int = 65536, buckets: int = 65536, count: int = 10) -> dict:
    values = {key: str(value) for key, value in LINUX_DEFAULTS.items()}
    values.update(
        {
            "net.netfilter.nf_conntrack_max": str(conntrack_max),
            "net.netfilter.nf_conntrack_buckets": str(buckets),
            "net.netfilter.nf_conntrack_count": str(count),
        }
    )
    return values


def make_facts(**overrides) -> HostFacts:
    """A Debian 12 VM with 2 GiB, a 1 GbE eth0 running fq_codel, firewalld active, as root."""
    base = {
        "complete": True,
        "uid": 0,
        "kernel": "6.1.0-28-amd64",
        "mem_bytes": 2 * GIB,
        "cpus": 2,
        "default_iface": "eth0",
        "interfaces": {
            "eth0": Interface("eth0", 1000, "up", True),
            "lo": Interface("lo", None, "unknown", True),
        },
        "qdiscs": [
            {"kind": "fq_codel", "handle": "0:", "dev": "eth0", "root": True, "options": {}},
        ],
        "tc_path": "/usr/sbin/tc",
        "cake_available": True,
        "conntrack_loaded": True,
        "sysctls": kernel_sysctls(),
        "hashsize": 65536,
        "sizing_writable": True,
        "buckets_writable": True,
        "slab_objsize": 320,
        "firewalld": Firewalld(True, True, True, "1.3.3-1~deb12u1", "no"),
        "systemd": True,
        "owned_files": {path: None for path in paths.OWNED_FILES},
    }
    base.update(overrides)
    return HostFacts(**base)


def converged(facts: HostFacts, desired) -> HostFacts:
    """The same host after a successful apply of ``desired``."""
    sysctls = dict(facts.sysctls)
    sysctls.update({key: str(value) for key, value in desired.sysctls.items()})
    if desired.buckets is not None:
        sysctls["net.netfilter.nf_conntrack_buckets"] = str(desired.buckets)
    owned = dict(facts.owned_files)
    owned.update(desired.files)
    qdiscs = list(facts.qdiscs)
    if desired.cake is not None:
        qdiscs = [q for q in qdiscs if q.get("dev") != desired.cake.interface] + [
            {
                "kind": "cake",
                "handle": "8001:",
                "dev": desired.cake.interface,
                "root": True,
                "options": {
                    "bandwidth": desired.cake.bandwidth_bytes,
                    "diffserv": desired.cake.diffserv,
                },
            }
        ]
    return make_facts(
        **{
            **facts.__dict__,
            "sysctls": sysctls,
            "hashsize": desired.buckets if desired.buckets is not None else facts.hashsize,
            "owned_files": owned,
            "qdiscs": qdiscs,
            "cake_unit_enabled": desired.cake is not None,
            "conntrack_loaded": True,
        }
    )
