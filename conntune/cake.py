"""
Planning the CAKE qdisc on the egress interface, and the one builder of its ``tc`` arguments
(the live operation and the persisted unit both use ``tc_arguments``). Sources:
docs/kernel-facts.md §5, tc-cake(8), iproute2 tc/q_cake.c.
"""

from __future__ import annotations

from conntune import cake_options, paths
from conntune.hostfacts import CAP_NET_ADMIN, HostFacts
from conntune.plan import CakePlan, Plan
from conntune.qdisc import Qdisc
from conntune.settings import SettingError, Settings
from conntune.units import TC_MIN_RATE_BIT, format_rate


def tc_arguments(cake: CakePlan, verb: str = "replace") -> list[str]:
    """``tc`` arguments that make ``cake`` the root qdisc (without the ``tc`` itself)."""
    return [
        "qdisc", verb, "dev", cake.interface, "root", cake.kind,
        "bandwidth", f"{cake.bandwidth_bit}bit", cake.diffserv, *cake_options.tokens(cake),
    ]  # fmt: skip


def matches(qdisc: Qdisc | None, cake: CakePlan) -> bool:
    """Whether a root qdisc as ``tc -j`` reports it is the planned CAKE, every option."""
    return not cake_options.differences(qdisc, cake)


# One CAKE instance shapes on one CPU behind one qdisc lock: about 2.5-3 Gbit/s per instance
# (LibreQoS issue #127, measured per instance; sqm-scripts issue #116 on shaping a multi-queue
# root). Above this rate conntune does not put a single-queue CAKE in front of a device.
SINGLE_INSTANCE_LIMIT_BIT = 2_500_000_000


def _skip(out: Plan, why: str) -> None:
    """CAKE is optional: a problem with it skips CAKE alone, never the conntrack part."""
    out.warnings.append(f"CAKE skipped: {why}")


def _interface(facts: HostFacts, s: Settings, out: Plan, errors: list[SettingError]) -> str | None:
    if s.cake_interface:
        if facts.interfaces and s.cake_interface not in facts.interfaces:
            errors.append(SettingError(
                "cake_interface", f"interface {s.cake_interface!r} does not exist on this host"
            ))  # fmt: skip
            return None
        return s.cake_interface
    devices = facts.default_interfaces
    if not devices:
        _skip(out, "the host has no default route: set cake_interface to the uplink to shape")
        return None
    if len(devices) > 1:
        _skip(out, f"the default routes leave through {len(devices)} devices ("
                   f"{', '.join(devices)}): set cake_interface to the one to shape")  # fmt: skip
        return None
    device = facts.interfaces.get(devices[0])
    if device is not None and device.kind == "bridge":
        return _bridge_uplink(facts, out, devices[0])
    return devices[0]


def _bridge_uplink(facts: HostFacts, out: Plan, bridge: str) -> str | None:
    """
    Traffic a bridge forwards (its VMs', its containers') leaves through the uplink port
    without passing the bridge's own root qdisc, which sees only what the host itself sends
    (net/bridge/br_forward.c queues forwarded frames on the port); CAKE goes on that port.
    """
    uplinks = facts.bridge_uplinks(bridge)
    if uplinks is None:
        _skip(out, f"the default route leaves through the bridge {bridge}, and the reading does "
                   "not say which port is the uplink: set cake_interface to it")  # fmt: skip
        return None
    if len(uplinks) != 1:
        found = f"{len(uplinks)} ({', '.join(uplinks)})" if uplinks else "no NIC, bond or VLAN"
        _skip(out, f"the default route leaves through the bridge {bridge}, which has {found} "
                   "among its ports: set cake_interface to the uplink to shape")  # fmt: skip
        return None
    out.reasons.append(
        f"the default route leaves through the bridge {bridge}: CAKE on its uplink port "
        f"{uplinks[0]}, where the traffic it bridges (VMs, containers) leaves too"
    )
    return uplinks[0]


def _tools_problem(facts: HostFacts) -> str | None:
    tools = facts.tools
    if not facts.cake_available:
        return (
            "sch_cake is not available in this kernel (no module, not built in: "
            "CONFIG_NET_SCH_CAKE, Linux 4.19+); install a kernel that has it"
        )
    if tools.tc is None:
        return "tc is not installed: install iproute2"
    if tools.tc_cake is False:
        return (
            f"this tc ({tools.tc_version or 'unknown version'}) does not know cake: "
            "install iproute2 4.20 or newer"
        )
    if facts.qdiscs is None:
        return (
            "the qdiscs are unreadable (`tc -j qdisc show` did not answer JSON): upgrade iproute2"
        )
    # tc's requests need CAP_NET_ADMIN over the network namespace's owner, root or not
    # (net/core/rtnetlink.c and net/sched/sch_api.c: netlink_ns_capable)
    userns = facts.userns_net_blocked(tc=True)
    if userns is not None:
        return f"{userns}: tc cannot set a qdisc here; set CAKE on the host"
    if facts.capable(CAP_NET_ADMIN) is False:
        return (
            "this process has no CAP_NET_ADMIN, which tc needs to set a qdisc (a container "
            "without it: set CAKE on the host, or add the capability)"
        )
    return None


def plan_cake(facts: HostFacts, s: Settings, out: Plan, errors: list[SettingError]) -> None:
    """CAKE on the egress device at its link speed, or skipped with the setting to set."""
    if not s.cake:
        return
    iface = _interface(facts, s, out, errors)
    if iface is None:
        return
    problem = _tools_problem(facts)
    if problem:
        _skip(out, problem)
        return
    device = facts.interfaces.get(iface)
    if device is not None and device.carrier is False:
        _skip(out, f"{iface} has no carrier (link down); set cake_interface to a device that is up")
        return
    speed = facts.link_speed_mbit(iface)
    bandwidth = s.cake_bandwidth.resolve(speed) if s.cake_bandwidth is not None else None
    if s.cake_bandwidth is not None and bandwidth is None:
        _skip(
            out,
            f"cake_bandwidth {s.cake_bandwidth} is a share of the link speed, and the speed of "
            f"{iface} is unknown: set cake_bandwidth to a rate, e.g. '950mbit'",
        )
        return
    if bandwidth is not None:
        if bandwidth < TC_MIN_RATE_BIT:  # a share of the link can resolve below it
            errors.append(SettingError("cake_bandwidth", (
                f"{s.cake_bandwidth} of {iface}'s {speed} Mbit/s is {bandwidth} bit/s: below 8bit "
                "tc would store 0 bytes/s, which CAKE reads as unlimited"
            )))  # fmt: skip
            return
        kept = bandwidth - bandwidth % 8
        why = f"CAKE on {iface}: {format_rate(kept)} set by cake_bandwidth ({s.cake_bandwidth})" + (
            "" if kept == bandwidth else ", floored to whole bytes per second as tc keeps it"
        )
        if speed is not None and bandwidth > speed * 10**6:
            out.warnings.append(
                f"cake_bandwidth {format_rate(bandwidth)} is above the link speed of {iface} "
                f"({speed} Mbit/s): the queue will build in the NIC, not in CAKE"
            )
    elif speed is None:
        if device is not None and device.placeholder_speed:
            what = f"{device.kind} device" if device.kind else "virtual device (veth?)"
            _skip(out, (
                f"{iface} is a {what} on no NIC: the {device.speed_mbit} Mbit/s it reports is its "
                "driver's fixed answer, not the rate of the link that carries its packets: set "
                "cake_bandwidth to that rate, e.g. '100mbit'"
            ))  # fmt: skip
            return
        _skip(out, f"the link speed of {iface} is unknown (a virtual NIC?): set cake_bandwidth, "
                   "e.g. '1gbit'")  # fmt: skip
        return
    else:
        bandwidth = speed * 10**6
        why = (
            f"CAKE on {iface}: {format_rate(bandwidth)}, the link speed the NIC reports (the "
            "blog's 1024mbit on 1 GbE was above line rate)"
        )
    # a rate that is not a multiple of 8 bit/s would read back lower and drift on every run
    bandwidth -= bandwidth % 8
    kind = _kind(facts, s, out, iface, bandwidth)
    if kind is None:
        return
    out.cake = CakePlan(
        iface, bandwidth, s.cake_diffserv, kind, flowmode=s.cake_flow_isolation,
        nat=s.cake_nat, wash=s.cake_wash, ack_filter=s.cake_ack_filter,
        split_gso=s.cake_split_gso, rtt=s.cake_rtt, overhead=s.cake_overhead, mpu=s.cake_mpu,
    )  # fmt: skip
    out.reasons.append(f"{why}, {s.cake_diffserv}, {kind}")
    out.reasons.append("CAKE options: " + "; ".join(cake_options.describe(out.cake)))


def _kind(facts: HostFacts, s: Settings, out: Plan, iface: str, bandwidth: int) -> str | None:
    """``cake_mq`` on a multi-queue device where kernel and tc have it, else one ``cake``."""
    device = facts.interfaces.get(iface)
    queues = device.tx_queues if device and device.tx_queues else 1
    has_mq = facts.cake_mq_available and facts.tools.tc_cake_mq is True
    if queues > 1 and has_mq:
        out.reasons.append(f"cake_mq: {iface} has {queues} TX queues, one CAKE instance each")
        return "cake_mq"
    if bandwidth <= SINGLE_INSTANCE_LIMIT_BIT:
        return "cake"
    if s.cake_force_single_queue:
        out.warnings.append(
            f"one CAKE instance at {format_rate(bandwidth)} (cake_force_single_queue): above "
            f"{format_rate(SINGLE_INSTANCE_LIMIT_BIT)} a single instance is CPU-bound and caps "
            "the host's throughput"
        )
        return "cake"
    missing = (
        "the kernel and tc have no cake_mq (Linux 7.x, iproute2 7.3)"
        if not has_mq
        else f"{iface} has a single TX queue"
    )
    limit = format_rate(SINGLE_INSTANCE_LIMIT_BIT)
    _skip(
        out,
        f"{format_rate(bandwidth)} is above what one CAKE instance shapes ({limit}: one CPU, "
        f"one lock) and {missing}; set cake_bandwidth lower, or cake_force_single_queue: true "
        "to accept the cap",
    )
    present = facts.root_qdisc(iface)
    owned = facts.owned_files.get(paths.CAKE_UNIT_FILE) is not None
    if present is not None and present.kind == "cake" and not owned:
        out.warnings.append(
            f"{iface} already has one CAKE instance as its root qdisc ({present.describe()}), "
            "which caps the host's throughput at what one CPU shapes; conntune leaves qdiscs it "
            f"did not set: `tc qdisc del dev {iface} root` restores the default"
        )
    return None
