"""
The one module that imports ``pyinfra.api``. pyinfra 4 will change this API (``connect_all`` is
already ``async`` upstream); when it does, this file is the only one to port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.api import (
    FactBase,
    FunctionCommand,
    OperationError,
    QuoteString,
    StringCommand,
    deploy,
    operation,
)

if TYPE_CHECKING:
    from pyinfra.api.host import Host

    from conntune.hostfacts import HostFacts

__all__ = [
    "FactBase",
    "FunctionCommand",
    "OperationError",
    "QuoteString",
    "StringCommand",
    "deploy",
    "forget_host_facts",
    "operation",
    "read_host",
]

_CACHE_ATTRIBUTE = "_conntune_host_facts"


def read_host(host: Host, fresh: bool = False) -> HostFacts:
    """
    The host's ``ConntuneHost`` fact, read once per run.

    pyinfra 3.10 has no fact cache: every ``host.get_fact`` is a remote command, and operation
    bodies run twice (change detection, then execution). conntune's operations each look at a
    different part of one reading, and no operation changes what a later one reads, so one
    reading per host serves the whole run. ``fresh=True`` re-reads (after a firewalld restart).
    """
    from facts.conntune import ConntuneHost

    cached = getattr(host, _CACHE_ATTRIBUTE, None)
    if cached is None or fresh:
        cached = host.get_fact(ConntuneHost)
        setattr(host, _CACHE_ATTRIBUTE, cached)
    return cached


def forget_host_facts(host: Host) -> None:
    if hasattr(host, _CACHE_ATTRIBUTE):
        delattr(host, _CACHE_ATTRIBUTE)
