"""
The conntune deploy: read the host once, plan, converge.

.. code:: python

    from deploys.conntune import tune
    tune()
"""

from __future__ import annotations

from pyinfra import host, logger, state

from conntune.changes import file_changes
from conntune.policy import plan
from conntune.pyinfra_api import deploy, read_host
from conntune.settings import InvalidSettings, settings_from_data
from operations import conntune as ops


@deploy("conntune")
def tune() -> None:
    """Tune this host's conntrack table, timeouts and CAKE qdisc as its host data asks."""
    facts = read_host(host)
    if not facts.complete:  # pyinfra has already failed this host and said why
        logger.error(f"{host.print_prefix}conntune: could not read the host; nothing changed")
        return
    for what in facts.unreadable:
        logger.warning(f"{host.print_prefix}conntune could not read: {what}")
    try:
        desired = plan(facts, settings_from_data(host.data.dict()))
    except InvalidSettings as refused:
        errors = [str(error) for error in refused.errors]
        for error in errors:
            logger.error(f"{host.print_prefix}conntune: {error}")
        ops.refuse(name="Refuse invalid settings (nothing changed)", errors=errors)
        return
    for warning in desired.warnings:
        logger.warning(f"{host.print_prefix}conntune: {warning}")
    if state.config.DIFF or state.print_noop_info:  # --diff or -v: explain the numbers
        for reason in desired.reasons:
            logger.info(f"{host.print_prefix}conntune: {reason}")

    if facts.uid not in (0, None):  # fails the host at execution, before any change
        logger.warning(
            f"{host.print_prefix}conntune: reading as uid {facts.uid}: a real run needs root "
            "(set _sudo: True)"
        )
        ops.require_root(name="Check for root", uid=facts.uid)
    ops.conntrack_live(
        name="Set live conntrack values",
        sysctls=desired.sysctls,
        buckets=desired.buckets,
        load_module=desired.load_conntrack,
    )
    files = ops.owned_files(name="Write conntune files", files=desired.files)
    if desired.cake is not None:
        ops.cake_qdisc(
            name="Set the CAKE qdisc",
            interface=desired.cake.interface,
            bandwidth_bit=desired.cake.bandwidth_bit,
            diffserv=desired.cake.diffserv,
        )
    if desired.cake_remove is not None:
        ops.cake_qdisc_absent(name="Remove the CAKE qdisc", interface=desired.cake_remove)
    # Live values are applied directly above: since firewalld 1.0 a restart no longer reloads
    # nf_conntrack (CleanupModulesOnExit=no), so it is needed only to re-read changed files.
    wanted = desired.firewalld_restart == "always" or (
        desired.firewalld_restart == "on-change" and file_changes(facts, desired.files)
    )
    if desired.firewalld_active and wanted and desired.firewalld_restart_blocked is None:
        ops.firewalld_restart(
            name="Restart firewalld and verify",
            sysctls=desired.sysctls,
            buckets=desired.buckets,
            docker_chains=desired.verify_docker_chains,
            _if=None if desired.firewalld_restart == "always" else files.did_change,
        )
