"""
Mixed fleets, replayed: one whole reading per kind of host (tests/fixtures/readings, built by
make_readings.py from real captures and publicly reported hosts) through the commands an
operator runs, `conntune plan --reading` and `conntune audit --reading`, each with its right
answer. And the deploy decides the same as the plan on every one of them: a pyinfra dry run
against the @fake connector answering the reading command with the same reading prints the
same changes, warnings and refusals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conntune import paths
from conntune.policy import plan as plan_for
from conntune.readings import load_reading
from conntune.settings import settings_from_data

REPO = Path(__file__).resolve().parents[2]
READINGS = REPO / "tests" / "fixtures" / "readings"
MAX, BUCKETS = "net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets"
EST = "net.netfilter.nf_conntrack_tcp_timeout_established"

# reading -> what is right: plan fields (exact), words some warning must hold, the audit verdict
# and words its reason must hold, the settings used (default: none)
# the public insert-failed case's 199 counted since conntune's change (a reboot or a reload since)
ALL_199_SINCE_CHANGE = {"drop": 0, "insert_failed": 199, "early_drop": 0, "table_full_lines": 0}
EXPECTED: dict[str, dict] = {
    # --- kind 1: containers of every kind
    "containers-userns-container": {  # shared case userns-container
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 15, "cake": None},
        "files": {paths.SYSCTL_FILE},
        "not_files": {paths.MODPROBE_FILE, paths.MODULES_LOAD_FILE},
        "warns": ["nf_conntrack_max does not exist in this network namespace", "on the host"],
        "sysctl_file_lacks": [MAX, BUCKETS],
    },
    "containers-userns-6.18": {
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 15},
        "warns": ["read-only here (0444", "size it on the host"],
    },
    "containers-readonly-proc-sys": {  # shared case readonly-proc-sys
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 0, "cake": None},
        "not_files": {paths.SYSCTL_FILE, paths.MODPROBE_FILE, paths.ORIGINAL_FILE},
        "warns": ["/proc/sys is mounted read-only", "docker run --sysctl"],
        "changes": [],
        "verdict": "ok",
    },
    "containers-docker-unprivileged-6.18": {
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 0},
        "warns": ["/proc/sys is mounted read-only", "on the host"],
        "changes": [],
    },
    "containers-proc-mixed-6.18": {
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 15},
        "files": {paths.SYSCTL_FILE},
        "warns": ["read-only here (0444", "no systemd here", "docker run --sysctl"],
    },
    "containers-docker-privileged-6.18": {
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 15},
        "not_files": {paths.MODPROBE_FILE, paths.MODULES_LOAD_FILE},
    },
    # --- kind 2: every name the kernel accepts
    "names-modprobe-hashsize-spaces": {  # shared case modprobe-hashsize-spaces
        "plan": {
            "conntrack_max": None,
            "buckets": 262144,
            "memory_worst_case_bytes": 262144 * (256 + 128) + 262144 * 8,
        },
        "not_files": {paths.MODPROBE_FILE},
        "warns": [
            "broken module option, /etc/modprobe.d/nf_conntrack_hashsize.conf:1",
            "fails to load",
            "/etc/sysctl.conf:1",
            "does not add a second one",
        ],
        "verdict": "at risk",
        "reason": ["module options break its next load", "nf_conntrack_hashsize.conf:1"],
    },
    "names-legacy-and-slashes": {
        "plan": {"conntrack_max": None, "buckets": 500224},
        "has_timeout": [EST],
        "not_files": {paths.MODPROBE_FILE},
        "warns": [
            "99-zz-tuning.conf:3",
            "legacy name this kernel no longer has",
            "50-vendor.conf:2",
        ],
    },
    "names-kernel-cmdline": {
        "plan": {"conntrack_max": 32768, "buckets": 32768},
        "not_files": {paths.MODPROBE_FILE},
        "warns": ["/proc/cmdline:1"],
    },
    # --- kind 3: drops the table-full counter does not show
    "drops-insert-failed-no-drop": {  # shared case insert-failed-no-drop
        "verdict": "dropping",
        "reason": ["insert_failed 199", "raced"],
        "audit": {"insert_failed": 199, "drop": 0, "early_drop": 0},
        "source": "conntrack -S",
    },
    "drops-chaintoolong-early-drop-5.15": {
        "verdict": "dropping",
        "reason": ["drop 5", "insert_failed 5"],
        "audit": {"early_drop": 1878045, "chaintoolong": 0},
    },
    "drops-recorded-at-change-same-boot": {  # all 199 were there at the change: none since
        "verdict": "drift",
        "audit": {
            "since_change": {"drop": 0, "insert_failed": 0, "early_drop": 0, "table_full_lines": 0}
        },
    },
    "drops-recorded-at-change-after-reboot": {  # the boot id changed: every count is newer
        "verdict": "dropping",
        "reason": ["199 packets dropped at insert since conntune's last change"],
        "audit": {"since_change": ALL_199_SINCE_CHANGE},
    },
    "drops-recorded-at-change-module-reloaded": {  # drop fell below its record: all newer
        "verdict": "dropping",
        "audit": {"since_change": ALL_199_SINCE_CHANGE},
    },
    "drops-early-drop-only": {
        "verdict": "at risk",
        "reason": ["early_drop 42"],
    },
    # --- kind 4: statistics that are not in procfs
    "stats-no-procfs-conntrack-tools": {
        "audit": {"drop": 0, "insert_failed": 0, "chaintoolong": 0},
        "source": "conntrack -S",
    },
    "stats-none": {
        "audit": {"drop": None, "insert_failed": None, "early_drop": None},
        "source": None,
        "reason": ["drop counters unknown", "conntrack"],
        "unreadable": ["conntrack statistics", "install conntrack-tools"],
    },
    # --- kind 5: tools, not only kernels
    "tools-iproute2-without-cake": {
        "plan": {"conntrack_max": 32768, "cake": None},
        "warns": ["CAKE skipped", "does not know cake", "iproute2 4.20"],
    },
    "tools-tc-without-json": {
        "plan": {"conntrack_max": 32768, "cake": None},
        "warns": ["CAKE skipped", "does not know cake"],  # before 4.13: no -j, no cake
        "unreadable": ["qdiscs (`tc -j qdisc show` answered"],
    },
    "tools-no-sysctl": {"refused": {"sysctl": "procps"}, "verdict": "refused"},
    # --- kind 6: the default route, whatever it is
    "routes-ipv6-only-router-advertisement": {"plan": {"cake": ("eth0", "cake", 10**9)}},
    "routes-dual-stack-two-uplinks": {
        "plan": {"cake": None, "conntrack_max": 32768},
        "warns": ["2 devices (eth0, eth1)", "set cake_interface"],
    },
    "routes-ecmp": {
        "plan": {"cake": None},
        "warns": ["2 devices (eth0, eth1)", "set cake_interface"],
    },
    "routes-two-uplinks-by-metric": {"plan": {"cake": ("eth0", "cake", 10**9)}},
    "routes-bond-2x10g": {
        "plan": {"cake": None, "conntrack_max": 32768},
        "warns": ["20gbit is above what one CAKE instance shapes", "cake_force_single_queue"],
    },
    "routes-vlan": {"plan": {"cake": ("eth0.100", "cake", 10**9)}},
    "routes-bridge-uplink": {
        "plan": {"cake": ("eno1", "cake", 10**9)},
        "warns": ["the bridge vmbr0: CAKE on its uplink port eno1"],
    },
    "routes-bridge-over-bond": {"plan": {"cake": ("bond0", "cake", 2 * 10**9)}},
    "routes-bridge-two-nics": {
        "plan": {"cake": None, "conntrack_max": 32768, "timeouts": 15},
        "warns": ["the bridge br0, which has 2 (eno1, eno2)", "set cake_interface"],
    },
    "routes-none": {
        "plan": {"cake": None, "conntrack_max": 32768, "timeouts": 15},
        "warns": ["no default route", "set cake_interface"],
    },
    # --- kind 7: a CAKE problem never blocks the conntrack part
    "cake-virtio-unknown-speed": {  # shared case virtio-unknown-speed
        "plan": {"cake": None, "conntrack_max": 32768, "buckets": 32768, "timeouts": 15},
        "warns": ["CAKE skipped", "set cake_bandwidth"],
        "verdict": "drift",
    },
    "cake-no-tc": {
        "plan": {"cake": None, "conntrack_max": 32768},
        "warns": ["tc is not installed: install iproute2"],
    },
    # --- kind 8: links faster than one CAKE instance
    "fast-nic-100g": {  # shared case nic-100g
        "plan": {"cake": None, "conntrack_max": 2097152},
        "warns": ["100gbit is above what one CAKE instance shapes", "no cake_mq"],
    },
    "fast-nic-100g-single-cake-present": {
        "plan": {"cake": None, "conntrack_max": 2097152},
        "warns": ["eth0 already has one CAKE instance as its root qdisc (cake 100gbit"],
        "verdict": "at risk",
        "reason": ["one CAKE instance shapes eth0 at 100gbit", "tc qdisc del dev eth0 root"],
    },
    "fast-nic-25g-cake-mq": {"plan": {"cake": ("eth0", "cake_mq", 25 * 10**9)}},
    # --- kind 9: firewalld that unloads nf_conntrack on restart
    "firewalld-restart-unloads-conntrack": {  # shared case firewalld-restart-unloads-conntrack
        "plan": {"firewalld_restart_flushes": False},
        "blocked": ["0.6.3", "unloads nf_conntrack", "files act at boot"],
    },
    "firewalld-1.3-cleanup-modules-yes": {
        "plan": {"firewalld_restart_flushes": False},
        "blocked": ["CleanupModulesOnExit=yes", "flushed"],
    },
    # --- unseen samples of the kinds above (a fresh reviewer's variants, 2026-11-30)
    "containers-docker-host-network-6.18": {  # the host's table, but no CAP_NET_ADMIN
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 0, "cake": None},
        "warns": ["/proc/sys is mounted read-only", "no CAP_NET_ADMIN, which tc needs"],
        "changes": [],
        "verdict": "ok",
    },
    "containers-docker-net-admin-6.18": {
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 0},
        "warns": ["/proc/sys is mounted read-only"],
        "changes": [],
    },
    "containers-userns-conntrack-not-loaded": {
        "refused": {"nf_conntrack": "this is a user namespace (uid_map 0 0 1)"},
        "verdict": "refused",
    },
    "containers-userns-root-mapped-host-network-6.18": {  # uid 0 is the global root still
        "plan": {"conntrack_max": 1048576, "buckets": 1048576, "cake": None},
        "warns": ["tc cannot set a qdisc here"],
    },
    "containers-rootless-host-network-6.18": {
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 0, "cake": None},
        "warns": ["a user namespace in the host's network namespace", "only the host's root"],
        "changes": [],
    },
    "containers-docker-privileged-4.15": {  # max 0644 there, but it is the host's table
        "plan": {"conntrack_max": None, "buckets": None, "timeouts": 15, "load_conntrack": False},
        "not_files": {paths.MODPROBE_FILE, paths.MODULES_LOAD_FILE},
        "warns": ["a network namespace other than the host's", "2671fa4dc010"],
        "sysctl_file_lacks": [MAX, BUCKETS],
    },
    "firewalld-1.3-cleanup-on-exit-no-modules-yes": {
        "plan": {"firewalld_restart_flushes": False},
        "blocked": ["CleanupModulesOnExit=yes", "flushed"],
    },
    "cake-tun-default-route": {
        "plan": {"cake": None, "conntrack_max": 32768},
        "warns": ["tun0 is a tun device on no NIC", "driver's fixed answer", "set cake_bandwidth"],
    },
    "names-modprobe-install-hashsize": {
        "plan": {"buckets": 32768},
        "not_files": {paths.MODPROBE_FILE},
        "warns": ["does not add a second one", "firewalld-sysctls.conf:1: install nf_conntrack"],
    },
    "names-modprobe-install-cmdline-opts": {
        "plan": {"buckets": 32768},
        "not_files": {paths.MODPROBE_FILE},
        "files": {paths.SYSCTL_FILE},
        "warns": ["passes $CMDLINE_OPTS to a second modprobe", "add hashsize=32768 to that"],
    },
    "names-modprobe-hex-hashsize": {  # kstrtouint reads 0x40000: nothing broken
        "not_files": {paths.MODPROBE_FILE},
        "warns": ["does not add a second one"],
        "verdict": "drift",
    },
    "names-modprobe-two-files-two-hash-sizes": {
        "not_files": {paths.MODPROBE_FILE},
        "warns": ["hash size is set in more than one place", "b.conf:3"],
        "verdict": "at risk",
        "reason": ["the hash size is set by /etc/modprobe.d/a.conf:1"],
    },
    "names-modprobe-hashsize-too-large": {
        "warns": ["more buckets than the kernel allocates", "ENOMEM"],
        "verdict": "at risk",
    },
    "names-modprobe-install-and-options": {
        "not_files": {paths.MODPROBE_FILE},
        "warns": ["hash size is set in more than one place", "passes $CMDLINE_OPTS"],
        "verdict": "at risk",
        "reason": [
            "passes $CMDLINE_OPTS to a second modprobe that reads "
            "/etc/modprobe.d/nf_conntrack.conf:1",
            "reaches the kernel twice",
        ],
    },
    "names-modprobe-hashsize-twice": {
        "warns": ["'hashsize' is given twice", "2045cdfa1b40"],
        "verdict": "at risk",
        "reason": ["the hash size is given twice"],
    },
}
# the same hosts with other settings: (reading, settings, expected)
WITH_SETTINGS = [
    ("cake-virtio-unknown-speed", {"cake_bandwidth": "950mbit"},
     {"plan": {"cake": ("eth0", "cake", 950 * 10**6)}}),
    ("routes-bond-2x10g", {"cake_force_single_queue": True},
     {"plan": {"cake": ("bond0", "cake", 20 * 10**9)}, "warns": ["CPU-bound"]}),
    ("routes-dual-stack-two-uplinks", {"cake_interface": "eth1"},
     {"plan": {"cake": ("eth1", "cake", 10**9)}}),
    ("firewalld-restart-unloads-conntrack", {"firewalld_restart": "always"},
     {"plan": {"firewalld_restart_flushes": True, "firewalld_restart_blocked": None},
      "warns": ["every tracked connection is flushed", "sets the live values again"]}),
    ("names-modprobe-hashsize-spaces", {"conntune_override_conflicts": True},
     {"plan": {"conntrack_max": 2097152, "buckets": 2097152}}),
    ("routes-vlan", {"cake_bandwidth": "90%"}, {"plan": {"cake": ("eth0.100", "cake", 9 * 10**8)}}),
]  # fmt: skip


def conntune(*args: str) -> tuple[int, dict]:
    run = subprocess.run([sys.executable, "-m", "conntune.cli", *args], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    return run.returncode, json.loads(run.stdout)


def data_args(settings: dict) -> list[str]:
    return [f"--data={key}={json.dumps(value)}" for key, value in settings.items()]


def test_every_fixture_reading_has_its_expectation():
    assert {path.stem for path in READINGS.glob("*.reading")} == set(EXPECTED)


def check(name: str, settings: dict, expected: dict) -> None:
    reading = str(READINGS / f"{name}.reading")
    status, plan = conntune("plan", "--reading", reading, "--json", *data_args(settings))
    if "refused" in expected:
        assert status == 2, plan
        refused = {item["setting"]: item["message"] for item in plan["refused"]}
        for setting, words in expected["refused"].items():
            assert words in refused[setting], refused
    else:
        assert status == 0, plan
        for key, value in expected.get("plan", {}).items():
            if key == "timeouts":
                assert len(plan["timeouts"]) == value, plan["timeouts"]
            elif key == "cake" and value is not None:
                cake = plan["cake"]
                assert (cake["interface"], cake["kind"], cake["bandwidth_bit"]) == value, cake
            else:
                assert plan[key] == value, (key, plan[key], plan["warnings"])
        warnings = " | ".join(plan["warnings"] + plan["reasons"])
        for words in expected.get("warns", []):
            assert words in warnings, (words, plan["warnings"])
        assert expected.get("files", set()) <= set(plan["files"]), plan["files"]
        assert not expected.get("not_files", set()) & set(plan["files"]), plan["files"]
        for key in expected.get("has_timeout", []):
            assert key in plan["timeouts"]
        for words in expected.get("blocked", []):
            assert words in (plan["firewalld_restart_blocked"] or ""), plan
        if "changes" in expected:
            assert plan["changes"] == expected["changes"]
        for words in expected.get("unreadable", []):
            assert any(words in what for what in plan["host"]["unreadable"])
        if "sysctl_file_lacks" in expected:
            desired = plan_for(load_reading(reading), settings_from_data(settings))
            for key in expected["sysctl_file_lacks"]:
                assert key not in desired.files[paths.SYSCTL_FILE], key
    status, audit = conntune("audit", "--reading", reading, "--json", *data_args(settings))
    assert status == 0
    (row,) = audit["hosts"]
    if "verdict" in expected:
        assert row["verdict"] == expected["verdict"], row["reason"]
    for words in expected.get("reason", []):
        assert words in row["reason"], row["reason"]
    for key, value in expected.get("audit", {}).items():
        assert row[key] == value, (key, row[key])
    if "source" in expected:
        source = expected["source"]
        assert row["sources"]["drop"] == source if source else "unknown" in row["sources"]["drop"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_replayed_reading_gives_the_right_answer(name):
    check(name, {}, EXPECTED[name])


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [pytest.param(n, s, e, id=f"{n}-{'-'.join(s)}") for n, s, e in WITH_SETTINGS],
)
def test_replayed_reading_with_settings(name, settings, expected):
    check(name, settings, expected)


def fake_inventory(tmp_path: Path, reading: str, data: dict | None = None) -> Path:
    """One ``@fake/host`` answering the reading command with ``reading``, with host ``data``."""
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"reading = {reading!r}\n"
        "# the reading script is the only command a dry run sends\n"
        "hosts = [('@fake/host', {'fake_responses': {'section format': reading},"
        f" 'fake_delay': 0, **{data or {}!r}}})]\n"
    )
    return inventory


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_plan_and_deploy_agree(name, tmp_path):
    """The deploy's dry run prints exactly the plan's changes, warnings and refusals."""
    _, plan = conntune("plan", "--reading", str(READINGS / f"{name}.reading"), "--json")
    run = subprocess.run(
        [sys.executable, "-m", "pyinfra",
         str(fake_inventory(tmp_path, (READINGS / f"{name}.reading").read_text())), "deploy.py",
         "--dry", "--diff"],
        cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1", "COLUMNS": "250"},
    )  # fmt: skip
    text = run.stdout + run.stderr
    prefix = "[@fake/host] "
    lines = [line.split(prefix, 1)[1] for line in text.splitlines() if prefix in line]
    if "refused" in plan:
        assert run.returncode == 1, text  # a dry run is a gate
        for item in plan["refused"]:
            assert f"conntune: {item['setting']}: {item['message']}" in lines, text
        return
    assert run.returncode == 0, text
    warned = [line.removeprefix("conntune: ") for line in lines if line.startswith("conntune: ")]
    assert set(plan["warnings"]) <= set(warned), text
    shown = [line.strip() for line in lines if "→" in line]
    expected = [c for c in plan["changes"] if "→" in c]
    assert sorted(shown) == sorted(expected), text
    for change in plan["changes"]:  # files: created / modified / removed, each named
        if change.endswith((": create", ": modify", ": remove")):
            path, verb = change.rsplit(": ", 1)
            assert f"{verb} {path}" in [line.strip() for line in lines], text


def test_a_reading_cut_short_is_refused_as_the_deploy_refuses_its_host(tmp_path):
    from conntune.facts.reading import ReadingError

    whole = (READINGS / "routes-bridge-uplink.reading").read_text()
    assert "@@conntune:end" in whole
    cut = tmp_path / "cut.reading"
    cut.write_text(whole.split("@@conntune:end")[0])
    with pytest.raises(ReadingError, match="cut short"):
        load_reading(cut)
    result = subprocess.run(
        [sys.executable, "-m", "conntune.cli", "plan", "--reading", str(cut)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "cut short" in result.stderr, result.stderr


CAPTURED = REPO / "tests" / "fixtures" / "captured"


def dry_run(tmp_path: Path, reading: str, data: dict, *flags: str) -> subprocess.CompletedProcess:
    inventory = fake_inventory(tmp_path, reading, data)
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", str(inventory), "deploy.py", "--dry", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1", "COLUMNS": "250"},
    )  # fmt: skip


@pytest.mark.parametrize("flags", [(), ("-y",)], ids=["dry", "dry-y"])
@pytest.mark.parametrize(
    ("case", "data", "words"),
    [
        ("refused", {"cake_bandwidth": "fast"}, "cake_bandwidth: 'fast' is not a rate"),
        ("not-root", {}, "a real run needs root"),
    ],
)
def test_a_dry_run_fails_where_the_real_run_would(tmp_path, flags, case, data, words):
    reading = (CAPTURED / "bookworm-6.1" / "reading.txt").read_text()
    if case == "not-root":
        reading = reading.replace("@@conntune:uid\n0\n", "@@conntune:uid\n1000\n", 1)
        assert "@@conntune:uid\n1000\n" in reading
    run = dry_run(tmp_path, reading, data, *flags)
    assert run.returncode == 1, run.stdout + run.stderr
    assert words in run.stdout + run.stderr


def test_the_dry_run_names_the_firewalld_restart_and_its_cause(tmp_path):
    reading = (CAPTURED / "bookworm-6.1" / "reading.txt").read_text()  # firewalld active
    run = dry_run(tmp_path, reading, {})
    assert f"Restart firewalld ({paths.MODPROBE_FILE} changes) and verify" in run.stderr


def test_only_the_module_options_file_restarts_firewalld_on_change():
    from conntune.deploys.tune import restart_cause
    from tests.factories import converged, make_facts

    facts = make_facts()  # firewalld 1.3.3 active
    first = plan_for(facts, settings_from_data({}))
    assert restart_cause(facts, first) == f"{paths.MODPROBE_FILE} changes"
    done = converged(facts, first)
    assert restart_cause(done, plan_for(done, settings_from_data({}))) is None
    # a timeout changes the sysctl file and the undo record: applied live, no restart
    timeout = plan_for(done, settings_from_data({"conntrack_timeouts": {"udp_timeout": 25}}))
    assert paths.SYSCTL_FILE in timeout.files and restart_cause(done, timeout) is None
    always = plan_for(done, settings_from_data({"firewalld_restart": "always"}))
    assert restart_cause(done, always) == "firewalld_restart: always"
    never = plan_for(facts, settings_from_data({"firewalld_restart": "never"}))
    assert restart_cause(facts, never) is None
