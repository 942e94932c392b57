import pytest

from conntune import profiles
from conntune.settings import InvalidSettings, Settings, settings_from_data


def refused(data):
    with pytest.raises(InvalidSettings) as info:
        settings_from_data(data)
    return {error.setting: error.message for error in info.value.errors}


def test_defaults():
    settings = settings_from_data({})
    assert settings == Settings()
    assert settings.conntrack_timeout_profile == "server"
    assert settings.cake is True
    assert settings.firewalld_restart == "on-change"


def test_unrelated_host_data_is_ignored():
    assert settings_from_data({"ssh_port": 22, "_sudo": True}) == Settings()


def test_timeouts_accept_short_and_full_names():
    settings = settings_from_data(
        {
            "conntrack_timeouts": {
                "udp_timeout": 20,
                "net.netfilter.nf_conntrack_generic_timeout": 60,
            }
        }
    )
    assert settings.conntrack_timeouts == {
        f"{profiles.P}udp_timeout": 20,
        f"{profiles.P}generic_timeout": 60,
    }


@pytest.mark.parametrize(
    ("data", "setting", "words"),
    [
        ({"conntrack_timeout_profile": "mikrotik"}, "conntrack_timeout_profile", "unknown profile"),
        (
            {"conntrack_timeouts": {"tcp_timeout_bogus": 5}},
            "conntrack_timeouts.tcp_timeout_bogus",
            "unknown timeout",
        ),
        (
            {"conntrack_timeouts": {"udp_timeout": -1}},
            "conntrack_timeouts.udp_timeout",
            "whole number",
        ),
        (
            {"conntrack_timeouts": {"udp_timeout": 0}},
            "conntrack_timeouts.udp_timeout",
            "whole number",
        ),
        (
            {"conntrack_timeouts": {"udp_timeout": 1.5}},
            "conntrack_timeouts.udp_timeout",
            "whole number",
        ),
        (
            {"conntrack_timeouts": {"udp_timeout": "30"}},
            "conntrack_timeouts.udp_timeout",
            "whole number",
        ),
        (
            {"conntrack_timeouts": {"udp_timeout": 10**9}},
            "conntrack_timeouts.udp_timeout",
            "whole number",
        ),
        ({"conntrack_timeouts": [1, 2]}, "conntrack_timeouts", "mapping"),
        ({"conntrack_max": 0}, "conntrack_max", "positive integer"),
        ({"conntrack_max": "lots"}, "conntrack_max", "positive integer"),
        ({"conntrack_max": True}, "conntrack_max", "positive integer"),
        ({"conntrack_hashsize_ratio": 16}, "conntrack_hashsize_ratio", "chain"),
        ({"conntrack_hashsize_ratio": 0.5}, "conntrack_hashsize_ratio", "outside 1..4"),
        ({"conntrack_max_memory_percent": 0}, "conntrack_max_memory_percent", "outside"),
        ({"cake_bandwidth": "0"}, "cake_bandwidth", "above zero"),
        ({"cake_bandwidth": "-5mbit"}, "cake_bandwidth", "not a rate"),
        ({"cake_bandwidth": "1.5.0gbit"}, "cake_bandwidth", "not a rate"),
        ({"cake_bandwidth": "fast"}, "cake_bandwidth", "not a rate"),
        ({"cake_bandwidth": "10tbit"}, "cake_bandwidth", "not a real link"),
        ({"cake_diffserv": "diffserv5"}, "cake_diffserv", "unknown mode"),
        ({"cake_interface": "eth0; reboot"}, "cake_interface", "not an interface name"),
        (
            {"cake_interface": "a-very-long-interface-name"},
            "cake_interface",
            "not an interface name",
        ),
        ({"cake": "yes"}, "cake", "true or false"),
        ({"firewalld_restart": "sometimes"}, "firewalld_restart", "not one of"),
        ({"conntrack_timout_profile": "server"}, "conntrack_timout_profile", "unknown setting"),
        ({"conntune_state": "gone"}, "conntune_state", "not one of"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(data, setting, words):
    errors = refused(data)
    assert setting in errors, errors
    assert words in errors[setting]


def test_every_error_is_reported_at_once():
    errors = refused({"cake_bandwidth": "fast", "conntrack_max": -1, "cake_diffserv": "x"})
    assert set(errors) == {"cake_bandwidth", "conntrack_max", "cake_diffserv"}
