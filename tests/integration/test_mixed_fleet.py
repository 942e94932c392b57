"""
Mixed fleets over real SSH: a reading captured live and replayed gives the live decision;
containers of other kinds (unprivileged: /proc/sys read-only; /proc/sys/net read-write on a
read-only /proc/sys) are planned only what they can take; a dry run is a gate; two controllers
at once never interleave; scheduled units work however conntune was started.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conntune import paths, profiles
from tests.integration.conftest import CLIENT_KEY, IMAGE, host_key_line
from tests.integration.test_deploy import live, output, reset, snapshot
from tests.pyinfra_output import changes_of

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
UDP = f"{profiles.P}udp_timeout"
ESTABLISHED = f"{profiles.P}tcp_timeout_established"


def conntune(*args: str, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "conntune.cli", *args], capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL, cwd=cwd, env={**os.environ, **(env or {})},
    )  # fmt: skip


# --- replayable readings ------------------------------------------------------------------


def test_a_reading_replayed_gives_the_live_plan_and_verdict(fleet, tmp_path):
    reset(fleet, "host2")
    fleet.ssh("host2", f"sysctl -q -w {UDP}=44")  # some drift of its own
    inventory = fleet.write_inventory(tmp_path / "inventory.py", hosts=["host2"],
                                      conntrack_timeouts={"udp_timeout": 25})  # fmt: skip
    saved = conntune("reading", str(inventory), "-o", str(tmp_path / "readings"))
    assert saved.returncode == 0, output(saved)
    reading = tmp_path / "readings" / "host2.reading"
    assert reading.read_text().count("@@conntune:") > 30
    data = ["--data", 'conntrack_timeouts={"udp_timeout": 25}']

    replayed = conntune("plan", "--reading", str(reading), "--json", *data)
    assert replayed.returncode == 0, output(replayed)
    plan = json.loads(replayed.stdout)
    assert plan["timeouts"][UDP] == 25
    live_dry = fleet.pyinfra("deploy.py", "--dry", "--diff", inventory=inventory)
    assert live_dry.returncode == 0, output(live_dry)
    assert sorted(changes_of(output(live_dry), "host2")) == sorted(
        change for change in plan["changes"] if "→" in change
    )
    for warning in plan["warnings"]:
        assert f"[host2] conntune: {warning}" in output(live_dry)

    audit_live = json.loads(conntune("audit", str(inventory), "--json").stdout)["hosts"][0]
    audit_replay = json.loads(conntune("audit", "--reading", str(reading), "--json", *data).stdout)[
        "hosts"
    ][0]
    for key in ("verdict", "reason", "drift", "conntrack_max", "buckets", "drop", "warnings"):
        assert audit_replay[key] == audit_live[key], key
    assert audit_replay["host"] == "host2"
    reset(fleet, "host2")


def test_an_unknown_reading_format_is_refused_clearly(tmp_path):
    bad = tmp_path / "x.reading"
    bad.write_text("@@conntune:format\n99\n@@conntune:end\n")
    result = conntune("plan", "--reading", str(bad))
    assert result.returncode == 2
    assert "reading format '99'" in result.stderr and "conntune reading" in result.stderr


# --- containers of other kinds ------------------------------------------------------------

CONTAINER_KINDS = {
    # Docker's default: /proc/sys is read-only; sshd only (no systemd without privileges)
    "unprivileged": [],
    # /proc/sys read-only with /proc/sys/net read-write on top (LXC's proc:mixed)
    "proc-mixed": ["--privileged"],
}
PROC_MIXED = (
    "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
    "mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net && "
)


@pytest.fixture(scope="module")
def containers(fleet, tmp_path_factory):
    """Two more hosts, sshd only, reached over SSH like the fleet."""
    work = tmp_path_factory.mktemp("kinds")
    names, ports = {}, {}
    for kind, flags in CONTAINER_KINDS.items():
        setup = PROC_MIXED if kind == "proc-mixed" else ""
        run = subprocess.run(
            ["docker", "run", "-d", "--rm", "-p", "127.0.0.1::22", *flags, "--entrypoint", "sh",
             IMAGE, "-c", f"{setup}mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        names[kind] = run.stdout.strip()
        port = subprocess.run(["docker", "port", names[kind], "22"], capture_output=True,
                              text=True, check=True).stdout.split(":")[-1]  # fmt: skip
        ports[kind] = int(port)
    known = work / "known_hosts"
    known.write_text("".join(host_key_line(port) + "\n" for port in ports.values()))
    key = work / "id_ed25519"
    shutil.copyfile(CLIENT_KEY, key)
    key.chmod(0o600)
    lines = ["hosts = ["]
    for kind, port in ports.items():
        data = {"ssh_hostname": "127.0.0.1", "ssh_port": port, "ssh_user": "root",
                "ssh_key": str(key), "ssh_known_hosts_file": str(known),
                "ssh_strict_host_key_checking": "yes"}  # fmt: skip
        lines.append(f"    ({kind!r}, {data!r}),")
    (work / "inventory.py").write_text("\n".join([*lines, "]", ""]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = fleet.pyinfra("exec", "--", "true", inventory=work / "inventory.py")
        if probe.returncode == 0:
            break
        time.sleep(0.5)
    yield work / "inventory.py", names
    for name in names.values():
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def said(text: str, host: str, words: str) -> bool:
    """Whether pyinfra printed ``words`` for ``host`` (it pads host prefixes to one width)."""
    return any(
        line.strip().startswith(f"[{host}]") and line.split("]", 1)[1].strip().startswith(words)
        for line in text.splitlines()
    )


def container_state(name: str) -> str:
    return subprocess.run(
        ["docker", "exec", name, "sh", "-c",
         "sysctl -a 2>/dev/null | grep nf_conntrack | grep -v _count; "
         "find /etc /var/lib/conntune -xdev -type f 2>/dev/null | sort | xargs sha256sum"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_containers_get_only_what_they_can_take(fleet, containers):
    inventory, names = containers
    before = {kind: container_state(name) for kind, name in names.items()}
    dry = fleet.pyinfra("deploy.py", "--dry", "--diff", inventory=inventory)
    text = output(dry)
    assert dry.returncode == 0, text
    assert {kind: container_state(name) for kind, name in names.items()} == before
    # unprivileged: nothing writable; says where the values go instead; plans no write
    assert said(text, "unprivileged", "conntune: nf_conntrack_max and the hash size are "
                "read-only here (/proc/sys is mounted read-only)")  # fmt: skip
    assert "docker run --sysctl" in text
    assert changes_of(text, "unprivileged") == []
    # proc:mixed: the timeouts are this namespace's to set, the table is the host's
    assert f"{UDP}: 30 → 10" in changes_of(text, "proc-mixed")
    assert said(text, "proc-mixed", "conntune: nf_conntrack_max and the hash size are read-only")

    applied = fleet.pyinfra("deploy.py", "-y", inventory=inventory)
    assert applied.returncode == 0, output(applied)
    assert container_state(names["unprivileged"]) == before["unprivileged"]
    mixed = container_state(names["proc-mixed"])
    assert f"{UDP} = 10" in mixed and paths.SYSCTL_FILE in mixed
    assert paths.MODPROBE_FILE not in mixed and paths.MODULES_LOAD_FILE not in mixed
    again = fleet.pyinfra("deploy.py", "--dry", "--diff", inventory=inventory)
    assert "→" not in output(again)


# --- a dry run is a gate ------------------------------------------------------------------


def test_a_dry_run_fails_on_a_refused_or_unreadable_host_and_shows_the_others(fleet, tmp_path):
    for name in ("host1", "host2", "host3"):
        reset(fleet, name)
    fleet.ssh("host2", "id pwuser >/dev/null 2>&1 || useradd -m -s /bin/sh pwuser; "
                       "echo 'pwuser:Right-Secret-4711' | chpasswd; "
                       "echo 'pwuser ALL=(ALL) ALL' > /etc/sudoers.d/pwuser; "
                       "install -d -o pwuser -m 700 /home/pwuser/.ssh; "
                       "install -o pwuser -m 600 /root/.ssh/authorized_keys "
                       "/home/pwuser/.ssh/")  # fmt: skip
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    text = inventory.read_text()
    text = text.replace("('host2', {**_common,", "('host2', {**_common, 'ssh_user': 'pwuser', "
                        "'_sudo': True, '_sudo_password': 'Wrong-Secret',")  # fmt: skip
    text = text.replace("('host3', {**_common,", "('host3', {**_common, 'cake_diffserv': 'x',")
    inventory.write_text(text)
    before = {name: snapshot(fleet, name) for name in ("host1", "host2", "host3")}
    dry = fleet.pyinfra("deploy.py", "--dry", "--diff", inventory=inventory)
    text = output(dry)
    assert dry.returncode == 1, text  # CI pipelines use the dry run to validate inventories
    assert "Traceback" not in text
    assert f"{UDP}: 30 → 10" in changes_of(text, "host1")  # the good host's full diff
    assert "[host2] conntune: could not read the host" in text
    assert "[host3] conntune: cake_diffserv: unknown mode 'x'" in text
    assert "Detected changes" in text
    assert {name: snapshot(fleet, name) for name in ("host1", "host2", "host3")} == before


# --- two controllers at once --------------------------------------------------------------


def lease(fleet, name: str) -> list[str]:
    return fleet.ssh(name, "cat /run/conntune/lease 2>/dev/null; true").stdout.split()


def test_a_run_waits_for_a_held_host_then_reports_it_busy(fleet, tmp_path):
    reset(fleet, "host1")
    generation = lease(fleet, "host1")[2] if lease(fleet, "host1") else "0"
    held = f"otherctl-4242-feedbeef {int(time.time()) + 600} {generation} -"
    fleet.ssh("host1", f"mkdir -p /run/conntune && echo '{held}' > /run/conntune/lease")
    before = snapshot(fleet, "host1")
    inventory = fleet.write_inventory(tmp_path / "inv.py", hosts=["host1"], conntune_lock_wait=3)
    started = time.monotonic()
    busy = fleet.pyinfra("deploy.py", "-y", inventory=inventory)
    waited = time.monotonic() - started
    assert busy.returncode == 1, output(busy)
    assert "busy: another conntune run holds this host" in output(busy)
    assert "otherctl-4242-feedbeef" in output(busy)
    assert 3 <= waited < 60
    assert snapshot(fleet, "host1") == before  # nothing written while another run holds it
    # the other run is gone and its lease expired: this one converges
    expired = f"otherctl-4242-feedbeef {int(time.time()) - 1} {generation} -"
    fleet.ssh("host1", f"echo '{expired}' > /run/conntune/lease")
    done = fleet.pyinfra("deploy.py", "-y", inventory=inventory)
    assert done.returncode == 0, output(done)
    assert live(fleet, "host1", UDP) == 10
    assert lease(fleet, "host1")[0] == "-"  # released after the run's last write
    reset(fleet, "host1")


def test_two_controllers_at_once_never_interleave(fleet, tmp_path):
    """
    Two deploys with different settings read the host at the same moment, and both find it
    held for a few seconds (a third run, the lease written by hand): both wait, one takes the
    host when it frees and converges it, the other finds it changed and writes nothing.
    """
    reset(fleet, "host1")
    generation = lease(fleet, "host1")[2] if lease(fleet, "host1") else "0"
    held = f"otherctl-4242-feedbeef {int(time.time()) + 8} {generation} -"
    fleet.ssh("host1", f"mkdir -p /run/conntune && echo '{held}' > /run/conntune/lease")
    runs = {}
    wanted = {"a": 11, "b": 22}
    inventories = {
        who: fleet.write_inventory(
            tmp_path / f"{who}.py",
            hosts=["host1"],
            conntrack_timeouts={"udp_timeout": udp, "icmp_timeout": udp},
            conntune_lock_wait=60,
        )
        for who, udp in wanted.items()
    }
    barrier = threading.Barrier(2)

    def deploy(who: str) -> None:
        barrier.wait()
        runs[who] = fleet.pyinfra("deploy.py", "-y", inventory=inventories[who])

    threads = [threading.Thread(target=deploy, args=(who,)) for who in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = {who: output(run) for who, run in runs.items()}
    udp = live(fleet, "host1", UDP)
    icmp = live(fleet, "host1", f"{profiles.P}icmp_timeout")
    assert udp == icmp and udp in wanted.values(), texts  # one run's values, never a mix
    winner = next(who for who, value in wanted.items() if value == udp)
    loser = "b" if winner == "a" else "a"
    assert runs[winner].returncode == 0, texts[winner]
    sysctl_file = fleet.ssh("host1", f"cat {paths.SYSCTL_FILE}").stdout
    assert f"{UDP} = {udp}" in sysctl_file  # the files are the winner's too
    assert runs[loser].returncode == 1, texts  # it waited, then found the host changed
    assert "another conntune run changed this host since this run read it" in texts[loser]
    # the loser, run again, converges the host to its own settings
    again = fleet.pyinfra("deploy.py", "-y", inventory=inventories[loser])
    assert again.returncode == 0, output(again)
    assert live(fleet, "host1", UDP) == wanted[loser]
    reset(fleet, "host1")


# --- the scheduled job works however conntune was started --------------------------------


def unit_text(stdout: str, suffix: str) -> str:
    block = next(b for b in stdout.split("# /")[1:] if b.split("\n", 1)[0].endswith(suffix))
    return block.split("\n", 1)[1]


@pytest.mark.parametrize("how", ["relative", "symlink", "path", "venv-not-activated"])
def test_scheduled_units_run_however_conntune_was_started(fleet, tmp_path, how):
    venv_bin = Path(sys.executable).parent
    inventory = fleet.write_inventory(tmp_path / "fleet.py", hosts=["host1"])
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # no venv on the PATH
    cwd, argv = tmp_path, [str(venv_bin / "conntune")]
    if how == "relative":  # e.g. `.venv/bin/conntune` typed in the checkout
        argv = [os.path.relpath(venv_bin / "conntune", cwd)]
    elif how == "symlink":
        link = tmp_path / "bin" / "ct"
        link.parent.mkdir()
        link.symlink_to(venv_bin / "conntune")
        argv = [str(link)]
    elif how == "path":
        env["PATH"] = f"{venv_bin}:{env['PATH']}"
        argv = ["conntune"]
    inventory_arg = os.path.relpath(inventory, cwd)
    result = subprocess.run(
        [*argv, "schedule", inventory_arg, "--every", "1h", "--check", "--dry-run",
         "--metrics-file", "metrics/conntune.prom"],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    service = unit_text(result.stdout, ".service")
    timer = unit_text(result.stdout, ".timer")
    exec_start = re.search(r"^ExecStart=(.*)$", service, re.MULTILINE).group(1)
    command = shlex.split(exec_start)
    assert all(part.startswith("/") for part in (command[0], command[2]))  # absolute paths
    assert Path(command[0]).resolve() == Path(command[0])  # resolved, no symlink left
    workdir = re.search(r"^WorkingDirectory=(.*)$", service, re.MULTILINE).group(1)
    assert workdir.startswith("/")
    units = tmp_path / "units"
    units.mkdir()
    (units / "conntune-test.service").write_text(service)
    (units / "conntune-test.timer").write_text(timer)
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(units / "conntune-test.service"),
         str(units / "conntune-test.timer")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "Neither a valid executable name nor an absolute path" not in verify.stderr
    # and the unit's command really runs the job over SSH, from its working directory,
    # with no venv activated and no PATH help
    ran = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=env,
                         timeout=300)  # fmt: skip
    assert ran.returncode in (0, 2), ran.stdout + ran.stderr  # 2: drift found (--check)
    assert "host1" in ran.stdout
