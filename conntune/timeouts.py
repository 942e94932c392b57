"""
Planning the conntrack timeouts: the profile plus single overrides, minus what this host cannot
take (a knob its kernel lacks, a read-only /proc/sys) and what another party keeps.
"""

from __future__ import annotations

from conntune import paths, profiles
from conntune.hostfacts import HostFacts
from conntune.plan import Conflict, Plan
from conntune.settings import Settings

# Where a container's conntrack timeouts are set when its own /proc/sys is read-only
RUNTIME_SYSCTL_OPTIONS = (
    "`docker run --sysctl net.netfilter.nf_conntrack_...=N`, LXC `lxc.sysctl.*`, "
    "Kubernetes `securityContext.sysctls`"
)


def read_only_reason(facts: HostFacts, key: str) -> str:
    userns = facts.userns_net_blocked()
    if userns is not None:
        return userns
    mount = facts.mount_covering("/proc/sys/" + key.replace(".", "/"))
    if mount is not None and mount.read_only:
        return f"{mount.mountpoint} is mounted read-only here (an unprivileged container?)"
    return "they are read-only here"


def plan_timeouts(
    facts: HostFacts,
    s: Settings,
    out: Plan,
    conflicts: dict[str, Conflict],
    released: dict[str, int] | None = None,
) -> None:
    """
    The profile plus the overrides; ``released`` (``original.released_timeouts``) are the
    timeouts conntune set before and no longer asked for, each with its value before conntune.
    """
    wanted = {**profiles.PROFILES[s.conntrack_timeout_profile], **s.conntrack_timeouts}
    released = {k: v for k, v in (released or {}).items() if k not in wanted}
    wanted.update(released)
    if facts.conntrack_loaded:
        for key in [key for key in wanted if key not in facts.sysctls]:
            out.warnings.append(f"{key} does not exist on this kernel: skipped")
            del wanted[key]
        read_only = [key for key in wanted if not facts.knob_writable(key)]
        if read_only:
            why = read_only_reason(facts, read_only[0])
            out.warnings.append(
                f"the conntrack timeouts cannot be set here: {why}; "
                f"{len(read_only)} left alone. Set them on the host, or with the container "
                f"runtime's sysctl option ({RUNTIME_SYSCTL_OPTIONS})"
            )
            for key in read_only:
                del wanted[key]
    elif not facts.conntrack_loadable:
        out.warnings.append(
            "nf_conntrack is not loaded in this kernel and cannot be loaded from here: "
            "timeouts skipped"
        )
        return
    for key, conflict in conflicts.items():
        if key in wanted and conflict.wins:
            del wanted[key]
    out.timeouts = wanted
    for key in [key for key in released if key in wanted]:
        out.reasons.append(
            f"{key}: no longer asked for; back to {released[key]}, its value before conntune "
            f"first set it (recorded in {paths.ORIGINAL_FILE}; `conntune revert` drops it)"
        )
    if wanted:
        overrides = (
            f", {len(s.conntrack_timeouts)} set by conntrack_timeouts"
            if s.conntrack_timeouts
            else ""
        )
        out.reasons.append(
            f"timeouts: profile {s.conntrack_timeout_profile!r}{overrides} "
            f"({len(wanted)} values; `conntune profiles` lists them)"
        )
    else:
        out.reasons.append(
            f"timeouts: profile {s.conntrack_timeout_profile!r} leaves every timeout as it is"
        )
