"""
The README's first command, for real: `pyinfra @local deploy.py --dry --diff` on this machine,
as root and as an unprivileged user. It must print the plan and every change, and change nothing.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USER = "conntune-unpriv"


def live_state() -> str:
    netfilter = Path("/proc/sys/net/netfilter")
    values = [
        f"{p.name}={p.read_text().strip()}"
        for p in sorted(netfilter.glob("nf_conntrack_*"))
        if p.name != "nf_conntrack_count"
    ]
    owned = [
        p
        for p in (
            "/etc/sysctl.d/90-conntune.conf",
            "/etc/modprobe.d/conntune.conf",
            "/var/lib/conntune",
        )
        if os.path.exists(p)
    ]
    # the egress NIC only: other tests' containers come and go with their veths meanwhile
    route = subprocess.run(["ip", "-o", "route", "show", "default"], capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    dev = route[route.index("dev") + 1] if "dev" in route else "lo"
    qdisc = subprocess.run(
        ["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True
    ).stdout
    return "\n".join([*values, *owned, qdisc])


def dry_run(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", "@local", "deploy.py", "--dry", "--diff", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"},
    )


pytestmark = pytest.mark.skipif(
    not Path("/proc/sys/net/netfilter/nf_conntrack_max").exists(), reason="no conntrack here"
)


def test_local_dry_run_as_root_changes_nothing():
    before = live_state()
    result = dry_run()
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "conntune: nf_conntrack_max" in text  # the plan explains its numbers
    assert "→" in text or "already" in text
    assert live_state() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the unprivileged user")
def test_local_dry_run_unprivileged_says_what_it_could_not_read():
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", USER], check=True
        )
    before = live_state()
    # pyinfra runs the host reading through `su USER`: the controller stays root, the host
    # reading is unprivileged, as on a laptop without sudo
    result = dry_run("--su-user", USER)
    text = result.stdout + result.stderr
    # the real run would fail without root: so does the dry run, after showing everything
    assert result.returncode == 1, text
    assert "a real run needs root" in text
    assert "could not read: /sys/module/nf_conntrack/parameters/hashsize" in text
    assert "could not read: nf_conntrack slab object size" in text
    assert "nf_conntrack_max" in text and "→" in text
    assert live_state() == before
