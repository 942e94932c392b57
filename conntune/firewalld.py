"""
When conntune may restart firewalld, and what the restart does to the conntrack table
(docs/kernel-facts.md §6 and §8).
"""

from __future__ import annotations

from conntune.hostfacts import HostFacts
from conntune.plan import Plan
from conntune.settings import Settings

# CVE-2025-54388: Docker before 28.3.3 did not restore its isolation rules after a firewalld
# reload (docs/kernel-facts.md §6)
DOCKER_FIXED = (28, 3, 3)


def _why_it_unloads(facts: HostFacts) -> str:
    fw = facts.firewalld
    version = fw.version_text or "of unknown version"
    if fw.version is None:
        return f"firewalld {version} may unload nf_conntrack on restart (its version is unknown)"
    if fw.version < (1, 0):
        return f"firewalld {version} (before 1.0, CleanupOnExit) unloads nf_conntrack on restart"
    return f"firewalld {version} with CleanupModulesOnExit=yes unloads nf_conntrack on restart"


def plan_firewalld(facts: HostFacts, s: Settings, out: Plan) -> None:
    """Whether a firewalld restart is allowed here, and whether it flushes the table."""
    if not facts.firewalld.active or s.firewalld_restart == "never":
        return
    unloads = facts.firewalld.restart_unloads_conntrack
    if unloads is not False:
        entries = facts.conntrack_count
        held = f" ({entries} tracked connections now, NAT mappings included)" if entries else ""
        flush = (
            f"{_why_it_unloads(facts)}: every tracked connection is flushed{held} and "
            "nf_conntrack_max and the timeouts fall back to the kernel defaults"
        )
        if s.firewalld_restart == "on-change":
            out.firewalld_restart_blocked = (
                f"{flush}; conntune does not restart it: the live values are set directly and "
                "the files act at boot (firewalld_restart: always restarts anyway)"
            )
            out.reasons.append(f"firewalld: not restarted. {out.firewalld_restart_blocked}")
        else:
            out.firewalld_restart_flushes = True
            out.warnings.append(
                f"firewalld_restart: always: {flush}; conntune sets the live values again "
                "once the module is back"
            )
    docker = facts.docker
    if docker is None:
        return
    out.verify_docker_chains = docker.chains
    if (
        docker.version is not None
        and docker.version < DOCKER_FIXED
        and not (s.firewalld_restart_old_docker)
    ):
        out.firewalld_restart_blocked = (
            f"{docker.version_text} is older than 28.3.3 (CVE-2025-54388: container isolation "
            "rules are not restored after a firewalld reload); firewalld is not restarted. "
            "Upgrade Docker, or set firewalld_restart_old_docker: true and restart Docker after"
        )
        out.warnings.append(out.firewalld_restart_blocked)


def check_config_refusal(found: str, cause: str | None = None) -> str:
    """
    What conntune says when ``firewall-cmd --check-config`` refuses firewalld's configuration
    (``found``: the check's messages) on a run that would restart firewalld: ``cause`` is why
    the restart was planned when the check runs beforehand (a dry run too), ``None`` when the
    restart step's own check refused it (the configuration broke during the run). Either way
    the restart is skipped, since firewalld would not start again; the conntrack values are
    still set, so the table is never left undersized for a firewall problem; the host fails
    until the configuration is fixed.
    """
    found = " ".join(found.split())[-300:]
    if cause is not None:
        return (
            f"firewalld will not be restarted ({cause}): `firewall-cmd --check-config` fails "
            f"({found}); a restart would leave the host without its firewall. conntune sets the "
            "conntrack values without it and fails this host until firewalld's configuration "
            "is fixed"
        )
    return (
        f"firewalld not restarted: `firewall-cmd --check-config` fails ({found}); a restart "
        "would leave the host without its firewall. The conntrack values are set; fix "
        "firewalld's configuration and run again"
    )
