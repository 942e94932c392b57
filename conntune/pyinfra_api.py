"""
The fleet runner: conntune's jobs (audit, reconcile, revert, watch) over pyinfra's Python API
(connect, read, run, collect). This is the one module that uses pyinfra's internals; pyinfra 4
will change them (``connect_all`` is already ``async`` upstream) and this file is the only one
to port. Facts and operations use pyinfra's public plugin API directly.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch

import gevent
import pyinfra
import pyinfra.connectors.util
from pyinfra.api import BaseStateCallback, Config, Inventory, State, StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_fact
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import parse_cli_arg

from conntune.facts.host import (
    SUDO_PASSWORD_NEEDED,
    ConntuneHost,
    cached_reading,
    remember_reading,
)
from conntune.facts.reading import buffered
from conntune.hostfacts import HostFacts

# paramiko's transport thread wakes every 0.1 s on each idle connection to check whether it was
# closed (a socket timeout): 2,000 wakeups a second at 200 hosts, 5 % of a core spent waiting
# (0.4 % at 2 s, measured). Closing, keepalives and rekeying work the same with a longer poll.
SSH_POLL_SECONDS = 2.0
# file descriptors per connected host (its socket), and for the rest of the process
FDS_PER_HOST, FDS_BASE = 1, 256


def _raise_open_files_limit(hosts: int) -> None:
    """
    One socket per connected host stays open for the whole job: raise the soft open-files
    limit (1024 on most Linux desktops, 256 on macOS) towards the hard one when it is short.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FDS_BASE + FDS_PER_HOST * hosts
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


def _quiet_idle_connections(hosts: list[Host]) -> None:
    """Make paramiko poll each idle connection every ``SSH_POLL_SECONDS``, not every 0.1 s."""
    for host in hosts:
        client = getattr(host.connector, "client", None)
        transport = client.get_transport() if client is not None else None
        sock = getattr(transport, "sock", None)
        if sock is not None and hasattr(sock, "settimeout"):
            with contextlib.suppress(OSError):
                sock.settimeout(SSH_POLL_SECONDS)


class _ConnectErrors(BaseStateCallback):
    """Why each host failed to connect; ``progress(done, total)`` as hosts connect or fail."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None = None) -> None:
        self.errors: dict[str, str] = {}
        self.total, self.done, self.progress = total, 0, progress

    def _one_more(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)

    def host_connect(self, state: State, host: Host) -> None:  # type: ignore[override]
        self._one_more()

    def host_connect_error(self, state: State, host: Host, error) -> None:  # type: ignore[override]
        self.errors[host.name] = str(error)
        self._one_more()


def parse_data_value(text: str) -> object:
    """A ``--data`` value exactly as ``pyinfra --data`` reads it (true/false, numbers, JSON)."""
    return parse_cli_arg(text)


@dataclass
class Fleet:
    """A connected inventory: hosts that answered, and why the others did not."""

    state: State
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def hosts(self) -> list[Host]:
        return sorted(self.state.inventory.get_active_hosts(), key=lambda host: host.name)


class SudoPasswordRequired(RuntimeError):
    """sudo asked for a password on a host, and a fleet job never prompts."""


def _never_prompt(prompt: str) -> str:
    raise SudoPasswordRequired(SUDO_PASSWORD_NEEDED)


def _why(error: BaseException) -> str:
    """An exception's message; pyinfra's wrapper for an inventory's own exception has a broken
    ``__str__`` (no ``message`` attribute), so fall back to its cause."""
    for candidate in (error, error.__cause__, error.__context__):
        if candidate is None:
            continue
        try:
            text = str(candidate)
        except Exception:
            continue
        if text:
            return text if candidate is error else f"{type(candidate).__name__}: {text}"
    return type(error).__name__


class NoHosts(ValueError):
    """The inventory (with ``--limit``) selects no host: a typo, not an empty success."""


def load_inventory(inventory: str, cwd: str, data: dict[str, object] | None = None) -> Inventory:
    """The inventory as the pyinfra CLI loads it; ``NoHosts`` when it cannot be loaded."""
    if inventory.endswith(".py") and not os.path.exists(inventory):
        # pyinfra would try the path as a host name (and its resolver fails on a long one)
        raise NoHosts(f"{inventory}: no such inventory file")
    try:
        loaded = make_inventory(inventory, cwd=cwd, override_data=data or {})
    except UnicodeError:  # not a host name either (pyinfra_cli.inventory._resolves_to_host)
        raise NoHosts(f"{inventory}: neither an inventory file nor a host name") from None
    except Exception as error:  # the inventory's own Python failed (pyinfra wraps SyntaxError...)
        raise NoHosts(f"{inventory}: the inventory could not be loaded: {_why(error)}") from None
    return loaded


def inventory_host_names(inventory: str) -> list[str]:
    """The hosts an inventory lists, without connecting; ``NoHosts`` when there are none."""
    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    with ctx_state.use(state):
        names = [host.name for host in load_inventory(inventory, state.cwd)]
    if not names:
        raise NoHosts(f"{inventory}: no hosts (not an inventory file, or one that lists none)")
    return names


def open_fleet(
    inventory: str,
    limit: list[str] | None = None,
    data: dict[str, object] | None = None,
    parallel: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Fleet:
    """
    Load an inventory as the pyinfra CLI does (group_data included) and connect in parallel.
    Unless the inventory says otherwise, host keys are checked strictly (no trust on first use).
    Raises ``NoHosts`` when the inventory and ``limit`` select no host.
    ``progress(done, total)`` is called as hosts connect (or fail to).
    """
    pyinfra.is_cli = False
    # pyinfra asks on the terminal when sudo wants a password (connectors/util.py,
    # execute_command_with_sudo_retry), and under cron its getpass() dies on EOF with no message
    pyinfra.connectors.util.getpass = _never_prompt
    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    ctx_state.set(state)
    loaded = load_inventory(inventory, state.cwd, data)
    for host in loaded:
        if host.data.get("ssh_strict_host_key_checking") is None:
            host.data.ssh_strict_host_key_checking = "yes"
    config = Config(FAIL_PERCENT=None)
    if parallel:
        config.PARALLEL = parallel
    selected = None
    if limit:
        selected = [h for h in loaded if any(fnmatch(h.name, pattern) for pattern in limit)]
        selected += [h for group in limit for h in loaded.get_group(group, [])]
    state.init(loaded, config, initial_limit=selected)
    total = len([host for host in loaded if state.is_host_in_limit(host)])
    if total == 0:
        if limit:
            raise NoHosts(f"{inventory}: --limit {' '.join(limit)} matches no host or group")
        raise NoHosts(f"{inventory}: no hosts (not an inventory file, or one that lists none)")
    _raise_open_files_limit(total)
    callback = _ConnectErrors(total, progress)
    if progress:
        progress(0, total)
    state.add_callback_handler(callback)
    fleet = Fleet(state)
    # "No hosts remaining!" when every host failed to connect: reported per host below
    with contextlib.suppress(PyinfraError):
        connect_all(state)
    for host in state.failed_hosts:
        fleet.errors[host.name] = callback.errors.get(host.name, "could not connect")
    _quiet_idle_connections(fleet.hosts)
    return fleet


def read_fleet(
    fleet: Fleet, fresh: bool = False, progress: Callable[[int, int], None] | None = None
) -> dict[str, HostFacts | str]:
    """
    One ``ConntuneHost`` reading per connected host, in parallel; an error text on failure.
    ``progress(done, total)`` is called as hosts answer.
    """

    def read(host: Host) -> HostFacts | str:
        cached = None if fresh else cached_reading(host)
        if cached is not None:
            return cached
        try:
            with ctx_state.use(fleet.state), ctx_host.use(host):
                facts = get_fact(fleet.state, host, ConntuneHost, apply_failed_hosts=False)
        except Exception as error:  # any failure reading one host must not hide the others
            return f"could not read the host: {error or type(error).__name__}"
        if not facts.complete:
            return "could not read the host: " + "; ".join(facts.unreadable[-1:])
        remember_reading(host, facts)
        return facts

    greenlets = {fleet.state.pool.spawn(read, host): host for host in fleet.hosts}
    results = {}
    if progress:
        progress(0, len(greenlets))
    for greenlet in gevent.iwait(list(greenlets)):
        results[greenlets[greenlet].name] = greenlet.get()
        if progress:
            progress(len(results), len(greenlets))
    return dict(sorted(results.items()))


def converge_fleet(fleet: Fleet, deploy_function, hosts: list[str]) -> dict[str, str | None]:
    """Run a deploy on some connected hosts; returns host -> error (None when it succeeded)."""
    targets = [host for host in fleet.hosts if host.name in hosts]
    if not targets:
        return {}
    state = fleet.state
    state.set_stage(StateStage.Prepare)
    with ctx_state.use(state):
        add_deploy(state, deploy_function, host=targets)
    state.set_stage(StateStage.Execute)
    with contextlib.suppress(PyinfraError):  # every target failed: reported per host below
        run_ops(state)
    failed = {host.name for host in state.failed_hosts}
    return {host.name: ("failed (see log)" if host.name in failed else None) for host in targets}


def close_fleet(fleet: Fleet, timeout: float = 10) -> None:
    """Disconnect every host; a connection stuck on a host that stopped answering is dropped."""
    with contextlib.suppress(Exception), gevent.Timeout(timeout, False):
        disconnect_all(fleet.state)


def run_on_hosts(
    fleet: Fleet, commands: dict[str, str], timeout: float
) -> dict[str, str | Exception]:
    """
    Run one command per host in parallel over the connections ``open_fleet`` keeps open (a new
    SSH channel each time, no new login), as the host's data says (``_sudo``...). A host that
    fails gives its exception, not a crash.
    """

    def run(host: Host) -> str | Exception:
        try:
            with gevent.Timeout(timeout), ctx_state.use(fleet.state), ctx_host.use(host):
                arguments, _ = pop_global_arguments(fleet.state, host, {})
                how = {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS}
                how["_timeout"] = int(timeout)
                command = StringCommand(buffered(commands[host.name]))
                status, output = host.run_shell_command(command, **how)
        except BaseException as error:  # gevent.Timeout is a BaseException
            if isinstance(error, KeyboardInterrupt):
                raise
            return error if isinstance(error, Exception) else TimeoutError(str(error))
        if not status:
            return RuntimeError(output.stderr.strip() or "command failed")
        return output.stdout

    hosts = [host for host in fleet.hosts if host.name in commands]
    greenlets = {fleet.state.pool.spawn(run, host): host for host in hosts}
    gevent.joinall(list(greenlets))
    return {greenlets[g].name: g.get() for g in greenlets}
