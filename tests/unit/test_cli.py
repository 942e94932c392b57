import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conntune.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_plan_json_for_the_blog_host():
    result = invoke("plan", "--mem", "65786680000", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["conntrack_max"] == 2097152
    assert plan["buckets"] == 2097152
    assert plan["memory_worst_case_bytes"] == 2097152 * (320 + 128) + 2097152 * 8
    assert plan["timeouts"]["net.netfilter.nf_conntrack_tcp_timeout_established"] == 86400
    assert plan["cake"] is None  # no link speed given: CAKE not planned, and it says why
    assert any("link speed of eth0 is unknown" in w for w in plan["warnings"])


def test_plan_json_with_link_speed_and_ratio():
    result = invoke(
        "plan", "--mem", "65786680000", "--hashsize-ratio", "4", "--link-speed", "1000", "--json"
    )
    plan = json.loads(result.output)
    assert plan["buckets"] == 524288
    expected = {
        "interface": "eth0",
        "kind": "cake",
        "bandwidth_mbit": 1000.0,
        "bandwidth_bit": 10**9,
        "diffserv": "besteffort",
    }
    assert {key: plan["cake"][key] for key in expected} == expected
    assert plan["cake"]["overhead"] == "raw" and plan["cake"]["rtt"] == "internet"


def test_plan_refuses_ratio_16_with_the_reason():
    result = invoke("plan", "--mem", "65786680000", "--hashsize-ratio", "16")
    assert result.exit_code == 2
    assert "conntrack_hashsize_ratio" in result.output and "chain" in result.output


def test_plan_text_explains():
    result = invoke(
        "plan",
        "--mem",
        "64GiB",
        "--link-speed",
        "1000",
        "--profile",
        "routeros",
        "--bandwidth",
        "1024mbit",
    )
    assert result.exit_code == 0, result.output
    assert "nf_conntrack_tcp_timeout_syn_sent" in result.output
    assert "above the link speed" in result.output
    assert "why:" in result.output


def test_plan_reads_this_machine():
    result = invoke("plan", "--json", "--no-cake")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["conntrack_max"] >= 1024


@pytest.mark.parametrize("mem", ["lots", "0", "-1G"])
def test_plan_bad_mem(mem):
    result = invoke("plan", "--mem", mem)
    assert result.exit_code == 2
    assert "--mem" in result.output


def test_profiles():
    result = invoke("profiles", "--json")
    data = json.loads(result.output)
    assert data["routeros"]["net.netfilter.nf_conntrack_tcp_timeout_syn_sent"] == 5
    assert data["server"]["net.netfilter.nf_conntrack_tcp_timeout_syn_sent"] == 120


def conntune(*args: str) -> subprocess.CompletedProcess:
    """A fresh process, as an operator runs it (pyinfra keeps state across in-process runs)."""
    return subprocess.run(
        [sys.executable, "-m", "conntune.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["audit", "reconcile", "revert", "reading", "watch"])
def test_an_inventory_that_selects_no_host_is_an_error(command, tmp_path):
    missing = str(tmp_path / "invetnory.py")
    result = conntune(command, missing)
    assert result.returncode == 2, result.stderr
    assert f"{missing}: no such inventory file" in result.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("hosts = ['@local']\n")
    result = conntune(command, str(empty), "--limit", "web*")
    assert result.returncode == 2, result.stderr
    assert "--limit web* matches no host or group" in result.stderr


def test_schedule_refuses_a_missing_inventory(tmp_path):
    result = invoke("schedule", str(tmp_path / "nope.py"), "--every", "1h", "--dry-run")
    assert result.exit_code == 2 and "no such inventory file" in result.output, result.output


def test_a_broken_inventory_and_an_unwritable_output_are_errors_not_tracebacks(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("hosts = [\n")
    result = conntune("audit", str(broken))
    assert result.returncode == 2 and "could not be loaded" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    local = tmp_path / "local.py"
    local.write_text("hosts = ['@local']\n")
    result = conntune("reading", str(local), "-o", "/proc/conntune-nope")
    assert result.returncode == 2 and "/proc/conntune-nope" in result.stderr, result.stderr
