"""
The conntune deploy: read the host once, plan, converge.

.. code:: python

    from conntune.deploys.tune import tune
    tune()
"""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.api import deploy
from pyinfra.context import ctx_host

from conntune import paths
from conntune.changes import Change, Kind, drift
from conntune.facts.firewalld import FirewalldConfigProblems
from conntune.facts.host import read_host
from conntune.firewalld import check_config_refusal
from conntune.hostfacts import HostFacts
from conntune.operations import cake, conntrack, files, firewalld, guards
from conntune.operations.hostlock import dead_here, lock_for
from conntune.plan import Plan
from conntune.policy import plan
from conntune.settings import InvalidSettings, settings_from_data


def restart_cause(
    facts: HostFacts, desired: Plan, changes: list[Change] | None = None
) -> str | None:
    """
    Why this run restarts firewalld, or ``None`` when it does not. ``always``: asked for.
    ``on-change``: the module options file changes, the one file that acts through firewalld
    (it loads nf_conntrack with those options). A sysctl file, the CAKE unit or the undo record
    never needs a firewalld restart: their values are set directly.
    """
    if not desired.firewalld_active or desired.firewalld_restart_blocked is not None:
        return None
    if desired.firewalld_restart == "always":
        return "firewalld_restart: always"
    if desired.firewalld_restart != "on-change":
        return None
    changes = drift(facts, desired) if changes is None else changes
    if any(c.kind is Kind.FILE and c.name == paths.MODPROBE_FILE for c in changes):
        return f"{paths.MODPROBE_FILE} changes"
    return None


def _fails_here() -> None:
    """Mark this host failed now, so that a dry run (with or without ``-y``) exits non-zero."""
    # pyinfra's CLI exits 1 when state.failed_hosts is not empty. The set alone (not
    # state.fail_hosts) keeps the other hosts' change detection going; -y skips change
    # detection, so it is marked here, when the deploy is prepared, not in an operation.
    state.failed_hosts.add(ctx_host.get())


def _refuse(name: str, errors: list[str]) -> None:
    """Fail this host before any change, with the reasons."""
    _fails_here()
    guards.refuse(name=name, errors=errors)


def _locks(
    facts: HostFacts, desired: Plan, changes: list[Change], restart: bool, wait: int
) -> dict[str, dict | None]:
    """The host lock for each write step that will run; the last of them releases it."""
    kinds = {change.kind for change in changes}
    steps = {
        "live": bool(kinds & {Kind.MODULE, Kind.BUCKETS, Kind.SYSCTL}),
        "files": bool(kinds & {Kind.FILE, Kind.UNIT}),
        "qdisc": Kind.QDISC in kinds,
        "firewalld": restart,
    }
    running = [step for step, runs in steps.items() if runs]
    if facts.tools.flock is None:
        if running:
            logger.warning(
                f"{host.print_prefix}conntune: no flock(1) on the host: this run is not "
                "protected from another conntune run at the same moment"
            )
        return dict.fromkeys(steps)
    generation, holder = facts.lease.generation, facts.lease.holder
    stale = holder if dead_here(holder) else None
    return {
        step: lock_for(generation, wait, step == running[-1], stale) if step in running else None
        for step in steps
    }


@deploy("conntune")
def tune() -> None:
    """Tune this host's conntrack table, timeouts and CAKE qdisc as its host data asks."""
    facts = read_host(host)
    if not facts.complete:  # pyinfra may have printed more (SSH, sudo...)
        why = "; ".join(facts.unreadable[-1:]) or "the reading command failed"
        reason = f"could not read the host: {why}; nothing was changed"
        logger.error(f"{host.print_prefix}conntune: {reason}")
        _refuse("Refuse: the host could not be read", [reason])
        return
    for what in facts.unreadable:
        logger.warning(f"{host.print_prefix}conntune could not read: {what}")
    try:
        settings = settings_from_data(host.data.dict())
        desired = plan(facts, settings)
    except InvalidSettings as refused:
        errors = [str(error) for error in refused.errors]
        for error in errors:
            logger.error(f"{host.print_prefix}conntune: {error}")
        _refuse("Refuse invalid settings (nothing changed)", errors)
        return
    for warning in desired.warnings:
        logger.warning(f"{host.print_prefix}conntune: {warning}")
    if state.config.DIFF or state.print_noop_info:  # --diff or -v: explain the numbers
        for reason in desired.reasons:
            logger.info(f"{host.print_prefix}conntune: {reason}")

    if facts.uid not in (0, None):  # fails the host before any change, in a dry run too
        _fails_here()  # the plan's warnings said why
        guards.require_root(name="Check for root", uid=facts.uid)
    changes = drift(facts, desired)
    cause = restart_cause(facts, desired, changes)
    if cause is not None:
        # checked before any change, so that a dry run fails as the run will; the table is
        # still converged: a broken firewall configuration must not keep it undersized
        problems = host.get_fact(FirewalldConfigProblems)
        if problems:
            logger.error(f"{host.print_prefix}conntune: {check_config_refusal(problems, cause)}")
            _fails_here()
            cause = None
    lock = _locks(facts, desired, changes, cause is not None, settings.conntune_lock_wait)
    conntrack.conntrack_live(
        name="Set live conntrack values",
        sysctls=desired.sysctls,
        buckets=desired.buckets,
        load_module=desired.load_conntrack,
        lock=lock["live"],
    )
    files.owned_files(name="Write conntune files", files=desired.files, lock=lock["files"])
    if desired.cake is not None:
        cake.cake_qdisc(
            name="Set the CAKE qdisc",
            interface=desired.cake.interface,
            bandwidth_bit=desired.cake.bandwidth_bit,
            diffserv=desired.cake.diffserv,
            kind=desired.cake.kind,
            options=desired.cake.options,
            lock=lock["qdisc"],
        )
    if desired.cake_remove is not None:
        cake.cake_qdisc_absent(
            name="Remove the CAKE qdisc", interface=desired.cake_remove, lock=lock["qdisc"]
        )
    # Live values are applied directly above: since firewalld 1.0 a restart no longer reloads
    # nf_conntrack (CleanupModulesOnExit=no), so it is needed only to re-read changed files.
    if cause is not None:
        firewalld.firewalld_restart(
            name=f"Restart firewalld ({cause}) and verify",
            sysctls=desired.sysctls,
            buckets=desired.buckets,
            docker_chains=desired.verify_docker_chains,
            flushes=desired.firewalld_restart_flushes,
            lock=lock["firewalld"],
        )
