"""
Safety against real hosts (systemd + sshd + firewalld containers, real SSH): refused input and
hosts, cut SSH sessions mid-apply, a failing firewalld restart, neighbours' files, Docker,
privileges, secrets, and the undo.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conntune import paths, profiles
from tests.integration.test_deploy import live, output, reset, snapshot

pytestmark = pytest.mark.docker

UDP = f"{profiles.P}udp_timeout"
TEMP = ".conntune-tmp"


@pytest.fixture
def host1(fleet):
    reset(fleet, "host1")
    yield fleet
    fleet.ssh(
        "host1",
        "rm -rf /etc/systemd/system/firewalld.service.d /etc/sysctl.d/99-other.conf "
        "/usr/local/bin/dockerd /etc/ssh/sshd_config.d/99-cut.conf /run/cut; "
        "mv /usr/sbin/sysctl.off /usr/sbin/sysctl 2>/dev/null; "
        "umount /etc 2>/dev/null; umount /var/lib 2>/dev/null; "
        "systemctl daemon-reload; systemctl reload ssh; systemctl restart firewalld",
        check=False,
    )
    reset(fleet, "host1")


def run(fleet, tmp_path, *args: str, **data):
    inventory = fleet.write_inventory(tmp_path / "inventory.py", hosts=["host1"], **data)
    return fleet.pyinfra("deploy.py", *args, inventory=inventory)


def test_shell_metacharacters_never_reach_a_shell(host1, tmp_path):
    fleet = host1
    before = snapshot(fleet, "host1")
    result = run(fleet, tmp_path, "-y", cake_interface="eth0;touch /tmp/pwned",
                 conntrack_timeouts={"udp_timeout;touch /tmp/pwned2": 1})  # fmt: skip
    text = output(result)
    assert result.returncode == 1, text
    assert "[host1] conntune: cake_interface: 'eth0;touch /tmp/pwned' is not an interface" in text
    assert "conntrack_timeouts.udp_timeout;touch /tmp/pwned2: unknown timeout" in text
    assert fleet.ssh("host1", "ls /tmp/pwned /tmp/pwned2", check=False).returncode != 0
    assert snapshot(fleet, "host1") == before


@pytest.mark.parametrize(
    ("breakage", "setting", "words"),
    [
        ("mv /usr/sbin/sysctl /usr/sbin/sysctl.off", "sysctl", "not installed"),
        ("mount --bind /etc /etc && mount -o remount,bind,ro /etc", "/etc", "read-only"),
        (
            "mount -t tmpfs -o size=64k tmpfs /var/lib && "
            "dd if=/dev/zero of=/var/lib/fill bs=4k 2>/dev/null; true",
            "/var/lib",
            "full",
        ),
    ],
    ids=["sysctl-missing", "etc-read-only", "disk-full"],
)
def test_broken_host_is_refused_before_any_change(host1, tmp_path, breakage, setting, words):
    fleet = host1
    fleet.ssh("host1", breakage)
    before = snapshot(fleet, "host1") if setting != "sysctl" else None
    result = run(fleet, tmp_path, "-y")
    text = output(result)
    assert result.returncode == 1, text
    assert f"[host1] conntune: {setting}: " in text and words in text
    if before is not None:
        assert snapshot(fleet, "host1") == before
    assert live(fleet, "host1", UDP) == 30  # unchanged


def test_non_root_without_sudo_is_refused_before_any_change(host1, tmp_path):
    fleet = host1
    before = snapshot(fleet, "host1")
    result = run(fleet, tmp_path, "-y", ssh_user="nosudo")
    text = output(result)
    assert result.returncode == 1, text
    assert "[host1] conntune: connected as uid" in text and "needs root" in text
    assert snapshot(fleet, "host1") == before


def test_sudo_user_converges_and_files_are_root_owned(host1, tmp_path):
    fleet = host1
    result = run(fleet, tmp_path, "-y", ssh_user="ops", _sudo=True)
    assert result.returncode == 0, output(result)
    listing = fleet.ssh("host1", f"stat -c '%a %U:%G' {paths.SYSCTL_FILE} {paths.ORIGINAL_FILE}")
    assert listing.stdout.split("\n")[:2] == ["644 root:root", "644 root:root"]
    assert live(fleet, "host1", UDP) == 10


def add_password_sudo_user(fleet, name: str) -> None:
    fleet.ssh(
        name,
        "id pwuser >/dev/null 2>&1 || useradd -m -s /bin/sh pwuser; "
        "echo 'pwuser:Right-Secret-4711' | chpasswd; "
        "echo 'pwuser ALL=(ALL) ALL' > /etc/sudoers.d/pwuser; "
        "install -d -o pwuser -m 700 /home/pwuser/.ssh; "
        "install -o pwuser -m 600 /root/.ssh/authorized_keys /home/pwuser/.ssh/",
    )


def password_sudo_inventory(fleet, tmp_path, extra: str = ""):
    """The fleet's inventory with host2 reached as pwuser, whose sudo wants a password."""
    add_password_sudo_user(fleet, "host2")
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    inventory.write_text(
        inventory.read_text().replace(
            "('host2', {**_common,",
            f"('host2', {{**_common, 'ssh_user': 'pwuser', '_sudo': True,{extra}",
        )
    )
    return inventory


def test_a_host_that_cannot_be_read_fails_alone(fleet, tmp_path):
    for name in ("host1", "host2", "host3"):
        reset(fleet, name)
    inventory = password_sudo_inventory(fleet, tmp_path, " '_sudo_password': 'Wrong-Secret-0815',")
    before = snapshot(fleet, "host2")
    result = fleet.pyinfra("deploy.py", "-y", inventory=inventory)
    text = output(result)
    assert result.returncode == 1, text
    assert live(fleet, "host1", UDP) == 10 and live(fleet, "host3", UDP) == 10
    assert snapshot(fleet, "host2") == before
    assert "Wrong-Secret-0815" not in text
    for name in ("host1", "host2", "host3"):
        reset(fleet, name)


def test_a_dry_run_with_a_host_whose_sudo_wants_a_password_fails_that_host_alone(fleet, tmp_path):
    # no terminal (a CI gate): pyinfra's password prompt has no one to ask
    inventory = password_sudo_inventory(fleet, tmp_path)
    result = fleet.pyinfra("deploy.py", "--dry", "--diff", inventory=inventory)
    text = output(result)
    assert result.returncode == 1, text
    assert "[host2] conntune: could not read the host: sudo asks for a password" in text
    assert "Traceback" not in text
    assert "[host1]   create" in text or "[host1]   modify" in text or "→" in text  # host1's diff


def test_a_fleet_job_never_prompts_for_a_sudo_password(fleet, tmp_path):
    # cron has no terminal: pyinfra's own prompt would die on EOF with an empty message
    inventory = password_sudo_inventory(fleet, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "conntune.cli", "audit", str(inventory), "--json"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["host"]: row for row in json.loads(result.stdout)["hosts"]}
    assert rows["host2"]["verdict"] == "unreachable"
    assert "sudo asks for a password" in rows["host2"]["reason"], rows["host2"]
    assert rows["host1"]["verdict"] != "unreachable" and rows["host3"]["verdict"] != "unreachable"


def test_wrong_sudo_password_fails_and_no_secret_is_printed(host1, tmp_path):
    fleet = host1
    add_password_sudo_user(fleet, "host1")
    before = snapshot(fleet, "host1")
    wrong = run(fleet, tmp_path, "-y", "-vv", ssh_user="pwuser", _sudo=True,
                _sudo_password="Wrong-Secret-0815")  # fmt: skip
    assert wrong.returncode == 1
    assert snapshot(fleet, "host1") == before
    # -vvv prints every command and its output; (pyinfra's own --debug log prints the
    # deploy's global arguments, _sudo_password included: the README warns about it)
    right = run(fleet, tmp_path, "-y", "-vvv", ssh_user="pwuser", _sudo=True,
                _sudo_password="Right-Secret-4711")  # fmt: skip
    assert right.returncode == 0, output(right)
    assert live(fleet, "host1", UDP) == 10
    for result in (wrong, right):
        assert "Wrong-Secret-0815" not in output(result)
        assert "Right-Secret-4711" not in output(result)


CUT = r"""#!/bin/sh
# ForceCommand for user ops: count the SSH commands; past the limit, kill the SSH session
n=$(( $(cat /run/cut/count 2>/dev/null || echo 0) + 1 )); echo "$n" > /run/cut/count
if [ -f /run/cut/limit ] && [ "$n" -gt "$(cat /run/cut/limit)" ]; then
  pkill -KILL -u ops -x sshd; exit 255
fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


def owned_state(fleet) -> dict[str, str | None]:
    text = fleet.ssh(
        "host1",
        f'for f in {" ".join(paths.OWNED_FILES)}; do echo "== $f"; cat "$f" 2>/dev/null '
        "|| echo '(absent)'; done; echo '== temp'; "
        f"find /etc /var/lib/conntune -name '*{TEMP}' 2>/dev/null; true",
    ).stdout
    state: dict[str, str | None] = {}
    for block in text.split("== ")[1:]:
        name, _, body = block.partition("\n")
        state[name] = None if body.strip() == "(absent)" else body
    return state


def test_cut_ssh_session_at_each_step_leaves_no_half_written_file(host1, tmp_path):
    fleet = host1
    fleet.ssh("host1", "mkdir -p -m 777 /run/cut && cat > /usr/local/bin/cut-after && "
                       "chmod 755 /usr/local/bin/cut-after", input=CUT)  # fmt: skip
    fleet.ssh("host1", "printf 'Match User ops\\n  ForceCommand /usr/local/bin/cut-after\\n' "
                       "> /etc/ssh/sshd_config.d/99-cut.conf && systemctl reload ssh")  # fmt: skip
    # the converged state, from an uncut run
    assert run(fleet, tmp_path, "-y", ssh_user="ops", _sudo=True).returncode == 0
    converged = owned_state(fleet)
    assert converged["temp"].strip() == ""
    commands = int(fleet.ssh("host1", "cat /run/cut/count").stdout)
    assert commands >= 3  # read, live values, files (+ firewalld restart and its check)
    for limit in range(1, commands):
        reset(fleet, "host1")
        fleet.ssh("host1", f"echo 0 > /run/cut/count && echo {limit} > /run/cut/limit")
        cut = run(fleet, tmp_path, "-y", ssh_user="ops", _sudo=True)
        assert cut.returncode != 0, output(cut)  # the session really was cut
        after_cut = owned_state(fleet)
        assert after_cut["temp"].strip() == "", limit  # no temp file left behind
        for path in paths.OWNED_FILES:
            # either untouched (absent) or complete; never a truncated file
            assert after_cut[path] in (None, converged[path]), (limit, path)
        fleet.ssh("host1", "rm -f /run/cut/limit")
        again = run(fleet, tmp_path, "-y", ssh_user="ops", _sudo=True)
        assert again.returncode == 0, output(again)
        final = owned_state(fleet)
        for path in paths.OWNED_FILES:
            if path != paths.ORIGINAL_FILE:  # records what the cut run left live
                assert final[path] == converged[path], (limit, path)
        assert live(fleet, "host1", UDP) == 10


@pytest.mark.parametrize("failure", ["restart-fails", "values-move"])
def test_failed_firewalld_restart_rolls_back_files_and_values(host1, tmp_path, failure):
    fleet = host1
    assert run(fleet, tmp_path, "-y").returncode == 0  # converged on the server profile
    before_files = owned_state(fleet)
    drop_in = (
        "[Service]\nExecStartPre=/bin/false\n"
        if failure == "restart-fails"
        else f"[Service]\nExecStartPost=/usr/sbin/sysctl -q -w {UDP}=31\n"
    )
    fleet.ssh("host1", "mkdir -p /etc/systemd/system/firewalld.service.d && cat > "
                       "/etc/systemd/system/firewalld.service.d/fault.conf && "
                       "systemctl daemon-reload", input=drop_in)  # fmt: skip
    result = run(fleet, tmp_path, "-y", conntrack_timeouts={"udp_timeout": 25},
                 firewalld_restart="always")  # fmt: skip
    text = output(result)
    assert result.returncode == 1, text
    problem = "firewalld restart failed" if failure == "restart-fails" else "live values differ"
    assert problem in text
    if failure == "restart-fails":  # firewalld cannot come back either: said, not hidden
        assert "rollback incomplete: `systemctl restart firewalld`" in text
        assert "firewalld was running before this run and is not running now" in text
    else:
        assert "previous conntune files and live values restored" in text
    assert owned_state(fleet)[paths.SYSCTL_FILE] == before_files[paths.SYSCTL_FILE]
    assert live(fleet, "host1", UDP) == 10  # back to the value before the failed run


def test_an_invalid_firewalld_config_is_never_restarted_into(host1, tmp_path):
    fleet = host1
    fleet.ssh("host1", "printf '<zone><broken>' > /etc/firewalld/zones/conntune-test-bad.xml")
    refused = (
        "[host1] conntune: firewalld will not be restarted ({}): `firewall-cmd --check-config` "
        "fails ("
    )
    try:
        before = snapshot(fleet, "host1")
        # the dry run fails as the run will and still shows every change the run makes; -y (no
        # change detection) fails it too. (A container plans no `on-change` restart: no module
        # options file; its cause is the only difference, tests/unit/test_firewalld_check.py)
        for args, restart, cause in [
            (("--diff",), "always", "firewalld_restart: always"),
            (("-y",), "always", "firewalld_restart: always"),
        ]:
            dry = run(fleet, tmp_path, "--dry", *args, firewalld_restart=restart)
            text = output(dry)
            assert dry.returncode == 1, (args, restart, text)
            assert refused.format(cause) in text, text
            assert "Error: PARSE_ERROR: " in text, text  # firewalld's own words
            if "--diff" in args:
                assert f"{UDP}: " in text, text  # the live values it still sets
        assert snapshot(fleet, "host1") == before  # nothing changed, firewalld not restarted
        start = fleet.ssh("host1", "systemctl show -p ExecMainStartTimestampMonotonic firewalld")
        result = run(fleet, tmp_path, "-y", firewalld_restart="always")
        text = output(result)
        assert result.returncode == 1, text
        assert refused.format("firewalld_restart: always") in text, text
        after = fleet.ssh("host1", "systemctl show -p ExecMainStartTimestampMonotonic firewalld")
        assert after.stdout == start.stdout  # left running, never restarted
        assert (
            "ActiveState=active"
            in fleet.ssh("host1", "systemctl show -p ActiveState firewalld").stdout
        )
        assert live(fleet, "host1", UDP) == 10  # the table is converged all the same
    finally:
        fleet.ssh("host1", "rm -f /etc/firewalld/zones/conntune-test-bad.xml")
    dry = run(fleet, tmp_path, "--dry", firewalld_restart="always")  # the check passes again
    assert dry.returncode == 0, output(dry)
    assert "will not be restarted" not in output(dry)


# passes the first --check-config (the run's check before any change) and fails the next (the
# restart step's own): firewalld's configuration broken by someone else during the run
BROKEN_MID_RUN = """#!/bin/sh
if [ "$1" = --check-config ]; then
    n=$(cat /run/conntune-test-checks 2>/dev/null || echo 0)
    echo $((n + 1)) > /run/conntune-test-checks
    [ "$n" -ge 1 ] && { echo "Error: INVALID_ZONE: broken during the run" >&2; exit 1; }
fi
exec /usr/bin/firewall-cmd "$@"
"""


def test_a_firewalld_config_broken_during_the_run_is_never_restarted_into(host1, tmp_path):
    fleet = host1
    fleet.ssh("host1", "cat > /usr/local/bin/firewall-cmd && chmod +x /usr/local/bin/firewall-cmd "
                       "&& rm -f /run/conntune-test-checks", input=BROKEN_MID_RUN)  # fmt: skip
    try:
        start = fleet.ssh("host1", "systemctl show -p ExecMainStartTimestampMonotonic firewalld")
        result = run(fleet, tmp_path, "-y", firewalld_restart="always")
        text = output(result)
        assert result.returncode == 1, text
        assert (
            "[host1] conntune: firewalld not restarted: `firewall-cmd --check-config` fails "
            "(Error: INVALID_ZONE: broken during the run)" in text
        ), text
        assert fleet.ssh("host1", "cat /run/conntune-test-checks").stdout.strip() == "2"
        after = fleet.ssh("host1", "systemctl show -p ExecMainStartTimestampMonotonic firewalld")
        assert after.stdout == start.stdout  # left running, never restarted
        assert live(fleet, "host1", UDP) == 10
    finally:
        fleet.ssh("host1", "rm -f /usr/local/bin/firewall-cmd /run/conntune-test-checks")


def test_later_sysctl_file_is_not_fought_unless_override(host1, tmp_path):
    fleet = host1
    fleet.ssh("host1", f"echo '{UDP} = 45' > /etc/sysctl.d/99-other.conf && sysctl -q -w {UDP}=45")
    result = run(fleet, tmp_path, "-y")
    text = output(result)
    assert result.returncode == 0, text
    assert f"{UDP}: skipped, also set by /etc/sysctl.d/99-other.conf:1" in text
    assert live(fleet, "host1", UDP) == 45
    assert f"{UDP} =" not in fleet.ssh("host1", f"cat {paths.SYSCTL_FILE}").stdout
    result = run(fleet, tmp_path, "-y", conntune_override_conflicts=True)
    assert result.returncode == 0, output(result)
    assert f"{UDP}: overriding /etc/sysctl.d/99-other.conf:1" in output(result)
    assert live(fleet, "host1", UDP) == 10


def test_old_docker_blocks_the_firewalld_restart(host1, tmp_path):
    fleet = host1
    fleet.ssh("host1", "printf '#!/bin/sh\\necho Docker version 20.10.24+dfsg1, build 5d6db84\\n'"
                       " > /usr/local/bin/dockerd && chmod 755 /usr/local/bin/dockerd")  # fmt: skip
    start = fleet.ssh("host1", "systemctl show -p ExecMainStartTimestampMonotonic firewalld").stdout
    result = run(fleet, tmp_path, "-y")
    text = output(result)
    assert result.returncode == 0, text
    assert "older than 28.3.3 (CVE-2025-54388" in text
    assert live(fleet, "host1", UDP) == 10  # live values applied all the same
    after = fleet.ssh("host1", "systemctl show -p ExecMainStartTimestampMonotonic firewalld").stdout
    assert after == start  # not restarted
    allowed = run(fleet, tmp_path, "-y", firewalld_restart="always",
                  firewalld_restart_old_docker=True)  # fmt: skip
    assert allowed.returncode == 0, output(allowed)
    assert re.search(
        r"Restart firewalld \(firewalld_restart: always\) and verify\s+1\s+1", output(allowed)
    )


def test_undo_restores_the_host(host1, tmp_path):
    fleet = host1
    before = snapshot(fleet, "host1")
    assert run(fleet, tmp_path, "-y").returncode == 0
    assert snapshot(fleet, "host1") != before
    undo = run(fleet, tmp_path, "-y", conntune_state="absent", firewalld_restart="always")
    assert undo.returncode == 0, output(undo)
    after = snapshot(fleet, "host1")
    # the same sysctls, /etc and qdiscs; only firewalld's start time moved (it was restarted)
    strip = re.compile(r"ExecMainStartTimestampMonotonic=\d+")
    assert strip.sub("", after) == strip.sub("", before)
