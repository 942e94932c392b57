"""
The tuning policy: from what a host is (``HostFacts``) and what the operator asked
(``Settings``) to what the host should be (``Plan``). No pyinfra, no I/O: facts read, policy
decides, operations converge. Each part lives in its own module: sizing, timeouts, cake,
conflicts (neighbours), firewalld, render (the files), undo.
"""

from __future__ import annotations

from conntune import conflicts, paths, profiles, render, sizing, timeouts, undo
from conntune import firewalld as firewalld_policy
from conntune.cake import plan_cake
from conntune.hostfacts import BUCKETS_KEY, MAX_KEY, HostFacts
from conntune.original import released_timeouts
from conntune.plan import Plan
from conntune.settings import InvalidSettings, SettingError, Settings

# conntune's files are a few KiB: below this, a write would fail half way through a run
MIN_FREE_KB = 64


def plan(facts: HostFacts, settings: Settings) -> Plan:
    """Decide a host's desired state. Raises ``InvalidSettings`` with every reason to refuse."""
    result = Plan(
        firewalld_restart=settings.firewalld_restart,
        firewalld_active=facts.firewalld.active,
        state=settings.conntune_state,
    )
    errors = check_host(facts)
    if settings.conntune_state == "absent":
        if errors:
            raise InvalidSettings(errors)
        undo.plan_absent(facts, result)
    else:
        profile = profiles.PROFILES[settings.conntrack_timeout_profile]
        released = released_timeouts(facts, paths.SYSCTL_FILE)
        managed = [MAX_KEY, BUCKETS_KEY, *profile, *settings.conntrack_timeouts, *released]
        found = conflicts.find(facts, managed, settings.conntune_override_conflicts)
        sizing.plan_sizing(facts, settings, result, errors, found)
        timeouts.plan_timeouts(facts, settings, result, found, released)
        plan_cake(facts, settings, result, errors)
        if errors:
            raise InvalidSettings(errors)
        result.conflicts = [c for c in found.values() if _managed(result, c.key) or c.wins]
        _explain_conflicts(facts, result, found)
        render.plan_files(facts, result)
    firewalld_policy.plan_firewalld(facts, settings, result)
    if facts.uid not in (0, None):
        result.warnings.append(
            f"read as uid {facts.uid}: a real run needs root (set _sudo: True); a dry run of this "
            "host fails after showing its changes"
        )
    return result


def _managed(out: Plan, key: str) -> bool:
    return key in out.sysctls or (key == BUCKETS_KEY and out.buckets is not None)


def _explain_conflicts(facts: HostFacts, out: Plan, found: dict) -> None:
    for key, conflict in found.items():
        if conflict.wins:
            out.warnings.append(
                f"{key}: skipped, also set by {conflict.owner} "
                "(set conntune_override_conflicts: true to take it over)"
            )
        elif _managed(out, key):
            out.warnings.append(f"{key}: overriding {conflict.owner} (conntune_override_conflicts)")
    for line in conflicts.earlier_files(facts, [*out.sysctls, BUCKETS_KEY]):
        out.warnings.append(f"{line.path}:{line.lineno} sets {line.key} too; conntune's file wins")
    for line in conflicts.broken_module_options(facts):
        out.warnings.append(f"broken module option, {line}: {line.problem}")
    doubled = conflicts.hashsize_doubled(facts)
    if doubled:
        out.warnings.append(
            "nf_conntrack's hash size is set in more than one place, and kmod passes all of them "
            "at the next load (the doubled parameter that has crashed kernels, 2045cdfa1b40): "
            + "; ".join(doubled)
            + ". Keep one"
        )
    for line in conflicts.legacy_lines_without_effect(facts):
        out.warnings.append(
            f"{line.path}:{line.lineno} sets {line.name}, a legacy name this kernel no longer "
            f"has: it sets nothing (the current name is {line.key})"
        )


def check_host(facts: HostFacts) -> list[SettingError]:
    """Host conditions that make any change unsafe: refused before anything is touched."""
    errors = []
    if facts.tools.sysctl is None:
        errors.append(SettingError("sysctl", "the sysctl command (procps) is not installed"))
    if not facts.conntrack_loaded and not facts.conntrack_loadable:
        why = facts.module_load_blocked or "modprobe -n nf_conntrack fails"
        errors.append(
            SettingError(
                "nf_conntrack",
                f"the module is not loaded and cannot be loaded here ({why}): nothing to tune "
                "here; load nf_conntrack on the host (a container's table and timeouts exist "
                "once the host's kernel has it)",
            )
        )
    if facts.etc_read_only:
        errors.append(SettingError("/etc", "is on a read-only filesystem: settings cannot persist"))
    for where, free in (("/etc", facts.etc_free_kb), ("/var/lib", facts.varlib_free_kb)):
        if free is not None and free < MIN_FREE_KB:
            errors.append(SettingError(where, f"its filesystem is full ({free} KiB free)"))
    return errors
