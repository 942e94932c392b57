"""Smoke tests of the Docker test fleet itself: real SSH, strict host keys, real pyinfra.

If these fail, every other integration test is meaningless: fix the environment first
(scripts/test-env.sh, tests/docker/).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.docker


def test_pyinfra_exec_on_all_hosts_with_strict_host_keys(fleet: Any) -> None:
    inv = fleet.inventory.read_text()
    assert "'ssh_strict_host_key_checking': 'yes'" in inv
    assert f"'ssh_known_hosts_file': '{fleet.known_hosts}'" in inv

    res = fleet.pyinfra("exec", "--", "uname", "-r")

    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    for name in fleet.names:
        assert f"[{name}] Connected" in out, out
        # containers share the machine's kernel
        assert f"[{name}] {kernel}" in out, out
    assert "host key" not in out.lower(), out


def test_hosts_have_expected_identity(fleet: Any) -> None:
    for name in fleet.names:
        res = fleet.ssh(name, "hostname; id -un; . /etc/os-release; echo $VERSION_CODENAME")
        assert res.stdout.split() == [fleet.hostnames[name], "root", "bookworm"]


def test_firewalld_state_per_host(fleet: Any) -> None:
    for name in fleet.names:
        active = fleet.ssh(name, "systemctl is-active firewalld.service", check=False)
        enabled = fleet.ssh(name, "systemctl is-enabled firewalld.service", check=False)
        if fleet.firewalld_active[name]:
            assert active.stdout.strip() == "active", (name, active)
            assert enabled.stdout.strip() == "enabled", (name, enabled)
            assert fleet.ssh(name, "firewall-cmd --state").stdout.strip() == "running"
        else:
            assert active.stdout.strip() == "inactive", (name, active)
            assert enabled.stdout.strip() == "disabled", (name, enabled)


def test_users_ops_sudo_and_nosudo(fleet: Any) -> None:
    ops = fleet.ssh("host1", "sudo -n id -un", user="ops")
    assert ops.stdout.strip() == "root"
    nosudo = fleet.ssh("host1", "sudo -n true", user="nosudo", check=False)
    assert nosudo.returncode != 0
    assert "password is required" in nosudo.stderr


def test_conntrack_knobs_in_container(fleet: Any) -> None:
    key = "net.netfilter.nf_conntrack_tcp_timeout_established"
    old = fleet.ssh("host1", f"sysctl -n {key}").stdout.strip()
    try:
        res = fleet.ssh("host1", f"sysctl -w {key}=600")
        assert res.stdout.strip() == f"{key} = 600"
        assert fleet.ssh("host1", f"sysctl -n {key}").stdout.strip() == "600"
    finally:
        fleet.ssh("host1", f"sysctl -w {key}={old}")
    # sizing knobs are read-only in a (non-initial) network namespace: VM territory
    mode = fleet.ssh("host1", "stat -c %a /proc/sys/net/netfilter/nf_conntrack_max")
    assert mode.stdout.strip() == "444"


def test_wrong_host_key_is_refused(fleet: Any) -> None:
    # a known_hosts that pins a different ed25519 key for every port
    wrong_pub = (fleet.keys_dir / "id_ed25519.pub").read_text().split()[:2]
    bad_known_hosts = fleet.workdir / "known_hosts.wrong"
    bad_known_hosts.write_text(
        "".join(f"[127.0.0.1]:{port} {' '.join(wrong_pub)}\n" for port in fleet.hosts.values())
    )
    inv = fleet.write_inventory(
        fleet.workdir / "inventory_wrong_key.py", known_hosts=bad_known_hosts
    )

    res = fleet.pyinfra("exec", "--", "echo", "SHOULD-NOT-RUN", inventory=inv, timeout=120)

    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "SHOULD-NOT-RUN" not in res.stdout.replace("echo SHOULD-NOT-RUN", ""), out
    for name in fleet.names:
        assert f"[{name}] Connected" not in out, out
    assert "host key" in out.lower(), out

    # and plain ssh with the same strictness agrees
    ssh = subprocess.run(
        fleet.ssh_argv("host1", "echo SHOULD-NOT-RUN", known_hosts=bad_known_hosts),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ssh.returncode == 255, ssh
    assert "SHOULD-NOT-RUN" not in ssh.stdout
    assert "Host key verification failed" in ssh.stderr, ssh.stderr


def test_unknown_host_is_refused(fleet: Any) -> None:
    empty = fleet.workdir / "known_hosts.empty"
    empty.write_text("")
    inv = fleet.write_inventory(
        fleet.workdir / "inventory_unknown.py", known_hosts=empty, hosts=["host2"]
    )
    res = fleet.pyinfra("exec", "--", "true", inventory=inv, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "No host key for" in out, out
    assert empty.read_text() == ""  # strict: nothing was learned
