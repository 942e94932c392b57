"""Converge the CAKE root qdisc of an interface."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from conntune.cake import tc_arguments
from conntune.cake_options import needs_recreate
from conntune.changes import cake_change
from conntune.facts.host import read_host
from conntune.operations.commands import show_diff
from conntune.operations.hostlock import locked
from conntune.plan import CakePlan


@operation()
def cake_qdisc(
    interface: str,
    bandwidth_bit: int,
    diffserv: str = "besteffort",
    kind: str = "cake",
    options: dict | None = None,
    lock: dict | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Make CAKE the root qdisc of an interface, shaped to a rate.

    + interface: the egress NIC
    + bandwidth_bit: the shaped rate in bit/s (``tc -j`` reports it back in bytes/s)
    + diffserv: ``besteffort``, ``diffserv3``, ``diffserv4``, ``diffserv8`` or ``precedence``
    + kind: ``cake``, or ``cake_mq`` (one CAKE per TX queue, kernels 7.x)
    + options: more CAKE options (``conntune.plan.CakePlan`` fields: flowmode, nat, wash,
      ack_filter, split_gso, rtt, overhead, mpu); each one not given is CAKE's default
    + lock: the host lock this run holds (``conntune.operations.hostlock``), or ``None``

    **Example:**

    .. code:: python

        cake_qdisc(name="CAKE on eth0", interface="eth0", bandwidth_bit=1_000_000_000)
    """
    cake = CakePlan(interface, bandwidth_bit, **{"diffserv": diffserv, "kind": kind,
                                                 **(options or {})})  # fmt: skip
    facts = read_host(host)
    change = cake_change(facts, cake)
    if change is None:
        host.noop(f"{interface} already has {cake.describe()} and every planned option")
        return
    show_diff([str(change)])
    replace = StringCommand("tc", *(QuoteString(arg) for arg in tc_arguments(cake)))
    if needs_recreate(facts.root_qdisc(interface), cake):  # an mpu that replace cannot clear
        delete = StringCommand("tc", "qdisc", "del", "dev", QuoteString(interface), "root")
        replace = StringCommand(delete, "&&", replace)
    yield locked(replace, lock)


@operation()
def cake_qdisc_absent(
    interface: str, lock: dict | None = None
) -> Generator[StringCommand, None, None]:
    """
    Remove a CAKE root qdisc: the interface falls back to the kernel's default qdisc.

    + interface: the NIC whose root qdisc conntune set
    + lock: the host lock this run holds (``conntune.operations.hostlock``), or ``None``

    **Example:**

    .. code:: python

        cake_qdisc_absent(name="Remove CAKE from eth0", interface="eth0")
    """
    qdisc = read_host(host).root_qdisc(interface)
    if qdisc is None or not qdisc.is_cake:
        host.noop(f"{interface} has no CAKE root qdisc")
        return
    show_diff([f"qdisc root dev {interface}: {qdisc.kind} → (kernel default)"])
    yield locked(StringCommand("tc", "qdisc", "del", "dev", QuoteString(interface), "root"), lock)
