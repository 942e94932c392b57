"""
The conntune host fact: everything conntune needs to know about a host, in one remote command.

Facts need to be imported before use:

.. code:: python

    from conntune.facts.host import ConntuneHost
    facts = host.get_fact(ConntuneHost)
"""

from __future__ import annotations

from pyinfra.api import FactBase
from pyinfra.api.host import Host
from typing_extensions import override

from conntune.facts.reading import host_facts, reading_command
from conntune.hostfacts import HostFacts


class ConntuneHost(FactBase[HostFacts]):
    """
    Returns a ``HostFacts`` reading of the host: memory, CPUs, kernel, default routes and every
    network device with its speed and TX queues, every qdisc, what the kernel and ``tc`` know of
    CAKE, every ``nf_conntrack_*`` sysctl with its mode and the mounts over it, the hash size,
    conntrack statistics and their source, the slab object size, kernel-log "table full" lines,
    other sysctl and modprobe files that set conntrack knobs, firewalld's version and cleanup
    settings, Docker/kube-proxy/Cilium, the host lock and the content of the files conntune owns.

    .. code:: python

        HostFacts(mem_bytes=1031786496, cpus=2, routes=[Route(4, ("eth0",), ...)], ...)

    Readings that are absent or not permitted (e.g. ``hashsize`` is root-only) are ``None`` and
    listed in ``HostFacts.unreadable``; the fact itself never fails on odd output.
    """

    # The output has no meaningful "empty" case: an empty reading still yields HostFacts.
    default = HostFacts
    shell_executable = "sh"

    @override
    def command(self) -> str:
        return reading_command()

    @override
    def process(self, output: list[str]) -> HostFacts:
        return host_facts("\n".join(output))


_READING = "_conntune_reading"
# pyinfra asks for a sudo password with getpass() when sudo says it needs one
# (pyinfra/connectors/util.py, execute_command_with_sudo_retry); conntune never lets it hang
SUDO_PASSWORD_NEEDED = (
    "sudo asks for a password and conntune will not prompt for it: give _sudo_password in the "
    "host data, run pyinfra with --use-sudo-password, or let this user run sudo without one "
    "(NOPASSWD)"
)


def read_host(host: Host, fresh: bool = False) -> HostFacts:
    """
    The host's ``ConntuneHost`` fact, read once per run.

    pyinfra 3.10 has no fact cache: every ``host.get_fact`` is a remote command, and operation
    bodies run twice (change detection, then execution). conntune's operations each look at a
    different part of one reading, and no operation changes what a later one reads, so one
    reading per host serves the whole run. ``fresh=True`` re-reads (after a firewalld restart).

    A reading that fails (a wrong sudo password...) gives an incomplete ``HostFacts`` instead of
    failing the host inside pyinfra: during a dry run without a TTY pyinfra would stop every
    host to ask "continue?". The deploy fails that host itself (``guards.refuse``).
    """
    cached = getattr(host, _READING, None)
    if cached is None or fresh:
        try:
            cached = host.get_fact(ConntuneHost, _ignore_errors=True)
        except EOFError:  # pyinfra's sudo password prompt (getpass) with no terminal to ask on
            cached = HostFacts()
            cached.unreadable.append(SUDO_PASSWORD_NEEDED)
        setattr(host, _READING, cached)
    return cached


def cached_reading(host: Host) -> HostFacts | None:
    return getattr(host, _READING, None)


def remember_reading(host: Host, facts: HostFacts) -> None:
    setattr(host, _READING, facts)


def forget_reading(host: Host) -> None:
    if hasattr(host, _READING):
        delattr(host, _READING)
