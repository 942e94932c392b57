"""The one-command host reading: run for real on this machine, and fed odd output."""

import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from conntune import paths
from conntune.facts import reading
from conntune.facts.reading import CUT_SHORT, host_facts, script, split_sections
from conntune.hostfacts import MAX_KEY


def run_script(*prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, "sh", "-c", script()], capture_output=True, text=True, timeout=60
    )


def test_script_reads_this_machine():
    result = run_script()
    assert result.returncode == 0, result.stderr
    facts = host_facts(result.stdout)
    assert facts.mem_bytes == psutil.virtual_memory().total
    assert facts.cpus == len(os.sched_getaffinity(0))
    assert facts.kernel == os.uname().release
    if os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max"):
        with open("/proc/sys/net/netfilter/nf_conntrack_max") as live:
            assert facts.conntrack_max == int(live.read())
        assert facts.conntrack_loaded
        assert "entries" in facts.stats.counters
    assert set(facts.owned_files) == set(paths.OWNED_FILES)
    assert CUT_SHORT not in facts.unreadable


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to drop it"
)
def test_script_unprivileged_says_what_it_could_not_read():
    result = run_script("runuser", "-u", "nobody", "--")
    assert result.returncode == 0, result.stderr
    facts = host_facts(result.stdout)
    assert facts.uid != 0
    assert facts.mem_bytes == psutil.virtual_memory().total
    if os.path.exists("/sys/module/nf_conntrack/parameters/hashsize"):
        assert facts.hashsize is None
        assert any("hashsize" in what for what in facts.unreadable)
        assert facts.buckets == facts.sysctls["net.netfilter.nf_conntrack_buckets"]


@pytest.mark.parametrize(
    "output",
    [
        "",
        "garbage\n",
        "@@conntune:meminfo\nMemTotal: lots\n",
        "@@conntune:qdisc\n[{broken",
        "@@conntune:uid\n0\n@@conntune:file /etc/x\n",
    ],
)
def test_odd_output_never_crashes(output):
    facts = host_facts(output)
    assert facts.mem_bytes is None
    assert CUT_SHORT in facts.unreadable


def test_file_sections_keep_content_exactly():
    output = (
        "\n@@conntune:file /etc/a\nline 1\n\nline 3\n\n@@conntune:nofile /etc/b\n\n@@conntune:end\n"
    )
    sections = split_sections(output)
    assert sections["file /etc/a"] == "line 1\n\nline 3\n"
    facts = host_facts(output)
    assert facts.owned_files["/etc/a"] == "line 1\n\nline 3\n"
    assert facts.owned_files["/etc/b"] is None


CAPTURED = Path(__file__).parent.parent / "fixtures" / "captured"


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        (
            "debian12-6.1",
            {
                "kernel": "6.1.0-50-amd64",
                "mem_bytes": 1005281280,
                "speed": 1000,
                "conntrack_max": 7680,
                "hashsize": 7680,
                "sizing_writable": True,
                "cake": True,
                "firewalld": "1.3.3-1~deb12u2",
                "qdisc": "fq_codel",
            },
        ),
        (
            "debian13-6.12",
            {
                "kernel": "6.12.117+deb13-amd64",
                "mem_bytes": 1539182592,
                "speed": None,
                "conntrack_max": 65536,
                "hashsize": 65536,
                "sizing_writable": True,
                "cake": True,
                "firewalld": "2.3.1-1+deb13u1",
                "qdisc": "fq_codel",
            },
        ),
        (
            "container-6.18",  # a systemd container: another network namespace, no sch_cake
            {
                "kernel": "6.18.44-fc-v657",
                "mem_bytes": 25276510208,
                "speed": 10000,  # a veth reports 10000
                "conntrack_max": 262144,
                "hashsize": 262144,
                "sizing_writable": False,
                "cake": False,
                "firewalld": "1.3.3-1~deb12u2",
                "qdisc": "noqueue",
            },
        ),
    ],
)
def test_real_host_readings(release, expected):
    """The whole one-command reading, captured with `ssh HOST sh -s < reading.sh` on real hosts."""
    facts = host_facts((CAPTURED / release / "conntune_host_state.txt").read_text())
    assert facts.kernel == expected["kernel"]
    assert facts.mem_bytes == expected["mem_bytes"]
    assert facts.default_iface == "eth0"
    assert facts.link_speed_mbit("eth0") == expected["speed"]
    assert facts.conntrack_loaded
    assert facts.conntrack_max == expected["conntrack_max"]
    assert facts.hashsize == expected["hashsize"]
    assert facts.knob_writable(MAX_KEY) is expected["sizing_writable"]
    assert facts.cake_available is expected["cake"]
    assert facts.firewalld.active and facts.firewalld.version_text == expected["firewalld"]
    assert facts.firewalld.cleanup_modules_on_exit is False
    assert facts.root_qdisc("eth0").kind == expected["qdisc"]
    assert facts.tools.tc == "/usr/sbin/tc"
    assert facts.slab_objsize == 256
    assert "drop" in facts.stats.counters and "entries" in facts.stats.counters
    assert facts.unreadable == []
    assert all(content is None for content in facts.owned_files.values())


def test_host_side_table_full_filter_agrees_with_the_parser():
    """The shell filter the reading and the watch run on the host counts what the parser counts,
    on every public and captured kernel log (expectation-table lines included)."""
    from conntune.facts.parse import table_full_events
    from conntune.facts.reading import script_functions

    # the script's own function, with dmesg replaced by the log on stdin
    host_filter = "dmesg() { cat; }\n" + script_functions("table_full_lines") + "table_full_lines"
    logs = sorted((CAPTURED.parent / "public" / "table_full").glob("*.txt"))
    logs += sorted(CAPTURED.glob("*/*table_full*.txt"))
    assert len(logs) >= 20
    for log in logs:
        text = log.read_text()
        kept = subprocess.run(["sh", "-c", host_filter], input=text, capture_output=True,
                              text=True).stdout  # fmt: skip
        assert len(kept.splitlines()) == table_full_events(text), log.name


def test_reading_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (Debian package shellcheck; scripts/test.sh)")
    path = Path(reading.__file__).with_name("reading.sh")
    run = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("shell", [["dash"], ["busybox", "sh"]])
def test_reading_runs_under_dash_and_busybox_alike(shell):
    """The same host read by dash and by busybox sh gives the same facts as sh."""
    if shutil.which(shell[0]) is None:
        pytest.fail(f"{shell[0]} is not installed (scripts/test.sh installs it)")
    reference = host_facts(run_script().stdout)
    run = subprocess.run([*shell, "-c", script()], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    facts = host_facts(run.stdout)
    assert facts.complete and facts.format == reading.FORMAT
    for field in ("kernel", "mem_bytes", "cpus", "routes", "interfaces", "tools", "mounts",
                  "sysctl_modes", "firewalld", "owned_files", "cake_available", "uid",
                  "modprobe_lines", "sysctl_lines"):  # fmt: skip
        assert getattr(facts, field) == getattr(reference, field), field
    assert set(facts.sysctls) == set(reference.sysctls)
