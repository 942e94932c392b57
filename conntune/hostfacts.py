"""What conntune knows about one host: the input of the policy, filled in by the host fact."""

from __future__ import annotations

from dataclasses import dataclass, field

from facts.parse import ConfLine, root_qdisc

MAX_KEY = "net.netfilter.nf_conntrack_max"
BUCKETS_KEY = "net.netfilter.nf_conntrack_buckets"
COUNT_KEY = "net.netfilter.nf_conntrack_count"


@dataclass(frozen=True)
class Interface:
    name: str
    speed_mbit: int | None
    operstate: str | None
    carrier: bool | None


@dataclass(frozen=True)
class Firewalld:
    installed: bool
    active: bool
    enabled: bool
    version: str | None = None
    cleanup_modules_on_exit: str | None = None


@dataclass
class HostFacts:
    """
    One combined reading of a host. ``None`` means "could not read" (absent, or not permitted);
    ``unreadable`` says which readings were missing and why, for the operator.
    """

    # False when the reading did not run to its end (the command failed or was cut off)
    complete: bool = False
    uid: int | None = None
    kernel: str | None = None
    mem_bytes: int | None = None
    cpus: int | None = None
    default_iface: str | None = None
    interfaces: dict[str, Interface] = field(default_factory=dict)
    ethtool_speed_mbit: int | None = None
    qdiscs: list[dict] = field(default_factory=list)
    tc_path: str | None = None
    cake_available: bool = False
    conntrack_loaded: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    hashsize: int | None = None
    sizing_writable: bool | None = None
    buckets_writable: bool | None = None
    stats: dict[str, int] = field(default_factory=dict)
    slab_objsize: int | None = None
    table_full_lines: list[str] = field(default_factory=list)
    modprobe_options: list[ConfLine] = field(default_factory=list)
    sysctl_file_lines: list[ConfLine] = field(default_factory=list)
    firewalld: Firewalld = field(default_factory=lambda: Firewalld(False, False, False))
    systemd: bool = False
    sysctl_path: str | None = "/usr/sbin/sysctl"
    conntrack_loadable: bool = True
    etc_read_only: bool = False
    etc_free_kb: int | None = None
    varlib_free_kb: int | None = None
    docker_version: str | None = None
    docker_chains: bool = False
    kube_proxy: bool = False
    cilium: bool = False
    owned_files: dict[str, str | None] = field(default_factory=dict)
    cake_unit_enabled: bool = False
    unreadable: list[str] = field(default_factory=list)

    def sysctl_int(self, key: str) -> int | None:
        value = self.sysctls.get(key)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    @property
    def conntrack_max(self) -> int | None:
        return self.sysctl_int(MAX_KEY)

    @property
    def conntrack_count(self) -> int | None:
        return self.sysctl_int(COUNT_KEY)

    @property
    def buckets(self) -> int | None:
        """The live hash size: the module parameter when readable (root), else the sysctl."""
        return self.hashsize if self.hashsize is not None else self.sysctl_int(BUCKETS_KEY)

    def link_speed_mbit(self, iface: str | None) -> int | None:
        """Link speed of ``iface``: sysfs first, ethtool for the default interface as a fallback."""
        if iface is None:
            return None
        known = self.interfaces.get(iface)
        if known and known.speed_mbit:
            return known.speed_mbit
        if iface == self.default_iface:
            return self.ethtool_speed_mbit
        return None

    def root_qdisc(self, iface: str) -> dict | None:
        return root_qdisc(self.qdiscs, iface)
