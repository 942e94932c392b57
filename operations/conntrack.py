"""
Converge the live conntrack values: the hash size, ``nf_conntrack_max`` and the timeouts.

Operations read the host with the one shared reading (``conntune.facts.host.read_host``),
do nothing when the host already matches, and batch their writes into one remote command;
with ``--diff`` they print what they would change, old → new.
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation

from conntune.changes import Kind, live_changes
from conntune.facts.host import read_host
from conntune.operations.commands import live_command, show_diff
from conntune.operations.hostlock import locked


@operation()
def conntrack_live(
    sysctls: dict[str, int],
    buckets: int | None = None,
    load_module: bool = False,
    lock: dict | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Set the live conntrack values: the hash size first, then ``nf_conntrack_max``, then the
    timeouts (the table is resized in place and keeps its entries; the module is never reloaded).

    + sysctls: ``net.netfilter.*`` name -> value, written in this order
    + buckets: the hash size (``/sys/module/nf_conntrack/parameters/hashsize``), or ``None``
    + load_module: ``modprobe nf_conntrack`` first when it is not loaded
    + lock: the host lock this run holds (``conntune.operations.hostlock``), or ``None``

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
    show_diff(["nf_conntrack module: not loaded → loaded"] if load else [])
    show_diff([str(change) for change in changes])
    if load:  # values read before the module existed: write them all
        yield locked(live_command(sysctls, buckets, load=True, record=True), lock)
    else:
        new = {c.name: c.new for c in changes if c.kind is Kind.SYSCTL}
        buckets_changed = any(c.kind is Kind.BUCKETS for c in changes)
        yield locked(live_command(new, buckets if buckets_changed else None, record=True), lock)
