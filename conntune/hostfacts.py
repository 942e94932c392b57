"""
What conntune knows about one host: the typed input of the policy.

``conntune.facts.reading`` fills a ``HostFacts`` from one host reading; every field is parsed
there, once, and nothing downstream parses text again. ``None`` means "could not be read" (absent,
or not permitted); ``HostFacts.unreadable`` says which readings were missing and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from conntune.qdisc import Qdisc

MAX_KEY = "net.netfilter.nf_conntrack_max"
BUCKETS_KEY = "net.netfilter.nf_conntrack_buckets"
COUNT_KEY = "net.netfilter.nf_conntrack_count"
# include/uapi/linux/capability.h
CAP_NET_ADMIN = 12
CAP_SYS_MODULE = 16
# The hash size module parameter: the one place the kernel calls the buckets "hashsize"
HASHSIZE_PARAMETER = "/sys/module/nf_conntrack/parameters/hashsize"


@dataclass(frozen=True)
class Interface:
    """A network device as /sys/class/net shows it."""

    name: str
    speed_mbit: int | None = None
    operstate: str | None = None
    carrier: bool | None = None
    tx_queues: int | None = None
    # DEVTYPE of the device's uevent: "bond", "vlan", "bridge", "wlan"...; None for a plain NIC
    kind: str | None = None
    # bond members, a VLAN's parent device, a bridge's ports
    lower: tuple[str, ...] = ()
    # a device on a bus (a NIC; sysfs "device" link), not a veth, tap, bridge or bond; None:
    # not in the reading (before conntune 0.3)
    physical: bool | None = None

    @property
    def placeholder_speed(self) -> bool:
        """
        Whether ``speed_mbit`` is a driver's fixed answer rather than a link rate: a device on
        no bus and over no other device. tun/tap always say 10 Mbit/s (drivers/net/tun.c,
        ``tun_get_link_ksettings``: ``SPEED_10``), veth 10 Gbit/s (drivers/net/veth.c,
        ``veth_get_link_ksettings``: ``SPEED_10000``), whatever carries their packets. Bonds,
        VLANs and macvlans derive theirs from the devices under them.
        """
        return (
            self.speed_mbit is not None
            and self.physical is False
            and not self.lower
            and self.kind != "bond"
        )


@dataclass(frozen=True)
class Route:
    """One default route: its devices (several for ECMP next hops) and its metric."""

    family: int  # 4 or 6
    devices: tuple[str, ...]
    metric: int = 0
    via: str | None = None


@dataclass(frozen=True)
class Mount:
    """A /proc/mounts entry that may cover a knob conntune writes."""

    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


@dataclass(frozen=True)
class SysctlLine:
    """
    One line of a sysctl.d file (or /etc/sysctl.conf) that sets a conntrack knob, in whatever
    spelling systemd-sysctl and procps accept: ``key`` is the canonical ``net.netfilter...``
    name it sets (a glob when the line uses one), ``value`` the text after ``=``.
    """

    path: str
    lineno: int
    text: str
    key: str
    value: str
    ignore_errors: bool = False  # the line starts with "-"
    name: str = ""  # the key as written, with "." separators (a legacy name stays legacy)

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.text}"


@dataclass(frozen=True)
class ModprobeLine:
    """
    An ``options``/``install``/``softdep`` line for nf_conntrack in a modprobe.d file, or an
    ``nf_conntrack.PARAM=`` word of the kernel command line (``path`` is /proc/cmdline).
    ``parameters`` maps each name to its value (``None`` when the word has no ``=``);
    ``problem`` says why the kernel would refuse the line, if it would.
    """

    path: str
    lineno: int
    text: str
    directive: str
    parameters: dict[str, str | None] = field(default_factory=dict)
    problem: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.text}"


@dataclass(frozen=True)
class Firewalld:
    installed: bool = False
    active: bool = False
    enabled: bool = False
    version: tuple[int, ...] | None = None
    version_text: str | None = None
    # CleanupOnExit= and CleanupModulesOnExit= of firewalld.conf; None when not set there
    cleanup_on_exit: bool | None = None
    cleanup_modules_on_exit: bool | None = None

    @property
    def restart_unloads_conntrack(self) -> bool | None:
        """
        Whether ``systemctl restart firewalld`` unloads nf_conntrack (flushing every entry and
        putting the sysctls back to the kernel defaults). ``None`` when the version is unknown.

        Before 1.0 firewalld unloads the modules it used on stop unless ``CleanupOnExit=no``
        (src/firewall/core/fw.py ``stop()`` at v0.9.3: the unload sits inside ``if
        self.cleanup_on_exit``). 1.0 added ``CleanupModulesOnExit``, default ``no``, checked on
        its own, whatever ``CleanupOnExit`` says (``stop()`` at v1.0.0 and since; firewalld PR
        #721, issue #533; measured: 0.9.3 unloads, 1.3.3 and 2.5.2 keep, 1.3.3 with ``=yes``
        unloads).
        """
        if not self.installed:
            return False
        if self.version is None:  # keeps them only if it keeps them under either rule
            keeps = self.cleanup_on_exit is False and not self.cleanup_modules_on_exit
            return False if keeps else None
        if self.version < (1, 0):
            return self.cleanup_on_exit is not False
        return bool(self.cleanup_modules_on_exit)


@dataclass(frozen=True)
class ConntrackStats:
    """Conntrack counters summed over CPUs, and where they were read from (``None``: nowhere)."""

    counters: dict[str, int] = field(default_factory=dict)
    source: str | None = None

    def get(self, name: str) -> int | None:
        if self.source is None:
            return None
        if name == "chaintoolong" and name not in self.counters:
            # /proc/net/stat prints the chaintoolong counter under "chainlength" (5.15+)
            return self.counters.get("chainlength")
        return self.counters.get(name)


@dataclass(frozen=True)
class Docker:
    version: tuple[int, ...] | None
    version_text: str
    chains: bool = False


@dataclass(frozen=True)
class Tools:
    """The commands conntune needs on the host (their paths), and what ``tc`` can do."""

    sysctl: str | None = None
    modprobe: str | None = None
    systemctl: str | None = None
    tc: str | None = None
    conntrack: str | None = None
    flock: str | None = None  # util-linux or busybox flock(1): the host lock needs it
    tc_version: str | None = None
    # tc parses "cake" / "cake_mq" options (iproute2 4.20+ / 7.3+); None: not checked
    tc_cake: bool | None = None
    tc_cake_mq: bool | None = None


@dataclass(frozen=True)
class Lease:
    """
    The host lock's lease (``/run/conntune/lease``: ``holder expires generation last``): who is
    converging the host until when, and how many converging runs have finished on it.
    """

    holder: str | None = None
    expires: int = 0
    generation: int = 0
    last: str | None = None


@dataclass
class HostFacts:
    """One combined reading of a host."""

    # False when the reading did not run to its end (the command failed or was cut off)
    complete: bool = False
    format: int = 2
    uid: int | None = None
    # the reading process's effective capabilities (CapEff of /proc/self/status) and the first
    # line of its /proc/self/uid_map; None: not in the reading (before this section existed)
    cap_eff: int | None = None
    uid_map: tuple[int, int, int] | None = None
    kernel: str | None = None
    mem_bytes: int | None = None
    cpus: int | None = None
    routes: list[Route] = field(default_factory=list)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    # None: `tc -j qdisc show` did not answer (no tc, or a tc without JSON)
    qdiscs: list[Qdisc] | None = field(default_factory=list)
    cake_available: bool = False
    cake_mq_available: bool = False
    tools: Tools = field(default_factory=Tools)
    conntrack_loaded: bool = False
    conntrack_loadable: bool = True
    sysctls: dict[str, int] = field(default_factory=dict)
    # mode bits of each /proc/sys/net/netfilter/* file, by path
    sysctl_modes: dict[str, int] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    hashsize: int | None = None
    stats: ConntrackStats = field(default_factory=ConntrackStats)
    slab_objsize: int | None = None
    table_full_lines: list[str] = field(default_factory=list)
    table_full_last: str | None = None  # the newest line's timestamp, as the log printed it
    table_full_readable: bool = True
    modprobe_lines: list[ModprobeLine] = field(default_factory=list)
    sysctl_lines: list[SysctlLine] = field(default_factory=list)
    firewalld: Firewalld = field(default_factory=Firewalld)
    systemd: bool = False
    etc_read_only: bool = False
    etc_free_kb: int | None = None
    varlib_free_kb: int | None = None
    docker: Docker | None = None
    kube_proxy: bool = False
    cilium: bool = False
    owned_files: dict[str, str | None] = field(default_factory=dict)
    cake_unit_enabled: bool = False
    lease: Lease = field(default_factory=Lease)
    # the counters and "table full" line count when conntune last changed the live values
    counters_at_change: ConntrackStats | None = None
    table_full_at_change: int | None = None
    # /proc/sys/kernel/random/boot_id now and when the counters were recorded: a different one
    # means the host rebooted since, so every counter now counts from after the change
    boot_id: str | None = None
    boot_id_at_change: str | None = None
    unreadable: list[str] = field(default_factory=list)

    @property
    def conntrack_max(self) -> int | None:
        return self.sysctls.get(MAX_KEY)

    @property
    def conntrack_count(self) -> int | None:
        return self.sysctls.get(COUNT_KEY)

    @property
    def buckets(self) -> int | None:
        """The live hash size: the module parameter when readable (root), else the sysctl."""
        return self.hashsize if self.hashsize is not None else self.sysctls.get(BUCKETS_KEY)

    def mount_covering(self, path: str) -> Mount | None:
        """The mount that ``path`` lives on: the longest mount point that is a prefix of it."""
        best: Mount | None = None
        for mount in self.mounts:
            point = mount.mountpoint.rstrip("/") or "/"
            inside = path == point or path.startswith(point + "/") or point == "/"
            if inside and (best is None or len(point) > len(best.mountpoint.rstrip("/") or "/")):
                best = mount
        return best

    @property
    def kernel_version(self) -> tuple[int, int] | None:
        """``(major, minor)`` of ``uname -r``; ``None`` when it does not start with them."""
        match = re.match(r"(\d+)\.(\d+)", self.kernel or "")
        return (int(match.group(1)), int(match.group(2))) if match else None

    def capable(self, cap: int) -> bool | None:
        """
        Whether root here holds capability ``cap`` (``CAP_*``), as the reading process did;
        ``None``: unknown, or the reading did not run as root (a run's writes do, with the
        capabilities root gets, so a user's empty set says nothing about them).
        """
        if self.cap_eff is None or self.uid != 0:
            return None
        return bool(self.cap_eff >> cap & 1)

    @property
    def in_user_namespace(self) -> bool | None:
        """Whether the reading ran in a user namespace other than the initial one, whose
        uid_map is the identity ``0 0 4294967295`` (user_namespaces(7)); ``None``: unknown."""
        return None if self.uid_map is None else self.uid_map != (0, 0, 4294967295)

    @property
    def module_load_blocked(self) -> str | None:
        """
        Why modules cannot be loaded from here, or ``None``: loading needs CAP_SYS_MODULE in
        the initial user namespace (kernel/module/main.c, may_init_module: ``capable()``), so
        neither a user-namespaced container nor one without that capability can.
        """
        if self.in_user_namespace:
            low, high, count = self.uid_map or (0, 0, 0)
            return (
                f"this is a user namespace (uid_map {low} {high} {count}): modules are loaded "
                "by the host's root only"
            )
        if self.capable(CAP_SYS_MODULE) is False:
            return "this process has no CAP_SYS_MODULE (a container without it)"
        proc_sys = self.mount_covering("/proc/sys")
        if self.cap_eff is None and proc_sys is not None and proc_sys.read_only:
            # a reading without capabilities: only containers mount /proc/sys read-only
            # (runc's readonlyPaths, systemd-nspawn, LXC proc:mixed), none with CAP_SYS_MODULE
            return f"{proc_sys.mountpoint} is mounted read-only: a container"
        return None

    @property
    def shares_host_network_namespace(self) -> bool | None:
        """
        Whether the reading ran in the host's (initial) network namespace: nf_conntrack
        registers the ``net.nf_conntrack_max`` alias there only (nf_conntrack_standalone.c,
        nf_conntrack_standalone_init: ``register_net_sysctl(&init_net, "net", ...)``).
        ``None`` when nf_conntrack is not loaded (no alias either way).
        """
        if MAX_KEY not in self.sysctls:
            return None
        return "net.nf_conntrack_max" in self.sysctls

    def userns_net_blocked(self, tc: bool = False) -> str | None:
        """
        Why root here cannot write this network namespace's sysctls (``tc``: change its
        qdiscs), or ``None``. A sysctl is written by the mode bits alone by the host's root, the
        global root uid (fs/proc/proc_sysctl.c, test_perm), which a user namespace mapping 0 to
        0 still is; any other root needs CAP_NET_ADMIN over the user namespace owning the network
        namespace (net/sysctl_net.c, net_ctl_permissions), which it never has over the host's.
        tc always needs that capability (netlink_ns_capable in rtnetlink and sch_api).
        """
        if not self.in_user_namespace:
            return None
        global_root = self.uid_map is not None and self.uid_map[:2] == (0, 0)
        if self.shares_host_network_namespace and (tc or not global_root):
            return (
                "this is a user namespace in the host's network namespace (rootless Podman or "
                "Docker with host networking): only the host's root may change it"
            )
        if not global_root and self.capable(CAP_NET_ADMIN) is False:
            return "this user namespace's root has no CAP_NET_ADMIN"
        return None

    def knob_writable(self, key: str) -> bool:
        """
        Whether root can write a ``net.*`` sysctl here. A knob that does not exist is never
        writable, nor one of a network namespace a user namespace's root may not change
        (``userns_net_blocked``). Outside the initial network namespace the kernel registers
        the table knobs 0444 (nf_conntrack_standalone.c, nf_conntrack_standalone_init_sysctl)
        and a user namespace hides them altogether; root obeys those mode bits
        (proc_sys_permission); and a read-only mount over /proc/sys or /proc/sys/net
        (containers) refuses every write.
        """
        if key not in self.sysctls or self.userns_net_blocked() is not None:
            return False
        path = "/proc/sys/" + key.replace(".", "/")
        mode = self.sysctl_modes.get(path)
        if mode is not None and not mode & 0o200:
            return False
        mount = self.mount_covering(path)
        return not (mount is not None and mount.read_only)

    @property
    def default_routes(self) -> list[Route]:
        """The preferred default route of each family: the lowest metric (ties kept)."""
        preferred: list[Route] = []
        for family in (4, 6):
            routes = [route for route in self.routes if route.family == family]
            if routes:
                best = min(route.metric for route in routes)
                preferred += [route for route in routes if route.metric == best]
        return preferred

    @property
    def default_interfaces(self) -> list[str]:
        """Every device a preferred default route leaves through, in order, without repeats."""
        devices: list[str] = []
        for route in self.default_routes:
            devices += [device for device in route.devices if device not in devices]
        return devices

    @property
    def default_iface(self) -> str | None:
        """The one egress device, or ``None`` when there is none or several."""
        devices = self.default_interfaces
        return devices[0] if len(devices) == 1 else None

    def link_speed_mbit(self, name: str | None) -> int | None:
        """
        A device's speed: what it reports, else for a bond the sum of its members that are up
        (the bonding driver's own rule, bond_main.c bond_ethtool_get_link_ksettings), and for a
        VLAN its parent's. ``None`` when unknown, or only a placeholder (``placeholder_speed``).
        """
        interface = self.interfaces.get(name or "")
        if interface is None or interface.placeholder_speed:
            return None
        if interface.speed_mbit:
            return interface.speed_mbit
        members = [self.interfaces.get(lower) for lower in interface.lower]
        if interface.kind == "bond":
            speeds = [
                m.speed_mbit for m in members if m and m.speed_mbit and m.carrier is not False
            ]
            return sum(speeds) or None
        if interface.kind == "vlan" and len(members) == 1 and members[0]:
            return self.link_speed_mbit(members[0].name)
        return None

    def bridge_uplinks(self, name: str) -> list[str] | None:
        """
        A bridge's ports that can lead off the host: NICs, bonds and VLANs (a bond or a VLAN
        over NICs), not the veths and taps of its containers and VMs. ``None`` when the reading
        does not say which ports are NICs.
        """
        bridge = self.interfaces.get(name)
        if bridge is None:
            return None
        ports = [self.interfaces.get(port) for port in bridge.lower]
        if any(port is None or port.physical is None for port in ports):
            return None
        return [
            port.name for port in ports
            if port and (port.physical or port.kind in ("bond", "vlan"))
        ]  # fmt: skip

    def root_qdisc(self, dev: str) -> Qdisc | None:
        for qdisc in self.qdiscs or []:
            if qdisc.dev == dev and qdisc.root:
                return qdisc
        return None
