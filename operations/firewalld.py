"""Restart firewalld, verify the conntrack values held, and roll back when they did not."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import logger
from pyinfra.api import FunctionCommand, StringCommand, operation

from conntune.changes import live_changes
from conntune.facts.host import forget_reading, read_host
from conntune.facts.reading import host_facts, reading_command
from conntune.firewalld import check_config_refusal
from conntune.operations.commands import (
    CONFIG_INVALID,
    DOCKER_CHAINS,
    FIREWALLD_ACTIVE,
    connector_arguments,
    files_command,
    live_command,
    restart_firewalld,
    show_diff,
)
from conntune.operations.hostlock import locked, release_command

# firewalld before 1.0 (or with CleanupModulesOnExit=yes) unloads nf_conntrack on restart; its
# ruleset loads it again 3-9 s later (measured on Debian 11, docs/kernel-facts.md §8)
MODULE_BACK = StringCommand(
    "i=0;", "while", "[", "!", "-e", "/proc/sys/net/netfilter/nf_conntrack_max", "]", "&&",
    "[", "$i", "-lt", "120", "];", "do", "sleep", "0.5;", "i=$((i+1));", "done;",
    "[", "-e", "/proc/sys/net/netfilter/nf_conntrack_max", "]",
)  # fmt: skip


def _rollback(host, before, sysctls: dict[str, int], buckets, lock, how: dict) -> str:
    """
    Put back the files and live values conntune changed in this run; say how that went.
    firewalld is restarted on the old files before the live values are written back, so that
    whatever its restart does, the values conntune found are the last ones written.
    """
    files = {path: before.owned_files.get(path) for path in before.owned_files}
    old_values = {key: before.sysctls[key] for key in sysctls if key in before.sysctls}
    old_buckets = before.buckets if buckets is not None else None
    steps = [("write the previous files", locked(files_command(files), lock, release=False))]
    if before.firewalld.active:
        steps.append(
            ("systemctl restart firewalld", locked(restart_firewalld(), lock, release=False))
        )
        if before.firewalld.restart_unloads_conntrack is not False:
            steps.append(("wait for nf_conntrack", MODULE_BACK))
    steps.append(
        (
            "set the previous live values",
            locked(live_command(old_values, old_buckets), lock, release=True),
        ),
    )
    failures = []
    for label, step in steps:
        status, output = host.run_shell_command(step, **how)
        if not status:
            failures.append(f"`{label}`: {output.stderr.strip()[-200:]}")
    if before.firewalld.active and not host.run_shell_command(FIREWALLD_ACTIVE, **how)[0]:
        failures.append(
            "firewalld was running before this run and is not running now: the host has no "
            "firewalld rules. See `systemctl status firewalld` and `journalctl -u firewalld`"
        )
    if failures:
        return "rollback incomplete: " + "; ".join(failures)
    return "previous conntune files and live values restored, firewalld running"


def _restart_and_verify(
    state, host, sysctls, buckets, docker_chains: bool, flushes: bool, lock, how: dict
) -> bool:
    before = read_host(host)  # the reading this run planned from: the state to roll back to
    restart = restart_firewalld()
    if not flushes:
        # the reading that verifies the restart rides in the same command (one SSH round trip
        # fewer, so a first apply stays within six commands); its exit status is not the
        # restart's, and an incomplete reading shows as differing values below
        restart = StringCommand(restart, "&&", "{", "(", reading_command(), ");", "true;", "}")
    status, output = host.run_shell_command(
        locked(restart, lock, release=False if flushes else None), **how
    )
    if not status and CONFIG_INVALID in output.stdout:
        # firewalld would not have started again: it was left running; the values are set
        # live and in the files, which is all a restart would have checked
        logger.error(f"{host.print_prefix}conntune: {check_config_refusal(output.stderr)}")
        if lock is not None and flushes:  # the restart step kept the lease for later steps
            host.run_shell_command(release_command(lock), **how)
        return False
    problem = None if status else f"firewalld restart failed: {output.stderr.strip()}"
    if problem is None and flushes:
        # the restart unloaded nf_conntrack: wait for firewalld's ruleset to load it again,
        # then write every planned value (the kernel defaults are back)
        if not host.run_shell_command(MODULE_BACK, **how)[0]:
            problem = "nf_conntrack did not come back within 60 s of the firewalld restart"
        elif not host.run_shell_command(locked(live_command(sysctls, buckets), lock), **how)[0]:
            problem = "the live values could not be set again after the firewalld restart"
    if problem is None:
        after = read_host(host, fresh=True) if flushes else host_facts(output.stdout)
        if flushes:
            logger.warning(
                f"{host.print_prefix}conntune: the firewalld restart flushed the conntrack table "
                f"(entries {before.conntrack_count} → {after.conntrack_count}); the planned "
                "live values were set again"
            )
        mismatches = live_changes(after, sysctls, buckets)
        if mismatches:
            problem = "after the firewalld restart the live values differ: " + "; ".join(
                map(str, mismatches)
            )
    if problem is not None:
        outcome = _rollback(host, before, sysctls, buckets, lock, how)
        logger.error(f"{host.print_prefix}{problem}; {outcome}")
        forget_reading(host)
        return False
    if docker_chains and not host.run_shell_command(DOCKER_CHAINS, **how)[0]:
        logger.error(
            f"{host.print_prefix}Docker's firewall chains are gone after the firewalld restart: "
            "containers have no NAT or isolation rules. Fix: `systemctl restart docker` (and "
            "upgrade Docker to 28.3.3 or later, CVE-2025-54388)"
        )
        return False
    forget_reading(host)
    return True


@operation(is_idempotent=False, idempotent_notice="Restarts firewalld each time it runs; gate it.")
def firewalld_restart(
    sysctls: dict[str, int],
    buckets: int | None = None,
    docker_chains: bool = False,
    flushes: bool = False,
    lock: dict | None = None,
) -> Generator[FunctionCommand, None, None]:
    """
    Restart firewalld, then check that the live conntrack values still match. If the restart
    fails or the values moved, put back the previous conntune files and live values, and fail.

    + sysctls: the live values that must hold after the restart
    + buckets: the hash size that must hold after the restart
    + docker_chains: also check that Docker's firewall chains came back
    + flushes: the restart unloads nf_conntrack here (firewalld < 1.0, or
      ``CleanupModulesOnExit=yes``): wait for the module, then set the live values again
    + lock: the host lock this run holds (``conntune.operations.hostlock``), or ``None``

    **Example:**

    .. code:: python

        files = owned_files(files=...)
        firewalld_restart(name="Restart firewalld", sysctls=..., _if=files.did_change)
    """
    show_diff(["firewalld: restart, then verify the live values"])
    if flushes:
        show_diff(["firewalld: the restart flushes the conntrack table; values set again after"])
    yield FunctionCommand(
        _restart_and_verify,
        (sysctls, buckets, docker_chains, flushes, lock, connector_arguments()),
        {},
    )
