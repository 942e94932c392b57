"""Docker fleet for conntune integration tests (pytest-docker + real SSH + real pyinfra).

Prerequisite (root, once per machine; idempotent and fast when already done)::

    scripts/test-env.sh          # engine, Compose v2 plugin, images local/conntune-*
    python -m pytest tests/integration -m docker -v

Fixtures
--------
``fleet`` (session): three systemd containers from ``tests/docker/docker-compose.yml``,
ready over SSH, with a pyinfra inventory using strict host key checking:

* ``fleet.inventory``  Path of the generated inventory (hosts ``host1``, ``host2``, ``host3``)
* ``fleet.hosts``      ``{"host1": port, ...}`` (sshd published on 127.0.0.1)
* ``fleet.ssh(name, cmd, check=True, user="root", timeout=60, input=None)``
  -> ``CompletedProcess`` (text); ``cmd`` is a shell string or an argv list
* ``fleet.pyinfra(*args, check=False, inventory=None, env=None, timeout=600)``
  -> ``CompletedProcess``: ``python -m pyinfra <inventory> *args`` from the repo root, no TTY
  (stdin /dev/null), so pass ``-y`` for real runs (without ``-y`` and without a TTY pyinfra
  crashes at its confirmation prompt); ``--dry`` needs no ``-y``.
* ``fleet.write_inventory(path, known_hosts=None, hosts=None, **data)`` -> Path: a variant
  inventory (e.g. ``ssh_user="ops"``, another known_hosts file)
* ``fleet.compose(*args, check=True)``: ``docker compose -f ... -p ...`` for this fleet
* also ``fleet.key`` (0600 copy of the client key), ``fleet.known_hosts``, ``fleet.workdir``
  (session tmp dir), ``fleet.project``, ``fleet.names``, ``fleet.firewalld_active``,
  ``fleet.hostnames``, ``fleet.keys_dir``, ``fleet.ssh_argv(name, cmd, user, known_hosts)``

Host roles (see docker-compose.yml):
``host1``/``host2`` firewalld enabled+running, ``host2``'s hostname is ``edge-fw-02``;
``host3`` firewalld disabled+stopped. Users: ``root``, ``ops`` (passwordless sudo),
``nosudo``; all accept ``tests/docker/keys/id_ed25519``.

The fleet is shared by the whole session and never reset: tests must restore whatever
state they change (or use unique names), so they stay order independent.

Markers ``docker`` and ``vm`` are registered here; every test that uses ``fleet`` or
``docker_services`` gets the ``docker`` marker automatically.

Docker unavailable: tests are skipped, but fail when ``CI`` is true.

Env: ``CONNTUNE_COMPOSE_PROJECT`` (compose project name), ``CONNTUNE_KEEP_FLEET=1`` (leave the
containers running after the session), ``CONNTUNE_FLEET_TIMEOUT`` (readiness, seconds).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "tests" / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
KEYS_DIR = DOCKER_DIR / "keys"
CLIENT_KEY = KEYS_DIR / "id_ed25519"
HOST_PUBKEY = KEYS_DIR / "ssh_host_ed25519_key.pub"
IMAGE = "local/conntune-testhost:latest"

HOSTS = ("host1", "host2", "host3")
#: expected firewalld state after boot
FIREWALLD_ACTIVE = {"host1": True, "host2": True, "host3": False}
#: container hostnames (docker-compose.yml)
HOSTNAMES = {"host1": "host1", "host2": "edge-fw-02", "host3": "host3"}

READY_TIMEOUT = float(os.environ.get("CONNTUNE_FLEET_TIMEOUT", "180"))
SETUP_HINT = "run `sudo scripts/test-env.sh` (Debian 12) to set up the Docker test environment"


# ---------------------------------------------------------------------------- markers
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: integration test against the Docker test fleet (tests/docker)"
    )
    config.addinivalue_line("markers", "vm: integration test that needs a full VM (own kernel)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if ("fleet" in names or "docker_services" in names) and not item.get_closest_marker(
            "docker"
        ):
            item.add_marker(pytest.mark.docker)


# ---------------------------------------------------------------------- availability
def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def _run(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def docker_problem() -> str | None:
    """Why the Docker fleet cannot run here, or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
        if info.returncode != 0:
            return (
                f"the Docker engine does not answer (`docker info`: {info.stderr.strip()[-300:]})"
            )
        comp = _run(["docker", "compose", "version"])
        if comp.returncode != 0:
            return "the Compose v2 CLI plugin is missing (`docker compose version` fails)"
        img = _run(["docker", "image", "inspect", IMAGE])
        if img.returncode != 0:
            return f"the test image {IMAGE} is not built"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker does not respond ({e})"
    return None


@pytest.fixture(scope="session")
def docker_environment() -> None:
    """Skip (or fail under CI=true) when the Docker test environment is not usable."""
    problem = docker_problem()
    if problem is None:
        return
    msg = f"Docker test environment not available: {problem}; {SETUP_HINT}"
    if _in_ci():
        pytest.fail(f"{msg} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(msg)


# ------------------------------------------------------------ pytest-docker overrides
@pytest.fixture(scope="session")
def docker_compose_file(docker_environment: None) -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    # fixed per checkout: leftovers of a crashed session are replaced by the next one
    # (docker_setup starts with `down`); two checkouts don't collide
    default = "conntune-it-" + hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:8]
    return os.environ.get("CONNTUNE_COMPOSE_PROJECT", default)


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # images are local (pull_policy: never, no build sections): `--build` is a no-op
    return ["down -v --remove-orphans --timeout 5", "up --build --wait --force-recreate"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    if os.environ.get("CONNTUNE_KEEP_FLEET") == "1":
        return []
    return ["down -v --remove-orphans --timeout 10"]


# ---------------------------------------------------------------------------- fleet
class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the captured output."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}\n--- stdout ---\n{self.stdout or ''}"
            f"\n--- stderr ---\n{self.stderr or ''}"
        )


def _checked(
    proc: subprocess.CompletedProcess[str], check: bool
) -> subprocess.CompletedProcess[str]:
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def host_key_line(port: int, pubkey_file: Path = HOST_PUBKEY) -> str:
    keytype, b64 = pubkey_file.read_text().split()[:2]
    return f"[127.0.0.1]:{port} {keytype} {b64}"


@dataclass
class Fleet:
    inventory: Path
    hosts: dict[str, int]
    key: Path
    known_hosts: Path
    workdir: Path
    project: str
    compose_file: Path = COMPOSE_FILE
    ssh_config: Path = field(default=Path("/dev/null"))
    # static facts about the fleet (tests use these instead of importing conftest)
    names: tuple[str, ...] = HOSTS
    firewalld_active: Mapping[str, bool] = field(default_factory=lambda: dict(FIREWALLD_ACTIVE))
    hostnames: Mapping[str, str] = field(default_factory=lambda: dict(HOSTNAMES))
    keys_dir: Path = KEYS_DIR

    # -- ssh ---------------------------------------------------------------------
    def ssh_argv(
        self,
        name: str,
        cmd: str | Sequence[str],
        user: str = "root",
        known_hosts: Path | str | None = None,
    ) -> list[str]:
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        return [
            "ssh", "-F", "/dev/null", "-T",
            "-i", str(self.key), "-p", str(self.hosts[name]),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            f"{user}@127.0.0.1", remote,
        ]  # fmt: skip

    def ssh(
        self,
        name: str,
        cmd: str | Sequence[str],
        check: bool = True,
        user: str = "root",
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on host ``name`` over ssh (strict host key checking)."""
        # stdin and input never together: gevent's subprocess (patched in by importing
        # pyinfra_cli) refuses even stdin=None next to input
        stream = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        proc = subprocess.run(
            self.ssh_argv(name, cmd, user), capture_output=True, text=True, timeout=timeout,
            **stream,
        )  # fmt: skip
        return _checked(proc, check)

    # -- pyinfra -------------------------------------------------------------------
    def pyinfra(
        self,
        *args: str,
        check: bool = False,
        inventory: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m pyinfra INVENTORY *args`` from the repo root, output captured."""
        run_env = dict(os.environ)
        run_env.update(
            PYINFRA_PROGRESS="off",
            NO_COLOR="1",
            TERM="dumb",
            COLUMNS="200",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        run_env.pop("PYINFRA_YES", None)
        if env:
            run_env.update(env)
        argv = [sys.executable, "-m", "pyinfra", str(inventory or self.inventory), *args]
        proc = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return _checked(proc, check)

    def write_inventory(
        self,
        path: Path | str,
        known_hosts: Path | str | None = None,
        hosts: Sequence[str] | None = None,
        **data: object,
    ) -> Path:
        """Write a pyinfra inventory for (a subset of) the fleet; ``data`` overrides/extends
        the SSH data of every host (e.g. ``ssh_user="ops"``, ``_sudo=True``)."""
        path = Path(path)
        common: dict[str, object] = {
            "ssh_hostname": "127.0.0.1",
            "ssh_user": "root",
            "ssh_key": str(self.key),
            "ssh_known_hosts_file": str(known_hosts or self.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_config_file": str(self.ssh_config),
            "ssh_connect_retries": 1,
        }
        common.update(data)
        lines = [
            "# Generated by tests/integration/conftest.py (conntune Docker test fleet).",
            f"_common = {common!r}",
            "",
            "docker_fleet = [",
        ]
        for name in hosts or self.hosts:
            lines.append(f"    ({name!r}, {{**_common, 'ssh_port': {self.hosts[name]}}}),")
        lines += ["]", ""]
        path.write_text("\n".join(lines))
        return path

    # -- compose -------------------------------------------------------------------
    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "compose", "-f", str(self.compose_file), "-p", self.project, *args]
        return _checked(_run(argv, timeout=300), check)


def _host_state(fleet: Fleet, name: str) -> dict[str, str] | None:
    """systemd/firewalld state of a host over ssh, or None while ssh is not up yet."""
    script = (
        "s=$(timeout 60 systemctl is-system-running --wait 2>/dev/null); "
        'echo "system=$s"; echo "firewalld=$(systemctl is-active firewalld.service)"'
    )
    try:
        proc = fleet.ssh(name, script, check=False, timeout=90)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode == 255:  # ssh itself failed (sshd not listening yet)
        return None
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _wait_ready(fleet: Fleet, name: str, timeout: float) -> dict[str, str]:
    want_fw = "active" if FIREWALLD_ACTIVE[name] else "inactive"
    deadline = time.monotonic() + timeout
    state: dict[str, str] | None = None
    while time.monotonic() < deadline:
        state = _host_state(fleet, name)
        if (
            state is not None
            and state.get("system") in ("running", "degraded")
            and state.get("firewalld") == want_fw
        ):
            return state
        time.sleep(0.5)
    logs = fleet.compose("logs", "--no-color", "--tail", "40", name, check=False).stdout
    last = fleet.ssh(name, "systemctl --failed --no-legend; true", check=False)
    raise RuntimeError(
        f"{name} not ready after {timeout:.0f}s: last state {state} "
        f"(want system running/degraded, firewalld {want_fw})\n"
        f"failed units:\n{last.stdout}{last.stderr}\ncontainer log:\n{logs}"
    )


@pytest.fixture(scope="session")
def fleet(
    docker_services, docker_compose_project_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Fleet:
    workdir = tmp_path_factory.mktemp("fleet")
    key = workdir / "id_ed25519"
    shutil.copyfile(CLIENT_KEY, key)
    key.chmod(0o600)  # git does not keep 0600; ssh and paramiko refuse open private keys
    ssh_config = workdir / "ssh_config"  # empty: keep the user's ~/.ssh/config out
    ssh_config.write_text("")

    hosts = {name: int(docker_services.port_for(name, 22)) for name in HOSTS}
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text("".join(host_key_line(port) + "\n" for port in hosts.values()))

    fl = Fleet(
        inventory=workdir / "inventory.py",
        hosts=hosts,
        key=key,
        known_hosts=known_hosts,
        workdir=workdir,
        project=docker_compose_project_name,
        ssh_config=ssh_config,
    )
    fl.write_inventory(fl.inventory)

    t0 = time.monotonic()
    for name in HOSTS:  # boot in parallel already; waiting in sequence costs nothing extra
        _wait_ready(fl, name, max(5.0, READY_TIMEOUT - (time.monotonic() - t0)))
    print(f"\nfleet ready in {time.monotonic() - t0:.1f}s: {hosts} (inventory {fl.inventory})")
    return fl
