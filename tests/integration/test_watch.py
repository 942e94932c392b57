"""`conntune watch` against the Docker fleet: one kept-open SSH connection per host, a host that
stops answering goes stale while the others go on, Ctrl-C closes every connection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.docker


def logins(fleet, name: str) -> int:
    text = fleet.ssh(name, "journalctl -u ssh --no-pager -q | grep -c 'Accepted publickey'",
                     check=False).stdout  # fmt: skip
    return int(text.strip() or 0)


def watch(fleet, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conntune.cli", "watch", str(fleet.inventory), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip


def test_once_json_matches_the_hosts(fleet):
    result = subprocess.run(
        [sys.executable, "-m", "conntune.cli", "watch", str(fleet.inventory), "--once",
         "--json", "--interval", "1"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    hosts = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
    assert set(hosts) == {"host1", "host2", "host3"}
    for name, view in hosts.items():
        live_max = int(fleet.ssh(name, "cat /proc/sys/net/netfilter/nf_conntrack_max").stdout)
        assert view["max"] == live_max and not view["stale"]
        assert 0.9 <= view["interval_s"] <= 3
        assert view["per_second"]["drop"] == 0
        assert view["qdisc_kind"] == "noqueue"  # a veth in a container


def test_samples_share_one_login_and_ctrl_c_closes_them(fleet):
    before = {name: logins(fleet, name) for name in ("host1", "host2")}
    process = watch(fleet, "--interval", "0.5", "--limit", "host1", "--limit", "host2")
    time.sleep(6)  # about ten samples
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.count("host1: conntrack") >= 5
    assert "\x1b" not in out  # no terminal: plain lines, never escape codes
    for name in ("host1", "host2"):
        # +1 for the watch's one login for all its samples, +1 for this count's own session
        assert logins(fleet, name) - before[name] == 2
    time.sleep(1)
    sessions = fleet.ssh("host1", "ps -C sshd -o args= | grep -c '@notty'", check=False)
    assert sessions.stdout.strip() == "1"  # this very check's own session, the watch's is gone


def test_a_host_that_stops_answering_goes_stale_the_others_go_on(fleet):
    process = watch(fleet, "--interval", "1")
    try:
        time.sleep(3)
        fleet.compose("pause", "host3")
        time.sleep(8)
    finally:
        fleet.compose("unpause", "host3")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    blocks = out.split("\n\n")
    stale = [i for i, block in enumerate(blocks) if "host3: STALE" in block]
    assert stale, out
    assert "host1: conntrack" in blocks[stale[0]]  # the others in the same refresh
