"""The one-command host reading: run for real on this machine, and fed odd output."""

import os
import shutil
import subprocess

import psutil
import pytest

from conntune import paths
from facts.host_state import SCRIPT, host_facts, split_sections


def run_script(*prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, "sh", "-c", SCRIPT], capture_output=True, text=True, timeout=60)


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
        assert "entries" in facts.stats
    assert set(facts.owned_files) == set(paths.OWNED_FILES)
    assert "host reading was cut short" not in facts.unreadable


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
        assert facts.buckets == facts.sysctl_int("net.netfilter.nf_conntrack_buckets")


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
    assert "host reading was cut short" in facts.unreadable


def test_file_sections_keep_content_exactly():
    output = (
        "\n@@conntune:file /etc/a\nline 1\n\nline 3\n\n@@conntune:nofile /etc/b\n\n@@conntune:end\n"
    )
    sections = split_sections(output)
    assert sections["file /etc/a"] == "line 1\n\nline 3\n"
    facts = host_facts(output)
    assert facts.owned_files == {"/etc/a": "line 1\n\nline 3\n", "/etc/b": None}
