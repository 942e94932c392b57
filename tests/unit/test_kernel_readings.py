"""
Whole host readings captured from the test VMs of four kernel generations (and the Docker VM
with a container up), parsed with ``host_facts``: every expected value below was read off the
files by eye (tests/fixtures/captured/README.md says how they were captured). No VM needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from conntune.facts.reading import host_facts

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "captured"


def stat_header(after_delete: str) -> list[str]:
    """/proc/net/stat/nf_conntrack's columns: 5.10 has delete_list, 5.15+ chainlength there."""
    return (
        f"entries clashres found new invalid ignore delete {after_delete} insert insert_failed "
        "drop early_drop icmp_error expect_new expect_create expect_delete search_restart"
    ).split()


@dataclass(frozen=True)
class Seen:
    """What the reading file shows (section by section)."""

    kernel: str
    memtotal_kb: int
    conntrack_max: int
    buckets: int
    stat_header: list[str]
    firewalld: str  # dpkg version
    firewalld_version: tuple[int, ...]
    cleanup_on_exit: bool | None
    cleanup_modules_on_exit: bool | None  # None: no CleanupModulesOnExit= in firewalld.conf
    eth0_qdisc: str
    eth0_speed: int | None  # None: virtio-net without a speed (-1)
    cake_mq: bool  # kernel (modprobe alias net-sch-cake_mq) and tc both have it
    tc_version: str


READINGS = {
    # 5.10: max = 4 x buckets (pre-5.15 default), delete_list instead of chainlength, firewalld
    # 0.9 knows no CleanupModulesOnExit (its restart unloads nf_conntrack), pfifo_fast
    "bullseye-5.10": Seen(
        "5.10.0-32-amd64", 987688, 32768, 8192, stat_header("delete_list"),
        "0.9.3-2", (0, 9, 3), True, None, "pfifo_fast", 1000, False,
        "tc utility, iproute2-5.9.0, libbpf 0.3.0",
    ),
    "bookworm-6.1": Seen(
        "6.1.0-50-amd64", 981720, 7680, 7680, stat_header("chainlength"),
        "1.3.3-1~deb12u2", (1, 3, 3), True, False, "fq_codel", 1000, False,
        "tc utility, iproute2-6.1.0, libbpf 1.1.2",
    ),
    "trixie-6.12": Seen(
        "6.12.117+deb13-amd64", 1503108, 65536, 65536, stat_header("chainlength"),
        "2.3.1-1+deb13u1", (2, 3, 1), True, False, "fq_codel", None, False,
        "tc utility, iproute2-6.15.0, libbpf 1.5.0",
    ),
    # sid of 2026-11-30: kernel 7.2 and iproute2 7.3 have cake_mq
    "sid-7.2": Seen(
        "7.2.13+deb14-amd64", 1498852, 65536, 65536, stat_header("chainlength"),
        "2.5.2-1", (2, 5, 2), True, False, "fq_codel", None, True,
        "tc utility, iproute2-7.3.0, libbpf 1.7.0",
    ),
    # bookworm + docker.io with a container publishing :8080 (2 GiB: the kernel's own 65536)
    "docker-bookworm-6.1": Seen(
        "6.1.0-50-amd64", 2012376, 65536, 65536, stat_header("chainlength"),
        "1.3.3-1~deb12u2", (1, 3, 3), True, False, "fq_codel", 1000, False,
        "tc utility, iproute2-6.1.0, libbpf 1.1.2",
    ),
}  # fmt: skip


def facts_of(name: str):
    return host_facts((CAPTURED / name / "reading.txt").read_text())


@pytest.mark.parametrize("name", list(READINGS))
def test_reading_parses_as_seen(name):
    seen = READINGS[name]
    facts = facts_of(name)
    assert facts.complete and facts.unreadable == []
    assert facts.uid == 0 and facts.format == 2
    assert facts.kernel == seen.kernel
    assert facts.mem_bytes == seen.memtotal_kb * 1024
    assert facts.cpus == 1  # the test VMs run with 1 vCPU

    assert facts.conntrack_loaded and facts.conntrack_loadable
    assert facts.conntrack_max == seen.conntrack_max
    assert facts.buckets == facts.hashsize == seen.buckets
    assert facts.sysctls["net.netfilter.nf_conntrack_buckets"] == seen.buckets
    assert facts.stats.source == "/proc/net/stat/nf_conntrack"
    assert list(facts.stats.counters) == seen.stat_header
    assert facts.slab_objsize in (256, 320)
    assert facts.table_full_lines == [] and facts.table_full_readable

    fw = facts.firewalld
    assert fw.installed and fw.active and fw.enabled
    assert fw.version_text == seen.firewalld and fw.version == seen.firewalld_version
    assert fw.cleanup_on_exit is seen.cleanup_on_exit
    assert fw.cleanup_modules_on_exit is seen.cleanup_modules_on_exit

    assert facts.default_iface == "eth0"
    assert facts.root_qdisc("eth0").kind == seen.eth0_qdisc
    assert facts.root_qdisc("lo").kind == "noqueue"
    assert facts.link_speed_mbit("eth0") == seen.eth0_speed
    assert facts.interfaces["eth0"].tx_queues == 1  # qemu user networking: one queue
    assert facts.cake_available and facts.tools.tc_cake is True
    assert facts.cake_mq_available is seen.cake_mq
    assert facts.tools.tc_cake_mq is seen.cake_mq
    assert facts.tools.tc_version == seen.tc_version
    assert facts.systemd and not facts.etc_read_only
    assert all(content is None for content in facts.owned_files.values())  # no conntune yet


@pytest.mark.parametrize("name", list(READINGS))
def test_default_ratio_of_max_to_buckets(name):
    """Before 5.15 the kernel sized max = 4 x buckets; since 5.15 (d532bcd0b269) max = buckets."""
    facts = facts_of(name)
    ratio = 4 if name.startswith("bullseye") else 1
    assert facts.conntrack_max == ratio * facts.buckets


def test_firewalld_restart_unloads_conntrack_only_on_bullseye():
    unloads = {name: facts_of(name).firewalld.restart_unloads_conntrack for name in READINGS}
    assert unloads == {name: name.startswith("bullseye") for name in READINGS}


def test_docker_vm_reading_shows_docker_and_its_bridge():
    facts = facts_of("docker-bookworm-6.1")
    assert facts.docker is not None
    assert facts.docker.version_text == "Docker version 20.10.24+dfsg1, build 5d6db84"
    assert facts.docker.version == (20, 10, 24) and facts.docker.chains
    bridge = facts.interfaces["docker0"]
    assert bridge.kind == "bridge" and bridge.speed_mbit == 10000
    # the reading lists the container's veth twice (lower_ and brif/); the facts hold it once
    text = (CAPTURED / "docker-bookworm-6.1" / "reading.txt").read_text()
    assert "lower=veth0fe7a9f,veth0fe7a9f" in text
    (veth,) = bridge.lower
    assert veth.startswith("veth") and veth in facts.interfaces
    assert facts.root_qdisc("docker0").kind == "noqueue"
    for name in READINGS:
        if name != "docker-bookworm-6.1":
            assert facts_of(name).docker is None
