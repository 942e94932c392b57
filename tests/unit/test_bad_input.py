"""
The bad-input matrix: every setting and every host fact conntune depends on, each wrong in a
realistic way. Each must be refused by the policy, before any operation exists, with the
setting (or the host condition) named. The deploy prints these as `[host] conntune: SETTING:
reason` and fails that host only (tests/integration/test_deploy.py, test_safety.py).
"""

import pytest

from conntune.hostfacts import Interface
from conntune.policy import plan
from conntune.settings import InvalidSettings, settings_from_data
from tests.factories import kernel_sysctls, make_facts

# (id, host data, host fact overrides, the setting the error must name, words in the reason)
MATRIX = [
    # --- timeouts
    (
        "unknown profile",
        {"conntrack_timeout_profile": "mikrotik"},
        {},
        "conntrack_timeout_profile",
        "unknown profile",
    ),
    (
        "profile not a string",
        {"conntrack_timeout_profile": 3},
        {},
        "conntrack_timeout_profile",
        "unknown profile",
    ),
    (
        "unknown timeout key",
        {"conntrack_timeouts": {"tcp_timeout_bogus": 5}},
        {},
        "conntrack_timeouts.tcp_timeout_bogus",
        "unknown timeout",
    ),
    (
        "hashsize is not a timeout",
        {"conntrack_timeouts": {"hashsize": 5}},
        {},
        "conntrack_timeouts.hashsize",
        "unknown timeout",
    ),
    (
        "negative timeout",
        {"conntrack_timeouts": {"udp_timeout": -5}},
        {},
        "conntrack_timeouts.udp_timeout",
        "whole number",
    ),
    (
        "zero timeout",
        {"conntrack_timeouts": {"udp_timeout": 0}},
        {},
        "conntrack_timeouts.udp_timeout",
        "whole number",
    ),
    (
        "fractional timeout",
        {"conntrack_timeouts": {"udp_timeout": 2.5}},
        {},
        "conntrack_timeouts.udp_timeout",
        "whole number",
    ),
    (
        "timeout as text",
        {"conntrack_timeouts": {"udp_timeout": "30s"}},
        {},
        "conntrack_timeouts.udp_timeout",
        "whole number",
    ),
    (
        "timeout bool",
        {"conntrack_timeouts": {"udp_timeout": True}},
        {},
        "conntrack_timeouts.udp_timeout",
        "whole number",
    ),
    (
        "absurd timeout",
        {"conntrack_timeouts": {"tcp_timeout_established": 10**10}},
        {},
        "conntrack_timeouts.tcp_timeout_established",
        "whole number",
    ),
    (
        "timeouts not a mapping",
        {"conntrack_timeouts": ["udp_timeout=30"]},
        {},
        "conntrack_timeouts",
        "mapping",
    ),
    (
        "shell in timeout key",
        {"conntrack_timeouts": {"udp_timeout;reboot": 30}},
        {},
        "conntrack_timeouts.udp_timeout;reboot",
        "unknown timeout",
    ),
    # --- sizing
    ("max zero", {"conntrack_max": 0}, {}, "conntrack_max", "positive integer"),
    ("max negative", {"conntrack_max": -65536}, {}, "conntrack_max", "positive integer"),
    ("max text", {"conntrack_max": "262144; reboot"}, {}, "conntrack_max", "positive integer"),
    ("max float", {"conntrack_max": 1.5e6}, {}, "conntrack_max", "positive integer"),
    (
        "max below live count",
        {"conntrack_max": 1000, "conntrack_allow_shrink": True},
        {"sysctls": kernel_sysctls(count=5000)},
        "conntrack_max",
        "below the 5000",
    ),
    (
        "max above memory budget",
        {"conntrack_max": 64 * 2**20},
        {},
        "conntrack_max",
        "conntrack_max_memory_percent",
    ),
    ("MemTotal unreadable", {}, {"mem_bytes": None}, "conntrack_max", "MemTotal"),
    (
        "allow_shrink not bool",
        {"conntrack_allow_shrink": "yes"},
        {},
        "conntrack_allow_shrink",
        "true or false",
    ),
    (
        "ratio 16 (chain limit)",
        {"conntrack_hashsize_ratio": 16},
        {},
        "conntrack_hashsize_ratio",
        "chain",
    ),
    ("ratio 0", {"conntrack_hashsize_ratio": 0}, {}, "conntrack_hashsize_ratio", "outside 1..4"),
    (
        "ratio text",
        {"conntrack_hashsize_ratio": "4"},
        {},
        "conntrack_hashsize_ratio",
        "outside 1..4",
    ),
    (
        "memory percent 0",
        {"conntrack_max_memory_percent": 0},
        {},
        "conntrack_max_memory_percent",
        "outside",
    ),
    (
        "memory percent 90",
        {"conntrack_max_memory_percent": 90},
        {},
        "conntrack_max_memory_percent",
        "outside",
    ),
    # --- CAKE
    ("bandwidth 0", {"cake_bandwidth": "0"}, {}, "cake_bandwidth", "above zero"),
    ("bandwidth -5mbit", {"cake_bandwidth": "-5mbit"}, {}, "cake_bandwidth", "not a rate"),
    ("bandwidth 1.5.0gbit", {"cake_bandwidth": "1.5.0gbit"}, {}, "cake_bandwidth", "not a rate"),
    ("bandwidth fast", {"cake_bandwidth": "fast"}, {}, "cake_bandwidth", "not a rate"),
    ("bandwidth 10tbit", {"cake_bandwidth": "10tbit"}, {}, "cake_bandwidth", "not a real link"),
    (
        "bandwidth unit typo",
        {"cake_bandwidth": "100mbits"},
        {},
        "cake_bandwidth",
        "unknown rate unit",
    ),
    ("bandwidth shell", {"cake_bandwidth": "1gbit $(reboot)"}, {}, "cake_bandwidth", "not a rate"),
    (
        "interface does not exist",
        {"cake_interface": "eth9"},
        {},
        "cake_interface",
        "does not exist",
    ),
    (
        "interface shell metacharacters",
        {"cake_interface": "eth0;reboot"},
        {},
        "cake_interface",
        "not an interface name",
    ),
    (
        "interface too long",
        {"cake_interface": "x" * 16},
        {},
        "cake_interface",
        "not an interface name",
    ),
    ("unknown diffserv", {"cake_diffserv": "diffserv5"}, {}, "cake_diffserv", "unknown mode"),
    # --- CAKE options: every value the kernel or tc would reject (tc/q_cake.c)
    ("bandwidth share above 100%", {"cake_bandwidth": "120%"}, {}, "cake_bandwidth", "(0, 100]"),
    ("bandwidth share zero", {"cake_bandwidth": "0%"}, {}, "cake_bandwidth", "(0, 100]"),
    ("bandwidth share text", {"cake_bandwidth": "most%"}, {}, "cake_bandwidth", "percentage"),
    ("overhead above 256", {"cake_overhead": 300}, {}, "cake_overhead", "-64..256"),
    ("overhead below -64", {"cake_overhead": -65}, {}, "cake_overhead", "-64..256"),
    ("overhead unknown preset", {"cake_overhead": "adsl"}, {}, "cake_overhead", "docsis"),
    ("overhead as text number", {"cake_overhead": "18"}, {}, "cake_overhead", "-64..256"),
    ("mpu negative", {"cake_mpu": -1}, {}, "cake_mpu", "0..256"),
    ("mpu above 256", {"cake_mpu": 300}, {}, "cake_mpu", "0..256"),
    ("rtt without unit", {"cake_rtt": "100"}, {}, "cake_rtt", "with its unit"),
    ("rtt zero", {"cake_rtt": "0ms"}, {}, "cake_rtt", "outside"),
    ("rtt unknown preset", {"cake_rtt": "moon"}, {}, "cake_rtt", "interplanetary"),
    ("rtt shell", {"cake_rtt": "50ms; reboot"}, {}, "cake_rtt", "round-trip time"),
    ("nat not bool", {"cake_nat": "yes"}, {}, "cake_nat", "true or false"),
    ("wash not bool", {"cake_wash": 1}, {}, "cake_wash", "true or false"),
    ("ack filter typo", {"cake_ack_filter": "on"}, {}, "cake_ack_filter", "unknown ack filter"),
    (
        "flow isolation typo",
        {"cake_flow_isolation": "per-host"},
        {},
        "cake_flow_isolation",
        "unknown flow isolation",
    ),
    ("split gso not bool", {"cake_split_gso": "no"}, {}, "cake_split_gso", "true or false"),
    (
        "force single queue not bool",
        {"cake_force_single_queue": "yes"},
        {},
        "cake_force_single_queue",
        "true or false",
    ),
    ("lock wait negative", {"conntune_lock_wait": -1}, {}, "conntune_lock_wait", "0..3600"),
    ("cake not bool", {"cake": "on"}, {}, "cake", "true or false"),
    # --- firewalld, state, typos
    (
        "firewalld_restart typo",
        {"firewalld_restart": "sometimes"},
        {},
        "firewalld_restart",
        "not one of",
    ),
    (
        "old docker flag not bool",
        {"firewalld_restart_old_docker": "yes"},
        {},
        "firewalld_restart_old_docker",
        "true or false",
    ),
    ("unknown state", {"conntune_state": "gone"}, {}, "conntune_state", "not one of"),
    (
        "override not bool",
        {"conntune_override_conflicts": 1},
        {},
        "conntune_override_conflicts",
        "true or false",
    ),
    (
        "typo in a setting name",
        {"conntrack_timout_profile": "server"},
        {},
        "conntrack_timout_profile",
        "unknown setting",
    ),
    ("typo in a cake setting", {"cake_bandwith": "1gbit"}, {}, "cake_bandwith", "unknown setting"),
    # --- found by a new user (issue 13/11 review)
    (
        "max above INT_MAX",
        {"conntrack_max": 2**31},
        {},
        "conntrack_max",
        "positive integer up to 2147483647",
    ),
    ("bandwidth infinite", {"cake_bandwidth": float("inf")}, {}, "cake_bandwidth", "not a rate"),
    ("bandwidth NaN", {"cake_bandwidth": float("nan")}, {}, "cake_bandwidth", "not a rate"),
    ("bandwidth 1bit", {"cake_bandwidth": "1bit"}, {}, "cake_bandwidth", "unlimited"),
    ("bandwidth mibps", {"cake_bandwidth": "10mibps"}, {}, "cake_bandwidth", "BYTES per second"),
    (
        "the kernel's name as a setting",
        {"nf_conntrack_max": 262144},
        {},
        "nf_conntrack_max",
        "unknown setting",
    ),
    (
        "a near spelling",
        {"conntrak_max": 262144},
        {},
        "conntrak_max",
        "did you mean conntrack_max?",
    ),
    (
        "a timeout given twice",
        {"conntrack_timeouts": {"udp_timeout": 30, "net.netfilter.nf_conntrack_udp_timeout": 60}},
        {},
        "conntrack_timeouts.net.netfilter.nf_conntrack_udp_timeout",
        "give it once",
    ),
    (
        "a share that resolves below 8bit",
        {"cake_bandwidth": "0.0000001%"},
        {},
        "cake_bandwidth",
        "below 8bit",
    ),
    ("capitals are not a setting", {"CONNTRACK_MAX": 1}, {}, "CONNTRACK_MAX", "did you mean"),
    # --- the host itself
    ("sysctl missing", {}, {"sysctl_path": None}, "sysctl", "not installed"),
    (
        "nf_conntrack not loadable",
        {},
        {"conntrack_loaded": False, "conntrack_loadable": False, "sysctls": {}},
        "nf_conntrack",
        "cannot be loaded",
    ),
    ("/etc read-only", {}, {"etc_read_only": True}, "/etc", "read-only"),
    ("/etc full", {}, {"etc_free_kb": 12}, "/etc", "full"),
    ("/var/lib full", {}, {"varlib_free_kb": 0}, "/var/lib", "full"),
]


def test_matrix_is_large_enough():
    assert len(MATRIX) + len(CAKE_SKIPS) >= 45


@pytest.mark.parametrize(
    ("data", "facts", "setting", "words"),
    [pytest.param(d, f, s, w, id=name) for name, d, f, s, w in MATRIX],
)
def test_bad_input_is_refused_naming_the_setting(data, facts, setting, words):
    with pytest.raises(InvalidSettings) as refused:
        plan(make_facts(**facts), settings_from_data(data))
    errors = {error.setting: error.message for error in refused.value.errors}
    assert setting in errors, errors
    assert words in errors[setting], errors[setting]


# CAKE is optional: a host condition that rules it out skips CAKE alone, with a warning that
# names what to set or install, and the conntrack part is planned as usual (never refused).
CAKE_SKIPS = [
    (
        "speed unknown, no bandwidth",
        {},
        {"interfaces": {"eth0": Interface("eth0", None, "up", True)}},
        "set cake_bandwidth",
    ),
    (
        "interface without carrier",
        {"cake_interface": "eth1"},
        {
            "interfaces": {
                "eth0": Interface("eth0", 1000, "up", True),
                "eth1": Interface("eth1", 1000, "down", False),
            }
        },
        "no carrier",
    ),
    ("no default route", {}, {"default_iface": None}, "set cake_interface"),
    ("tc missing", {}, {"tc_path": None}, "install iproute2"),
    (
        "bandwidth share of an unknown speed",
        {"cake_bandwidth": "95%"},
        {"interfaces": {"eth0": Interface("eth0", None, "up", True)}},
        "set cake_bandwidth to a rate",
    ),
]


@pytest.mark.parametrize(
    ("data", "facts", "words"), [pytest.param(d, f, w, id=name) for name, d, f, w in CAKE_SKIPS]
)
def test_cake_problems_skip_cake_alone(data, facts, words):
    desired = plan(make_facts(**facts), settings_from_data(data))
    assert desired.cake is None
    assert desired.conntrack_max == 65536 and desired.timeouts
    assert any(w.startswith("CAKE skipped") and words in w for w in desired.warnings)


def test_good_input_passes_through_the_same_path():
    assert plan(make_facts(), settings_from_data({})).conntrack_max == 65536


def test_an_undo_is_never_blocked_by_a_bad_setting_it_does_not_read():
    data = {"conntune_state": "absent", "cake_bandwidth": "fast", "conntrak_max": 1}
    assert settings_from_data(data).conntune_state == "absent"
    with pytest.raises(InvalidSettings):  # the undo's own settings are still checked
        settings_from_data({**data, "firewalld_restart": "sometimes"})
