"""
The public parsers against real output: captured from our own test VMs and containers
(tests/fixtures/captured, tests/fixtures/local) and public samples from many kernels and
distros (tests/fixtures/public, sources in SOURCES.md). Expected values were read off the files.
"""

from pathlib import Path

import pytest

from conntune.facts import parse, tc_json
from conntune.qdisc import CakeOptions

FIXTURES = Path(__file__).parent.parent / "fixtures"
D12 = "captured/debian12-6.1"
D13 = "captured/debian13-6.12"
HOST = "local/host-6.18"
PUB = "public"


def text(relative: str) -> str:
    return (FIXTURES / relative).read_text()


@pytest.mark.parametrize(
    ("fixture", "mem_bytes"),
    [
        (f"{D12}/meminfo.txt", 981472 * 1024),
        (f"{D13}/meminfo.txt", 1502836 * 1024),
        (f"{HOST}/proc_meminfo.txt", 24684092 * 1024),
        (f"{PUB}/meminfo/lkml-2.4-legacy-total-used-free-header.txt", 462792 * 1024),
        (f"{PUB}/meminfo/lkml-2.6.9-rc1-no-memavailable-highmem-fields.txt", 515244 * 1024),
        (f"{PUB}/meminfo/lkml-2005-2.6-highmem-2GB-narrow-padding.txt", 2076180 * 1024),
        (f"{PUB}/meminfo/ovh-advance3-rescue-modern-128G-memavailable.txt", 131499104 * 1024),
    ],
)
def test_meminfo_bytes(fixture, mem_bytes):
    assert parse.meminfo_bytes(text(fixture)) == mem_bytes


def test_meminfo_without_final_newline_and_without_memtotal():
    assert parse.meminfo_bytes("MemFree: 1 kB\nMemTotal:   2048 kB") == 2048 * 1024
    with pytest.raises(ValueError):
        parse.meminfo_bytes("MemFree: 1 kB\n")


STAT = [
    (f"{D12}/proc_net_stat_nf_conntrack.idle.txt", {"entries": 6, "drop": 0, "chainlength": 0}),
    (f"{D12}/proc_net_stat_nf_conntrack.after_traffic.txt", {"entries": 17, "drop": 0}),
    (
        f"{D12}/proc_net_stat_nf_conntrack.after_overflow.txt",
        {"entries": 64, "drop": 1026, "early_drop": 359, "insert_failed": 0},
    ),
    (f"{D13}/proc_net_stat_nf_conntrack.idle.txt", {"entries": 7, "drop": 0, "chainlength": 0}),
    (f"{D13}/proc_net_stat_nf_conntrack.after_traffic.txt", {"entries": 19, "drop": 0}),
    (
        f"{D13}/proc_net_stat_nf_conntrack.after_overflow.txt",
        {"entries": 64, "drop": 1770, "early_drop": 361, "insert_failed": 0},
    ),
    (f"{HOST}/proc_net_stat_nf_conntrack.txt", {"entries": 0, "drop": 0, "search_restart": 0}),
    (
        f"{PUB}/proc_net_stat_nf_conntrack/ncollectd-test01-chainlength-8cpu.txt",
        {"entries": 67, "clashres": 46, "chainlength": 0},
    ),
    (
        f"{PUB}/proc_net_stat_nf_conntrack/netdata-161-17col-searched-busy-2016.txt",
        {"entries": 1822, "drop": 1346, "found": 2695749456, "searched": 140198351},
    ),
    (
        f"{PUB}/proc_net_stat_nf_conntrack/node-exporter-17col-searched-4cpu.txt",
        {"entries": 33, "drop": 0, "delete_list": 0},
    ),
    (
        f"{PUB}/proc_net_stat_nf_conntrack/perl-acme-tc-agent-comment-17col-2cpu.txt",
        {"entries": 62, "found": 7658541, "searched": 15164},
    ),
]


@pytest.mark.parametrize(("fixture", "expected"), STAT)
def test_conntrack_stat(fixture, expected):
    totals = parse.conntrack_stat(text(fixture))
    for key, value in expected.items():
        assert totals[key] == value, key


def test_conntrack_stat_header_only_and_empty():
    header = text(
        f"{PUB}/proc_net_stat_nf_conntrack/google-nftables-138-5.10-clashres-delete_list-header-only.txt"
    )
    assert parse.conntrack_stat(header) == {}
    assert parse.conntrack_stat("") == {}


def test_conntrack_stat_robustness():
    # 16-column pre-2.6.35 layout (header from the kernel source), a short row, trailing spaces,
    # no final newline: columns are matched by name, extra or missing ones tolerated.
    sample = (
        "entries  searched found new invalid ignore delete delete_list insert insert_failed drop "
        "early_drop icmp_error  expect_new expect_create expect_delete \n"
        "00000010  00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 "
        "00000000 00000005 00000001 00000000  00000000 00000000 00000000 \n"
        "00000010  00000001 00000002 00000003 00000000 00000000 00000000 00000000 00000000 "
        "00000000 0000000a"
    )
    totals = parse.conntrack_stat(sample)
    assert totals["entries"] == 16
    assert totals["drop"] == 15
    assert totals["early_drop"] == 1
    assert "search_restart" not in totals


CLI = [
    (f"{D12}/conntrack_S.txt", {"drop": 0, "chaintoolong": 0, "clash_resolve": 0}),
    (f"{D12}/conntrack_S.after_overflow.txt", {"drop": 1026, "early_drop": 359}),
    (f"{D13}/conntrack_S.txt", {"drop": 0, "chaintoolong": 0}),
    (f"{D13}/conntrack_S.after_overflow.txt", {"drop": 1770, "early_drop": 361}),
    (f"{HOST}/conntrack_S.txt", {"drop": 0, "search_restart": 0}),
    (
        f"{PUB}/conntrack_S/aks-5.15-azure-clash_resolve-chaintoolong.txt",
        {
            "drop": 5,
            "early_drop": 1878045,
            "insert_failed": 5,
            "search_restart": 4642957175,
            "clash_resolve": 1541902993,
            "chaintoolong": 0,
        },
    ),
    (f"{PUB}/conntrack_S/google-nftables-138-debian11-5.10-no-ignore.txt", {"search_restart": 1}),
    (
        f"{PUB}/conntrack_S/telegraf-8955-ignore-trailing-space-8cpu.txt",
        {"drop": 1, "insert_failed": 1, "ignore": 1362472446, "search_restart": 266520},
    ),
]


@pytest.mark.parametrize(("fixture", "expected"), CLI)
def test_conntrack_cli_stats(fixture, expected):
    totals = parse.conntrack_cli_stats(text(fixture))
    assert "cpu" not in totals
    for key, value in expected.items():
        assert totals[key] == value, key


def test_conntrack_cli_stats_ignores_other_lines():
    sample = "conntrack v1.4.7 (conntrack-tools): 5 flow entries\ncpu=0 found=1 drop=2\ncpu=1\tfound=3 drop=4 "
    assert parse.conntrack_cli_stats(sample) == {"found": 4, "drop": 6}


@pytest.mark.parametrize(
    ("fixture", "key", "value", "size"),
    [
        (
            f"{D12}/sysctl_net_netfilter.txt",
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            "432000",
            None,
        ),
        (f"{D12}/sysctl_a_grep_conntrack.txt", "net.netfilter.nf_conntrack_max", "7680", None),
        (f"{D13}/sysctl_net_netfilter.txt", "net.netfilter.nf_conntrack_max", "65536", None),
        (f"{HOST}/sysctl_net_netfilter.txt", "net.netfilter.nf_conntrack_buckets", "262144", None),
        (
            f"{PUB}/sysctl/ubuntu-aws-3.x-sysctl-a-grep-conntrack-near-full-legacy-net.nf_conntrack_max.txt",
            "net.netfilter.nf_conntrack_count",
            "65422",
            None,
        ),
        (
            f"{PUB}/sysctl/ubuntu-2009-2.6.2x-sysctl-a-grep-ipv4-ip_conntrack-block.txt",
            None,
            None,
            21,
        ),
    ],
)
def test_sysctl(fixture, key, value, size):
    values = parse.sysctl(text(fixture))
    if key:
        assert values[key] == value
    if size:
        assert len(values) == size


def test_sysctl_tolerates_errors_tabs_and_no_spaces():
    sample = (
        "sysctl: permission denied on key 'net.ipv4.tcp_fastopen_key'\n"
        "net.ipv4.tcp_rmem = 4096\t131072\t6291456\n"
        "net.netfilter.nf_conntrack_max=262144   \n"
        "garbage line"
    )
    assert parse.sysctl(sample) == {
        "net.ipv4.tcp_rmem": "4096\t131072\t6291456",
        "net.netfilter.nf_conntrack_max": "262144",
    }


@pytest.mark.parametrize(
    ("fixture", "speed"),
    [
        (f"{D12}/ethtool_eth0.txt", 1000),
        (f"{D12}/sys_class_net_eth0_speed.txt", 1000),
        (f"{D12}/ethtool_eth0.nic_speed_unset.txt", None),  # Speed: Unknown!
        (f"{D12}/sys_class_net_eth0_speed.nic_speed_unset.txt", None),  # -1
        (f"{D13}/ethtool_eth0.txt", None),
        (f"{D13}/sys_class_net_eth0_speed.txt", None),
        (f"{D13}/ethtool_eth0.nic_speed_1000.txt", 1000),
        (f"{D13}/sys_class_net_eth0_speed.nic_speed_1000.txt", 1000),
        (f"{D12}/sys_class_net_lo_speed.txt", None),  # "Invalid argument"
        (f"{D12}/ethtool_lo.txt", None),
        (f"{HOST}/ethtool_eth0.txt", None),  # Speed: Unknown!
        (f"{HOST}/sys_class_net_eth0_speed.txt", None),  # -1
        (f"{PUB}/ethtool/aws-ixgbevf-10000-centos7-wol-stderr-spaces.txt", 10000),
        (f"{PUB}/ethtool/centos7-bond0-2000-no-fec-lines.txt", 2000),
        (f"{PUB}/ethtool/google-testrun-100mbps-partner-trailing-spaces.txt", 100),
        (f"{PUB}/ethtool/lkml-ice-25000-dac-spaces.txt", 25000),
        (f"{PUB}/ethtool/nagios-plugins-203-virtio-link-only-no-speed.txt", None),
        (f"{PUB}/ethtool/netplan-bond6-1000-one-slave-unplugged.txt", 1000),
        (f"{PUB}/ethtool/netplan-bond6-2000-wol-stderr.txt", 2000),
        (f"{PUB}/ethtool/node-exporter-fixture-1000-e1000e-netlink-error.txt", 1000),
        (f"{PUB}/ethtool/ocs-370-proxmox-virtio-unknown-TRUNCATED.txt", None),
        (f"{PUB}/ethtool/ubuntu-server-guide-10000-fibre.txt", 10000),
        (f"{PUB}/ethtool/xcp-ng-661-xen-netfront-link-only-spaces.txt", None),
    ],
)
def test_link_speed_mbit(fixture, speed):
    assert parse.link_speed_mbit(text(fixture)) == speed


@pytest.mark.parametrize(
    ("sample", "speed"),
    [
        ("", None),
        ("-1\n", None),
        ("4294967295", None),
        ("65535", None),
        ("0", None),
        ("10000", 10000),
        ("\tSpeed: 2500Mb/s", 2500),
        ("Speed: Unknown!", None),
    ],
)
def test_link_speed_edge_cases(sample, speed):
    assert parse.link_speed_mbit(sample) == speed


def _cake(qdiscs):
    return [q for q in qdiscs if q.kind == "cake"]


def _root(qdiscs, dev):
    return next(q for q in qdiscs if q.dev == dev and q.root)


@pytest.mark.parametrize(
    ("fixture", "kinds", "cake_bandwidths"),
    [
        (f"{D12}/tc_j_s_qdisc.default.json", {"lo": "noqueue", "eth0": "fq_codel"}, []),
        (f"{D12}/tc_j_s_qdisc.cake_1000mbit.json", {"eth0": "cake"}, [10**9]),
        (f"{D12}/tc_j_qdisc.cake_1000mbit.json", {"eth0": "cake"}, [10**9]),
        (f"{D12}/tc_j_s_qdisc.cake_10mbit_diffserv4_traffic.json", {"eth0": "cake"}, [10**7]),
        (f"{D13}/tc_j_s_qdisc.default.json", {"lo": "noqueue", "eth0": "fq_codel"}, []),
        (f"{D13}/tc_j_s_qdisc.cake_1000mbit.json", {"eth0": "cake"}, [10**9]),
        (f"{D13}/tc_j_s_qdisc.cake_10mbit_diffserv4_traffic.json", {"eth0": "cake"}, [10**7]),
        (f"{HOST}/tc_j_s_qdisc_show.json", {"eth0": "pfifo_fast", "lo": "noqueue"}, []),
        (
            f"{PUB}/tc_json/cake-4wan-diffserv4-ingress-ptm-tins-iproute2-json.json",
            {"ens16": "cake", "ens18": "fq_codel"},
            [38_000_000, 940_000_000, 18_000_000, 95_000_000],  # bytes/s x 8
        ),
    ],
)
def test_qdiscs(fixture, kinds, cake_bandwidths):
    found = tc_json.qdiscs(text(fixture))
    for dev, kind in kinds.items():
        assert _root(found, dev).kind == kind
    assert [q.cake.bandwidth_bit for q in _cake(found)] == cake_bandwidths
    for qdisc in found:
        assert qdisc.kind and qdisc.handle
        assert qdisc.root or qdisc.parent


@pytest.mark.parametrize("release", [D12, D13])
def test_qdiscs_cake_tins_with_traffic(release):
    (cake,) = _cake(
        tc_json.qdiscs(text(f"{release}/tc_j_s_qdisc.cake_10mbit_diffserv4_traffic.json"))
    )
    assert cake.cake.diffserv == "diffserv4"
    assert [tin.name for tin in cake.tins] == ["bulk", "besteffort", "video", "voice"]
    assert sum(tin.sent_packets for tin in cake.tins) > 0


def test_qdiscs_children_and_unlimited():
    found = tc_json.qdiscs(text(f"{PUB}/tc_json/mqprio-pfifo_fast-priomap-trailing-space.json"))
    assert found[0].kind == "mqprio" and found[0].root is True
    assert {q.parent for q in found[1:]} == {f"8001:{n}" for n in range(1, 9)}
    # a fragment (one object, not an array) still parses; bandwidth may be "unlimited"
    fragment = tc_json.qdiscs(text(f"{PUB}/tc_json/libreqos-mq-root-7fff.fragment.txt"))
    assert fragment[0].kind == "mq"


def test_qdiscs_odd_input():
    assert tc_json.qdiscs("") == []
    assert tc_json.qdiscs("Error: Specified qdisc kind is unknown.") == []
    two = '[{"kind":"fq","handle":"0:","dev":"a","root":true}]\n[{"kind":"cake","dev":"b","root":true,"options":{"bandwidth":"unlimited"}}]'
    found = tc_json.qdiscs(two)
    assert [q.kind for q in found] == ["fq", "cake"]
    assert found[0].cake is None and found[1].cake.bandwidth_bit is None  # unlimited


TABLE_FULL = {
    "arabic-blog-syslog-NET-suppressed-blank-lines.txt": 2,
    "asuswrt-207-syslog-no-hostname-expectation-full-NOT-table-full.txt": 0,
    "cn-blog-centos5-printk-suppressed.txt": 2,
    "cn-tengine-aws-kern.log-syslog+dmesg-ts-net_ratelimit-with-author-note.txt": 20,
    "geektime-linux-perf-dmesg-doubled-net_ratelimit.txt": 3,
    "hotsos-test-kernlog-syslog-doubled.txt": 1,
    "kube-aws-476-dmesg-doubled-prefix-trailing-space.txt": 4,
    "kube-network-policies-readme-dmesg-doubled-net_ratelimit.txt": 10,
    "kubernetes-18604-dmesg-plain.txt": 14,
    "kubernetes-71261-dmesg-T-centos7-3.10.txt": 4,
    "lede-10625-openwrt-logread-expectation-full-NOT-table-full.txt": 0,
    "lkml-2.4.13-syslog-ip_conntrack.txt": 1,
    "lkml-2.4.7-NET-messages-suppressed.txt": 1,
    "magedu-centos8-vs-centos6-messages-wrapped.txt": 2,
    "pc-freak-dmesg-mixed-period-__ratelimit.txt": 12,
    "security-se-43205-messages-no-timestamp-truncated.txt": 1,
    "snout-8-dmesg-T-net_ratelimit.txt": 10,
    "sre-handbook-centos6.3-2.6.32-dmesg-no-timestamp.txt": 3,
    "starphleet-352-syslog-wrapped-lines.txt": 5,
    "techytrois-openvz-ip_conntrack-VPS.txt": 2,
}


@pytest.mark.parametrize(("name", "count"), sorted(TABLE_FULL.items()))
def test_table_full_public(name, count):
    assert parse.table_full_events(text(f"{PUB}/table_full/{name}")) == count


@pytest.mark.parametrize(
    "name",
    [
        "dmesg_table_full.txt",
        "dmesg_iso_table_full.txt",
        "journalctl_k_table_full.txt",
        "journalctl_k_iso_table_full.txt",
    ],
)
def test_table_full_captured_debian12(name):
    assert parse.table_full_events(text(f"{D12}/{name}")) == 20


def test_table_full_wordings_and_timestamps():
    log = "\n".join(
        [
            "[  100.000001] nf_conntrack: table full, dropping packet",
            "[Thu Jan  5 10:00:01 2023] nf_conntrack: nf_conntrack: table full, dropping packet",
            "2023-01-05T10:00:02,123456+00:00 nf_conntrack: table full in netns 4026532281, dropping packet",
            "Jan  5 10:00:03 host kernel: ip_conntrack: table full, dropping packet.",
            "Jan  5 10:00:04 host kernel: nf_conntrack: expectation table full",
            "[  101.0] net_ratelimit: 12 callbacks suppressed",
        ]
    )
    assert parse.table_full_events(log) == 4
    assert parse.last_table_full_time(log) == "Jan  5 10:00:03"
    assert parse.last_table_full_time("nothing here") is None


def test_slab_objsize():
    assert parse.slab_objsize(text(f"{D12}/slabinfo.txt")) == 256
    assert parse.slab_objsize(text(f"{D13}/slabinfo.txt")) == 256
    assert parse.slab_objsize(text(f"{HOST}/slabinfo_nf_conntrack.txt")) == 256
    assert parse.slab_objsize("") is None


def test_default_route_dev():
    assert parse.default_route_dev(text(f"{D12}/ip_o_route_show_default.txt")) == "eth0"
    assert parse.default_route_dev(text(f"{D13}/ip_o_route_show_default.txt")) == "eth0"
    assert parse.default_route_dev(text(f"{HOST}/ip_o_route_show_default.txt")) == "eth0"
    assert parse.default_route_dev("") is None


def test_cake_with_every_option_as_trixie_reports_it():
    # captured by tests/e2e/test_vm_reboot.py on Debian 13 (6.12, iproute2 6.15): SHAPED there
    (root,) = tc_json.qdiscs(text(f"{D13}/tc_j_s_qdisc_dev_eth0.cake_all_options.json"))
    assert root.kind == "cake" and root.root
    assert root.cake == CakeOptions(
        bandwidth_bit=100_000_000, diffserv="diffserv4", flowmode="dual-srchost", nat=True,
        wash=True, ingress=False, ack_filter="aggressive", split_gso=False, rtt_us=30_000,
        raw=False, atm="ptm", overhead=30, mpu=72,
    )  # fmt: skip
    assert [tin.name for tin in root.tins] == ["bulk", "besteffort", "video", "voice"]
    assert root.tins[3].sent_packets == 369 and root.tins[0].peak_delay_us == 608


@pytest.mark.parametrize(
    ("text", "number"),
    [  # kstrtouint(text, 0): lib/kstrtox.c, as param_set_uint parses hashsize
        ("262144", 262144), ("+262144", 262144), ("0x40000", 262144), ("0X40000", 262144),
        ("010", 8), ("0", 0), ("4294967295", 4294967295), ("12\n", 12),
        ("4294967296", None), ("-1", None), ("08", None), ("0x", None), ("", None),
        ("1e3", None), ("262144 ", None), ("= 262144", None),
    ],
)  # fmt: skip
def test_hash_sizes_are_read_as_the_kernel_reads_them(text, number):
    from conntune.facts.config_lines import kernel_uint

    assert kernel_uint(text) == number


def test_the_record_of_counters_reads_with_and_without_a_boot_id():
    from conntune.facts.sections import counters_at_change

    stat = (Path(__file__).parents[1] / "fixtures" / "cases" / "insert-failed-no-drop"
            / "conntrack-S.txt").read_text()  # fmt: skip
    stats, lines, boot = counters_at_change(
        "tablefull 3\n" + stat
    )  # a record written before the boot id
    assert (stats.get("insert_failed"), lines, boot) == (199, 3, None)
    stats, lines, boot = counters_at_change("tablefull 0 boot 04c3e8eb-8c2e\n" + stat)
    assert (stats.get("insert_failed"), lines, boot) == (199, 0, "04c3e8eb-8c2e")
    assert counters_at_change("") == (None, None, None)
    assert counters_at_change("tablefull\n") == (None, None, None)
