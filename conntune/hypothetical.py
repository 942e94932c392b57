"""
Hosts for ``conntune plan`` without an inventory: a hypothetical host described by a few
figures (RAM, CPUs, link speed), with the kernel defaults a current kernel would show.
"""

from __future__ import annotations

from conntune import profiles
from conntune.hostfacts import (
    BUCKETS_KEY,
    COUNT_KEY,
    MAX_KEY,
    Firewalld,
    HostFacts,
    Interface,
    Route,
    Tools,
)


def kernel_default_buckets(mem_bytes: int) -> int:
    """
    The hash size a 5.15+ kernel picks at load (nf_conntrack_core.c, nf_conntrack_init_start,
    d532bcd0b269): RAM / 16384 / 8, at least 1024; 65536 above 1 GiB; 262144 above 4 GiB on
    64-bit. ``nf_conntrack_max`` equals it.
    """
    if mem_bytes > 4 * 2**30:
        return 262144
    if mem_bytes > 2**30:
        return 65536
    return max(1024, mem_bytes // 16384 // 8)


def hypothetical(mem_bytes: int, cpus: int | None, link_speed: int | None) -> HostFacts:
    """A Debian host with a 5.15+ kernel, nf_conntrack loaded, CAKE available, one NIC."""
    buckets = kernel_default_buckets(mem_bytes)
    sysctls = {**profiles.LINUX_DEFAULTS, MAX_KEY: buckets, BUCKETS_KEY: buckets, COUNT_KEY: 0}
    return HostFacts(
        complete=True,
        uid=0,
        mem_bytes=mem_bytes,
        cpus=cpus,
        routes=[Route(4, ("eth0",))],
        interfaces={"eth0": Interface("eth0", link_speed, "up", True, tx_queues=1)},
        tools=Tools(
            sysctl="/usr/sbin/sysctl",
            modprobe="/usr/sbin/modprobe",
            systemctl="/usr/bin/systemctl",
            tc="/usr/sbin/tc",
            tc_cake=True,
        ),
        cake_available=True,
        conntrack_loaded=True,
        sysctls=sysctls,
        firewalld=Firewalld(),
        systemd=True,
    )
