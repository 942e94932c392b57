"""
The conntune host fact: everything conntune needs to know about a host, in one remote command.

Facts need to be imported before use:

.. code:: python

    from facts.conntune import ConntuneHost
    state = host.get_fact(ConntuneHost)
"""

from __future__ import annotations

from typing_extensions import override

from conntune.hostfacts import HostFacts
from conntune.pyinfra_api import FactBase
from facts.host_state import SCRIPT, host_facts


class ConntuneHost(FactBase[HostFacts]):
    """
    Returns a ``HostFacts`` reading of the host: memory, CPUs, kernel, the default-route NIC and
    its speed, every qdisc, whether sch_cake is available, every ``nf_conntrack_*`` sysctl, the
    hash size, whether sizing is writable (initial netns or not), conntrack statistics, the slab
    object size, kernel-log "table full" lines, ``options nf_conntrack`` lines, firewalld's state
    and the content of the files conntune owns.

    .. code:: python

        HostFacts(mem_bytes=1031786496, cpus=2, default_iface="eth0", conntrack_max=65536, ...)

    Readings that are absent or not permitted (e.g. ``hashsize`` is root-only) are ``None`` and
    listed in ``HostFacts.unreadable``; the fact itself never fails on odd output.
    """

    # The output has no meaningful "empty" case: an empty reading still yields HostFacts.
    default = HostFacts
    shell_executable = "sh"

    @override
    def command(self) -> str:
        return SCRIPT

    @override
    def process(self, output: list[str]) -> HostFacts:
        return host_facts("\n".join(output))
