"""
Operations that converge a host to a conntune plan: live conntrack values, the files conntune
owns, the CAKE qdisc, and the firewalld restart. Each reads the host with one shared reading
(``read_host``), does nothing when the host already matches, and batches its writes into one
remote command.

With ``--diff`` each prints what it would change, old → new.
"""

from __future__ import annotations

import posixpath
from collections.abc import Generator

from pyinfra import host, logger, state

from conntune import paths
from conntune.changes import (
    HASHSIZE_PATH,
    Change,
    cake_change,
    file_changes,
    live_changes,
    unified_diff,
)
from conntune.policy import CakePlan
from conntune.pyinfra_api import (
    FunctionCommand,
    QuoteString,
    StringCommand,
    connector_arguments,
    forget_host_facts,
    operation,
    read_host,
)


def _show(lines: list[str]) -> None:
    """Log ``--diff`` lines once per run: at change detection, or at execution under ``-y``."""
    if not state.config.DIFF:
        return
    if state.is_executing and state.should_check_for_changes():
        return
    for line in lines:
        logger.info(f"{host.print_prefix}  {line}")


@operation()
def conntrack_live(
    sysctls: dict[str, int],
    buckets: int | None = None,
    load_module: bool = False,
) -> Generator[StringCommand, None, None]:
    """
    Set the live conntrack values: the hash size first, then ``nf_conntrack_max``, then the
    timeouts (the table is resized in place and keeps its entries; the module is never reloaded).

    + sysctls: ``net.netfilter.*`` name -> value, written in this order
    + buckets: the hash size (``/sys/module/nf_conntrack/parameters/hashsize``), or ``None``
    + load_module: ``modprobe nf_conntrack`` first when it is not loaded

    **Example:**

    .. code:: python

        conntrack_live(
            name="Set live conntrack values",
            sysctls={"net.netfilter.nf_conntrack_max": 262144},
            buckets=262144,
        )
    """
    facts = read_host(host)
    load = load_module and not facts.conntrack_loaded
    changes = live_changes(facts, sysctls, buckets)
    if not changes and not load:
        host.noop(f"{len(sysctls) + (buckets is not None)} live conntrack values already match")
        return
    _show(["nf_conntrack module: not loaded → loaded"] if load else [])
    _show([str(change) for change in changes])
    if load:  # values read before the module existed: write them all
        yield _live_command(sysctls, buckets, load=True)
    else:
        new = {c.name: c.new for c in changes if c.name in sysctls}
        hashsize_changed = any(c.name == "nf_conntrack hashsize" for c in changes)
        yield _live_command(new, buckets if hashsize_changed else None)


def _live_command(
    sysctls: dict[str, object], buckets: int | None, load: bool = False
) -> StringCommand:
    """hash size first (the table is resized in place), then the sysctls, in order."""
    bits: list[object] = []
    if load:
        bits += ["modprobe", "nf_conntrack", "&&"]
    if buckets is not None:
        bits += ["printf", "'%s\\n'", QuoteString(str(buckets)), ">", HASHSIZE_PATH, "&&"]
    writes = [QuoteString(f"{key}={value}") for key, value in sysctls.items()]
    bits += ["sysctl", "-q", "-w", *writes] if writes else ["true"]
    return StringCommand(*bits)


def _write_file(path: str, content: str) -> list[object]:
    """Write ``content`` to a temp file beside ``path``, then rename: never a truncated file."""
    directory, name = posixpath.split(path)
    temp = posixpath.join(directory, f".{name}.conntune-tmp")
    return [
        "mkdir", "-p", QuoteString(directory), "&&",
        "printf", "%s", QuoteString(content), ">", QuoteString(temp), "&&",
        "chmod", "0644", QuoteString(temp), "&&",
        "mv", "-f", QuoteString(temp), QuoteString(path),
    ]  # fmt: skip


@operation()
def owned_files(files: dict[str, str | None]) -> Generator[StringCommand, None, None]:
    """
    Converge the files conntune owns: write each changed file atomically (temp file + rename,
    root-owned, 0644), remove the ones the plan no longer wants, and keep the CAKE unit enabled.

    + files: path -> wanted content; ``None`` removes the file

    **Example:**

    .. code:: python

        owned_files(
            name="Write conntune files",
            files={"/etc/sysctl.d/90-conntune.conf": "net.netfilter.nf_conntrack_max = 262144\\n"},
        )
    """
    facts = read_host(host)
    changes = file_changes(facts, files)
    unit_wanted = files.get(paths.CAKE_UNIT_FILE) is not None
    unit_changed = any(change.name == paths.CAKE_UNIT_FILE for change in changes)
    enable_unit = unit_wanted and (unit_changed or not facts.cake_unit_enabled)
    if not changes and not enable_unit:
        host.noop(f"{len(files)} conntune files already as planned")
        return

    for change in changes:
        verb = "create" if change.old is None else "remove" if change.new is None else "modify"
        _show([f"{verb} {change.name}", *unified_diff(change.name, change.old, change.new)])
    if enable_unit:
        _show([f"enable {paths.CAKE_UNIT}"])
    yield _files_command({c.name: c.new for c in changes}, enable_unit=enable_unit)


def _files_command(files: dict[str, str | None], enable_unit: bool = False) -> StringCommand:
    """Write (atomically) or remove each file; keep the CAKE unit's enablement in step."""
    unit_changed = paths.CAKE_UNIT_FILE in files
    bits: list[object] = ["umask", "022"]
    if unit_changed and files[paths.CAKE_UNIT_FILE] is None:
        bits += [
            "&&",
            "{",
            "systemctl",
            "disable",
            "--now",
            paths.CAKE_UNIT,
            "||",
            "true",
            ";",
            "}",
        ]
    # when removing, the undo record goes last: everything else is undone by then
    for path in sorted(files, key=lambda path: path == paths.ORIGINAL_FILE):
        content = files[path]
        if content is None:
            bits += ["&&", "rm", "-f", QuoteString(path)]
        else:
            bits += ["&&", *_write_file(path, content)]
    if unit_changed:
        bits += ["&&", "systemctl", "daemon-reload"]
    if enable_unit:
        bits += ["&&", "systemctl", "enable", paths.CAKE_UNIT]
    return StringCommand(*bits)


@operation()
def cake_qdisc(
    interface: str, bandwidth_bit: int, diffserv: str = "besteffort"
) -> Generator[StringCommand, None, None]:
    """
    Make CAKE the root qdisc of an interface, shaped to a rate.

    + interface: the egress NIC
    + bandwidth_bit: the shaped rate in bit/s (``tc -j`` reports it back in bytes/s)
    + diffserv: ``besteffort``, ``diffserv3``, ``diffserv4``, ``diffserv8`` or ``precedence``

    **Example:**

    .. code:: python

        cake_qdisc(name="CAKE on eth0", interface="eth0", bandwidth_bit=1_000_000_000)
    """
    cake = CakePlan(interface, bandwidth_bit, diffserv)
    change = cake_change(read_host(host), cake)
    if change is None:
        host.noop(f"{interface} already has cake {cake.rate} {diffserv}")
        return
    _show([str(change)])
    yield StringCommand(
        "tc", "qdisc", "replace", "dev", QuoteString(interface), "root", "cake",
        "bandwidth", QuoteString(f"{bandwidth_bit}bit"), QuoteString(diffserv),
    )  # fmt: skip


@operation()
def cake_qdisc_absent(interface: str) -> Generator[StringCommand, None, None]:
    """
    Remove a CAKE root qdisc: the interface falls back to the kernel's default qdisc.

    + interface: the NIC whose root qdisc conntune set

    **Example:**

    .. code:: python

        cake_qdisc_absent(name="Remove CAKE from eth0", interface="eth0")
    """
    qdisc = read_host(host).root_qdisc(interface)
    if qdisc is None or qdisc.get("kind") != "cake":
        host.noop(f"{interface} has no CAKE root qdisc")
        return
    _show([f"qdisc root dev {interface}: cake → (kernel default)"])
    yield StringCommand("tc", "qdisc", "del", "dev", QuoteString(interface), "root")


DOCKER_CHAINS = StringCommand(
    "iptables", "-n", "-L", "DOCKER", ">/dev/null", "2>&1", "||",
    "nft", "list", "chain", "ip", "filter", "DOCKER", ">/dev/null", "2>&1",
)  # fmt: skip


def _rollback(host, before, sysctls: dict[str, int], buckets: int | None, how: dict) -> str:
    """
    Put back the files and live values conntune changed in this run; say how that went.
    firewalld is restarted on the old files before the live values are written back, so that
    whatever its restart does, the values conntune found are the last ones written.
    """
    files = {path: before.owned_files.get(path) for path in before.owned_files}
    old_values = {key: before.sysctls[key] for key in sysctls if key in before.sysctls}
    old_buckets = before.buckets if buckets is not None else None
    steps = [_files_command(files)]
    if before.firewalld.active:
        steps.append(StringCommand("systemctl", "restart", "firewalld"))
    steps.append(_live_command(old_values, old_buckets))
    failures = []
    for step in steps:
        status, output = host.run_shell_command(step, **how)
        if not status:
            failures.append(f"`{step.get_raw_value()[:50]}...`: {output.stderr.strip()}")
    if failures:
        return "rollback incomplete: " + "; ".join(failures)
    return "previous conntune files and live values restored"


def _restart_and_verify(
    state, host, sysctls: dict[str, int], buckets: int | None, docker_chains: bool, how: dict
) -> bool:
    before = read_host(host)  # the reading this run planned from: the state to roll back to
    restart = StringCommand("systemctl", "restart", "firewalld")
    status, output = host.run_shell_command(restart, **how)
    problem = None if status else f"firewalld restart failed: {output.stderr.strip()}"
    if problem is None:
        mismatches: list[Change] = live_changes(read_host(host, fresh=True), sysctls, buckets)
        if mismatches:
            problem = "after the firewalld restart the live values differ: " + "; ".join(
                map(str, mismatches)
            )
    if problem is not None:
        outcome = _rollback(host, before, sysctls, buckets, how)
        logger.error(f"{host.print_prefix}{problem}; {outcome}")
        forget_host_facts(host)
        return False
    if docker_chains and not host.run_shell_command(DOCKER_CHAINS, **how)[0]:
        logger.error(
            f"{host.print_prefix}Docker's firewall chains are gone after the firewalld restart: "
            "containers have no NAT or isolation rules. Fix: `systemctl restart docker` (and "
            "upgrade Docker to 28.3.3 or later, CVE-2025-54388)"
        )
        return False
    forget_host_facts(host)
    return True


@operation(is_idempotent=False, idempotent_notice="Restarts firewalld each time it runs; gate it.")
def firewalld_restart(
    sysctls: dict[str, int], buckets: int | None = None, docker_chains: bool = False
) -> Generator[FunctionCommand, None, None]:
    """
    Restart firewalld, then check that the live conntrack values still match. If the restart
    fails or the values moved, put back the previous conntune files and live values, and fail.

    + sysctls: the live values that must hold after the restart
    + buckets: the hash size that must hold after the restart
    + docker_chains: also check that Docker's firewall chains came back

    **Example:**

    .. code:: python

        files = owned_files(files=...)
        firewalld_restart(name="Restart firewalld", sysctls=..., _if=files.did_change)
    """
    _show(["firewalld: restart, then verify the live values"])
    how = connector_arguments(host)
    yield FunctionCommand(_restart_and_verify, (sysctls, buckets, docker_chains, how), {})


def _require_root(state, host, uid: int) -> bool:
    logger.error(
        f"{host.print_prefix}conntune: connected as uid {uid} without root: conntune needs root "
        "to change sysctls, /etc and qdiscs (set _sudo: True in the host data, or use --sudo); "
        "nothing was changed on this host"
    )
    return False


@operation(is_idempotent=False)
def require_root(uid: int | None) -> Generator[FunctionCommand, None, None]:
    """
    Fail the host before any change when the connection has no root (no sudo).

    + uid: the uid the host reading ran as

    **Example:**

    .. code:: python

        require_root(name="Check privileges", uid=facts.uid)
    """
    if uid == 0 or uid is None:
        host.noop("running as root")
        return
    yield FunctionCommand(_require_root, (uid,), {})


def _refuse(state, host, errors: list[str]) -> bool:
    for error in errors:
        logger.error(f"{host.print_prefix}conntune refused: {error}")
    logger.error(f"{host.print_prefix}nothing was changed on this host")
    return False


@operation(is_idempotent=False)
def refuse(errors: list[str]) -> Generator[FunctionCommand, None, None]:
    """
    Fail this host, changing nothing, because its settings or facts were refused.

    + errors: the reasons, each naming the setting

    **Example:**

    .. code:: python

        refuse(name="Refuse invalid settings", errors=["cake_bandwidth: 'fast' is not a rate"])
    """
    yield FunctionCommand(_refuse, (errors,), {})
