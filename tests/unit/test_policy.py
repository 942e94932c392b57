import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conntune import cake, paths, profiles, render, sizing
from conntune.changes import drift
from conntune.facts import tc_json
from conntune.hostfacts import Interface, Route
from conntune.policy import plan
from conntune.settings import InvalidSettings, settings_from_data
from tests.factories import GIB, converged, kernel_sysctls, make_facts

CAPTURED = Path(__file__).parent.parent / "fixtures" / "captured"


def planned(facts=None, **data):
    return plan(facts or make_facts(), settings_from_data(data))


def refused(facts=None, **data):
    with pytest.raises(InvalidSettings) as info:
        planned(facts, **data)
    return {error.setting: error.message for error in info.value.errors}


def test_blog_host_sizing():
    # 64 GB: 65786680000 / 16384 / 2 = 2007650.1 -> 2097152 (the blog's number)
    desired = planned(make_facts(mem_bytes=65786680000))
    assert desired.conntrack_max == 2097152
    assert desired.buckets == 2097152  # the kernel's own ratio since 5.15, not the blog's /16


def test_hashsize_ratio_4_reproduces_the_blog_rule():
    desired = planned(make_facts(mem_bytes=65786680000), conntrack_hashsize_ratio=4)
    assert desired.buckets == 524288


def test_ratio_above_4_is_refused_with_the_reason():
    assert "chain" in refused(conntrack_hashsize_ratio=16)["conntrack_hashsize_ratio"]


def test_live_value_above_plan_is_kept_unless_shrink_allowed():
    facts = make_facts(sysctls=kernel_sysctls(conntrack_max=1048576))
    assert planned(facts).conntrack_max == 1048576
    assert planned(facts, conntrack_allow_shrink=True).conntrack_max == 65536


def test_conntrack_max_below_live_count_is_refused():
    facts = make_facts(sysctls=kernel_sysctls(conntrack_max=65536, count=50000))
    assert (
        "below the 50000"
        in refused(facts, conntrack_max=40000, conntrack_allow_shrink=True)["conntrack_max"]
    )


def test_memory_budget():
    errors = refused(conntrack_max=8 * 1024 * 1024)
    assert "conntrack_max_memory_percent" in errors["conntrack_max"]
    facts = make_facts(mem_bytes=64 * GIB)
    desired = planned(facts, conntrack_max=8 * 1024 * 1024, conntrack_max_memory_percent=10)
    assert desired.memory_worst_case_bytes == 8 * 1024 * 1024 * (320 + 128) + desired.buckets * 8


def test_buckets_are_rounded_to_the_kernel_allocation_unit():
    assert planned(conntrack_max=100000).buckets == 100352  # next multiple of 512


def test_container_skips_sizing_but_keeps_timeouts():
    facts = make_facts(sizing_writable=False, cake_available=False)
    desired = planned(facts)
    assert desired.conntrack_max is None and desired.buckets is None
    assert desired.timeouts == profiles.SERVER
    assert any("read-only" in w for w in desired.warnings)
    assert any("sch_cake" in w for w in desired.warnings)
    assert desired.files[paths.MODPROBE_FILE] is None
    assert desired.files[paths.MODULES_LOAD_FILE] is None
    assert "nf_conntrack_max" not in desired.files[paths.SYSCTL_FILE]


def test_profiles():
    assert planned(conntrack_timeout_profile="routeros").timeouts == profiles.ROUTEROS
    assert planned(conntrack_timeout_profile="kernel").timeouts == {}
    server = planned().timeouts
    assert server[f"{profiles.P}tcp_timeout_syn_sent"] == 120
    assert server[f"{profiles.P}tcp_timeout_close_wait"] == 3600
    override = planned(conntrack_timeouts={"udp_timeout": 25}).timeouts
    assert override[f"{profiles.P}udp_timeout"] == 25


def test_timeout_missing_on_kernel_is_skipped_with_warning():
    sysctls = kernel_sysctls()
    del sysctls[f"{profiles.P}icmpv6_timeout"]
    desired = planned(make_facts(sysctls=sysctls))
    assert f"{profiles.P}icmpv6_timeout" not in desired.timeouts
    assert any("icmpv6" in w for w in desired.warnings)


def test_cake_defaults_to_link_speed():
    cake = planned().cake
    assert (cake.interface, cake.bandwidth_bit, cake.diffserv) == ("eth0", 10**9, "besteffort")


def test_cake_rate_above_link_speed_warns():
    desired = planned(cake_bandwidth="1024mbit")
    assert desired.cake.bandwidth_bit == 1_024_000_000
    assert any("above the link speed" in w for w in desired.warnings)


def test_unknown_link_speed_skips_cake_alone_and_asks_for_bandwidth():
    # virtio-unknown-speed: the table and timeouts are planned, CAKE alone is skipped
    facts = make_facts(interfaces={"eth0": Interface("eth0", None, "up", True)})
    desired = planned(facts)
    assert desired.cake is None and desired.conntrack_max == 65536 and desired.timeouts
    assert any("CAKE skipped" in w and "set cake_bandwidth" in w for w in desired.warnings)
    assert planned(facts, cake_bandwidth="100mbit").cake.bandwidth_bit == 10**8


def test_cake_interface_must_exist_and_a_link_down_skips_cake():
    assert "does not exist" in refused(cake_interface="eth9")["cake_interface"]
    facts = make_facts(interfaces={"eth0": Interface("eth0", 1000, "down", False)})
    desired = planned(facts)
    assert desired.cake is None and desired.conntrack_max is not None
    assert any("no carrier" in w and "cake_interface" in w for w in desired.warnings)


def test_no_cake_module_skips_cake():
    desired = planned(make_facts(cake_available=False))
    assert desired.cake is None and desired.files[paths.CAKE_UNIT_FILE] is None


def test_missing_tc_skips_cake_and_names_the_package():
    desired = planned(make_facts(tc_path=None))
    assert desired.cake is None and desired.conntrack_max is not None
    assert any("tc is not installed: install iproute2" in w for w in desired.warnings)


def test_foreign_hashsize_option_is_reported_not_duplicated():
    line = "/etc/modprobe.d/firewalld-sysctls.conf:3:options nf_conntrack hashsize=131072"
    desired = planned(make_facts(modprobe_options=line))
    assert desired.files[paths.MODPROBE_FILE] is None
    assert any("firewalld-sysctls.conf:3" in w for w in desired.warnings)


def test_other_sysctl_files_are_reported():
    line = "/etc/sysctl.d/99-zz.conf:1:net.netfilter.nf_conntrack_max = 1"
    assert any("99-zz.conf:1" in w for w in planned(make_facts(sysctl_file_lines=line)).warnings)


def test_persisted_files_load_the_module_before_sysctl():
    desired = planned()
    assert desired.files[paths.MODULES_LOAD_FILE].splitlines()[-1] == "nf_conntrack"
    assert f"hashsize={desired.buckets}" in desired.files[paths.MODPROBE_FILE]
    sysctl_lines = desired.files[paths.SYSCTL_FILE].splitlines()[1:]
    assert sysctl_lines[0].startswith("net.netfilter.nf_conntrack_buckets")
    assert sysctl_lines[1].startswith("net.netfilter.nf_conntrack_max")
    unit = desired.files[paths.CAKE_UNIT_FILE]
    assert "BindsTo=sys-subsystem-net-devices-eth0.device" in unit
    assert (
        "ExecStart=/usr/sbin/tc qdisc replace dev eth0 root cake bandwidth 1000000000bit besteffort"
        in unit
    )


def test_original_values_are_recorded_once():
    desired = planned()
    original = desired.files[paths.ORIGINAL_FILE]
    assert "net.netfilter.nf_conntrack_max = 65536" in original
    assert "qdisc.eth0 = fq_codel" in original
    facts = make_facts(owned_files={**make_facts().owned_files, paths.ORIGINAL_FILE: original})
    assert planned(facts).files[paths.ORIGINAL_FILE] == original  # kept as it is


def test_a_value_conntune_owns_later_is_added_to_the_record_with_its_value_before():
    # first run: timeouts left alone; a later run sets the UDP timeout. Undo must put the UDP
    # timeout back at the value it had before that later run, and keep every earlier value.
    udp = f"{profiles.P}udp_timeout"
    first = planned(conntrack_timeout_profile="kernel")
    original = first.files[paths.ORIGINAL_FILE]
    assert udp not in original
    applied = converged(make_facts(), first)
    applied.owned_files[paths.ORIGINAL_FILE] = original
    applied.sysctls[udp] = 31  # as the host had it, untouched by conntune so far
    later = planned(
        applied, conntrack_timeout_profile="kernel", conntrack_timeouts={"udp_timeout": 10}
    )
    record = later.files[paths.ORIGINAL_FILE]
    assert record.startswith(original) and f"{udp} = 31" in record
    assert "net.netfilter.nf_conntrack_max = 65536" in record
    assert record.count("nf_conntrack_max") == 1
    after = converged(applied, later)
    after.owned_files[paths.ORIGINAL_FILE] = record
    undo = planned(after, conntune_state="absent")
    assert undo.timeouts[udp] == 31 and undo.conntrack_max == 65536


def test_a_converged_host_has_no_drift():
    facts = make_facts()
    desired = planned(facts)
    assert drift(facts, desired)
    after = converged(facts, desired)
    assert drift(after, planned(after)) == []


@given(
    mem=st.integers(min_value=256 * 2**20, max_value=4096 * GIB),
    ratio=st.sampled_from([1, 2, 3, 4, 1.5]),
    live=st.integers(min_value=1024, max_value=8 * 2**20),
)
def test_sizing_properties(mem, ratio, live):
    facts = make_facts(mem_bytes=mem, sysctls=kernel_sysctls(conntrack_max=live, count=0))
    data = {"conntrack_hashsize_ratio": ratio, "conntrack_max_memory_percent": 50}
    try:
        desired = planned(facts, **data)
    except InvalidSettings as error:  # a live table too big for a tiny host's budget
        assert "conntrack_max" in str(error)
        return
    rule = sizing.default_conntrack_max(mem)
    assert rule & (rule - 1) == 0 and rule * 32768 >= mem  # power of two, at least RAM/32768
    assert desired.conntrack_max == max(rule, live)  # never shrinks
    assert desired.buckets % sizing.BUCKET_ROUNDING == 0
    assert desired.conntrack_max / desired.buckets <= 4
    assert desired.buckets >= desired.conntrack_max / ratio


def test_old_docker_blocks_the_restart_unless_allowed():
    facts = make_facts(docker_version="Docker version 20.10.24+dfsg1, build 5d6db84",
                       docker_chains=True)  # fmt: skip
    blocked = planned(facts)
    assert "CVE-2025-54388" in blocked.firewalld_restart_blocked
    assert blocked.verify_docker_chains
    allowed = planned(facts, firewalld_restart_old_docker=True)
    assert allowed.firewalld_restart_blocked is None and allowed.verify_docker_chains
    fixed = planned(make_facts(docker_version="Docker version 28.3.3, build 980b856"))
    assert fixed.firewalld_restart_blocked is None and not fixed.verify_docker_chains


def test_kube_proxy_keys_are_left_to_it():
    desired = planned(make_facts(kube_proxy=True))
    assert desired.conntrack_max is None and desired.buckets is None
    assert f"{profiles.P}tcp_timeout_established" not in desired.timeouts
    assert f"{profiles.P}udp_timeout" in desired.timeouts  # not one of kube-proxy's
    assert any("kube-proxy (sets it at runtime)" in w for w in desired.warnings)
    taken = planned(make_facts(kube_proxy=True), conntune_override_conflicts=True)
    assert taken.conntrack_max == 65536


def test_earlier_sysctl_file_is_overridden_not_skipped():
    line = f"/etc/sysctl.d/10-early.conf:2:{profiles.P}udp_timeout = 60"
    desired = planned(make_facts(sysctl_file_lines=line))
    assert desired.timeouts[f"{profiles.P}udp_timeout"] == 10
    assert any("conntune's file wins" in w for w in desired.warnings)


def test_absent_restores_the_recorded_values_and_removes_everything():
    from conntune.original import original_record

    fresh = make_facts()
    original = original_record(fresh, planned(fresh))
    applied = converged(fresh, planned(fresh))
    applied.owned_files[paths.ORIGINAL_FILE] = original
    undo = planned(applied, conntune_state="absent")
    assert undo.conntrack_max == 65536 and undo.buckets == 65536
    assert undo.timeouts[f"{profiles.P}tcp_timeout_established"] == 432000
    assert undo.cake is None and undo.cake_remove == "eth0"
    assert set(undo.files) == set(paths.OWNED_FILES) and not any(undo.files.values())
    back = make_facts(owned_files={path: None for path in paths.OWNED_FILES})
    assert drift(back, planned(back, conntune_state="absent")) == []


def test_a_rate_tc_cannot_hold_is_planned_as_the_rate_tc_keeps():
    # tc stores whole bytes per second (iproute2 get_rate64: bps /= 8): 1000001bit is kept as
    # 125000 B/s; planned as it is, it would read back as 1000000bit and drift on every run
    desired = planned(cake_bandwidth="1000001bit")
    assert desired.cake.bandwidth_bit == 1_000_000
    assert "bandwidth 1000000bit" in desired.files[paths.CAKE_UNIT_FILE]
    captured = CAPTURED / "debian12-6.1" / "tc_j_qdisc.cake_1000mbit.json"
    live = json.loads(captured.read_text())
    live[1]["options"]["bandwidth"] = 1_000_001 // 8  # what the kernel then reports
    (qdisc,) = [q for q in tc_json.qdiscs(json.dumps(live)) if q.dev == "eth0"]
    assert cake.matches(qdisc, desired.cake)


@pytest.mark.parametrize("name", ["eth0", "br-1a2b", "wg-vpn.0", "enp3s0f1", "x@y+z", "bond0.100"])
def test_the_cake_unit_names_the_device_as_systemd_does(name):
    facts = make_facts(
        interfaces={name: Interface(name, 1000, "up", True)},
        routes=[Route(4, (name,), 0, "10.0.2.2")],
    )
    unit = planned(facts).files[paths.CAKE_UNIT_FILE]
    path = f"/sys/subsystem/net/devices/{name}"
    if shutil.which("systemd-escape"):
        escaped = subprocess.run(["systemd-escape", "--path", path], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
    else:  # the same, spelled out (systemd's unit_name_escape)
        escaped = "sys-subsystem-net-devices-" + render.systemd_escape(name)
    assert f"BindsTo={escaped}.device" in unit and f"WantedBy={escaped}.device" in unit


def test_without_systemd_cake_is_set_live_only_and_says_so():
    desired = planned(make_facts(systemd=False))
    assert desired.cake is not None and desired.files[paths.CAKE_UNIT_FILE] is None
    assert any("set live only" in w and "after a reboot" in w for w in desired.warnings)
    assert any("no systemd here" in w for w in desired.warnings)  # the sysctl file, too
    assert desired.files[paths.CAKE_UNIT_FILE] is None
    with_systemd = planned(make_facts())
    assert with_systemd.files[paths.CAKE_UNIT_FILE] is not None
    assert not any("no systemd" in w or "live only" in w for w in with_systemd.warnings)


def test_the_plan_explains_the_rate_tc_will_keep():
    desired = planned(cake_bandwidth="9bit")
    assert desired.cake.bandwidth_bit == 8
    assert any(
        "8bit set by cake_bandwidth (9bit), floored to whole bytes" in r for r in desired.reasons
    )


def test_an_undo_writes_only_recorded_values_the_kernel_takes_and_names_the_rest():
    from conntune.original import original_record

    fresh = make_facts()
    record = original_record(fresh, planned(fresh))
    tampered = record + (
        "garbage line\n"
        f"{profiles.P}udp_timeout = abc\n"
        f"{profiles.P}tcp_timeout_close_wait = 60; touch /tmp/PWN\n"
        "net.netfilter.nf_conntrack_bogus = 5\n"
        f"{profiles.P}udp_timeout = 0\n"
    )
    applied = converged(fresh, planned(fresh))
    applied.owned_files[paths.ORIGINAL_FILE] = tampered
    undo = planned(applied, conntune_state="absent")
    assert undo.timeouts[f"{profiles.P}udp_timeout"] == 30  # the recorded value, not 0 or abc
    assert f"{profiles.P}tcp_timeout_close_wait" in undo.timeouts
    close_wait = f"{profiles.P}tcp_timeout_close_wait"
    assert undo.timeouts[close_wait] == fresh.sysctls[close_wait]  # the line as recorded
    assert "net.netfilter.nf_conntrack_bogus" not in undo.timeouts
    warning = next(w for w in undo.warnings if "not restored" in w)
    for line in ("garbage line", "= abc", "touch /tmp/PWN", "nf_conntrack_bogus = 5", "= 0"):
        assert line in warning, line
    assert undo.files[paths.ORIGINAL_FILE] == tampered  # kept for whoever edited it


def test_a_timeout_no_longer_asked_for_goes_back_to_its_value_before_conntune():
    udp = f"{profiles.P}udp_timeout"
    first = planned(conntrack_timeout_profile="kernel", conntrack_timeouts={"udp_timeout": 45})
    applied = converged(make_facts(), first)
    assert applied.sysctls[udp] == 45 and f"{udp} = 45" in applied.owned_files[paths.SYSCTL_FILE]
    later = planned(applied, conntrack_timeout_profile="kernel")
    assert later.timeouts[udp] == 30  # its value before conntune, not 45 until the next boot
    assert any(f"{udp}: no longer asked for; back to 30" in r for r in later.reasons)
    assert drift(applied, later)  # the audit sees it too
    settled = converged(applied, later)
    assert drift(settled, planned(settled, conntrack_timeout_profile="kernel")) == []
