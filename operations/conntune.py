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

    bits: list[object] = []
    if load:
        bits += ["modprobe", "nf_conntrack", "&&"]
    if buckets is not None and any(change.name == "nf_conntrack hashsize" for change in changes):
        bits += ["printf", "'%s\\n'", QuoteString(str(buckets)), ">", HASHSIZE_PATH, "&&"]
    writes = [QuoteString(f"{c.name}={c.new}") for c in changes if c.name in sysctls]
    if load:  # values read before the module existed: write them all
        writes = [QuoteString(f"{key}={value}") for key, value in sysctls.items()]
    if writes:
        bits += ["sysctl", "-q", "-w", *writes]
    else:
        bits.append("true")
    yield StringCommand(*bits)


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
    bits: list[object] = ["umask", "022"]
    if unit_changed and not unit_wanted:
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
    for change in changes:
        if change.new is None:
            bits += ["&&", "rm", "-f", QuoteString(change.name)]
        else:
            bits += ["&&", *_write_file(change.name, change.new)]
    if unit_changed:
        bits += ["&&", "systemctl", "daemon-reload"]
    if enable_unit:
        _show([f"enable {paths.CAKE_UNIT}"])
        bits += ["&&", "systemctl", "enable", paths.CAKE_UNIT]
    yield StringCommand(*bits)


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


def _restart_and_verify(state, host, sysctls: dict[str, int], buckets: int | None) -> bool:
    status, output = host.run_shell_command(StringCommand("systemctl", "restart", "firewalld"))
    if not status:
        logger.error(f"{host.print_prefix}firewalld restart failed: {output.stderr}")
        return False
    facts = read_host(host, fresh=True)
    mismatches: list[Change] = live_changes(facts, sysctls, buckets)
    if mismatches:
        logger.error(
            f"{host.print_prefix}after the firewalld restart the live values no longer match: "
            + "; ".join(map(str, mismatches))
        )
        return False
    forget_host_facts(host)
    return True


@operation(is_idempotent=False, idempotent_notice="Restarts firewalld each time it runs; gate it.")
def firewalld_restart(
    sysctls: dict[str, int], buckets: int | None = None
) -> Generator[FunctionCommand, None, None]:
    """
    Restart firewalld, then check that the live conntrack values still match.

    + sysctls: the live values that must hold after the restart
    + buckets: the hash size that must hold after the restart

    **Example:**

    .. code:: python

        files = owned_files(files=...)
        firewalld_restart(name="Restart firewalld", sysctls=..., _if=files.did_change)
    """
    _show(["firewalld: restart, then verify the live values"])
    yield FunctionCommand(_restart_and_verify, (sysctls, buckets), {})


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
