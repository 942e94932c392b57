"""
The desired state of one host (``Plan``) and its parts. Data only: ``conntune.policy.plan``
fills it from the host facts and the settings; the operations converge the host to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conntune.hostfacts import MAX_KEY
from conntune.units import format_rate


@dataclass(frozen=True)
class CakePlan:
    """
    The CAKE root qdisc of one interface. ``kind`` is ``cake`` or ``cake_mq`` (multi-queue);
    the options are tc's (conntune.cake_options): ``rtt`` and ``overhead`` are a keyword or a
    number (µs, bytes).
    """

    interface: str
    bandwidth_bit: int
    diffserv: str = "besteffort"
    kind: str = "cake"
    flowmode: str = "triple-isolate"
    nat: bool = False
    wash: bool = False
    ack_filter: str = "disabled"
    split_gso: bool = True
    rtt: str | int = "internet"
    overhead: str | int = "raw"
    mpu: int | None = None

    @property
    def rate(self) -> str:
        return format_rate(self.bandwidth_bit)

    @property
    def options(self) -> dict:
        """Everything but the interface, the rate and the kind (an operation argument)."""
        return {key: value for key, value in self.__dict__.items()
                if key not in ("interface", "bandwidth_bit", "kind")}  # fmt: skip

    def describe(self) -> str:
        return f"{self.kind} {self.rate} {self.diffserv}"


@dataclass(frozen=True)
class Conflict:
    """Another party that sets a knob conntune manages: a file line, or a daemon at runtime."""

    key: str
    owner: str  # "path:line (text)" or "kube-proxy (sets it at runtime)"
    value: str | None = None  # the value that party sets, when it is a file
    wins: bool = True  # applied after conntune's own value (at boot or at runtime)


@dataclass
class Plan:
    """The desired state of one host. ``None`` for a part means "conntune leaves it alone"."""

    conntrack_max: int | None = None
    buckets: int | None = None
    timeouts: dict[str, int] = field(default_factory=dict)
    memory_worst_case_bytes: int | None = None
    memory_budget_bytes: int | None = None
    cake: CakePlan | None = None
    load_conntrack: bool = False
    # path -> wanted content; None: the file must not exist. Paths not listed: left alone.
    files: dict[str, str | None] = field(default_factory=dict)
    firewalld_restart: str = "on-change"
    firewalld_active: bool = False
    # why a firewalld restart must not happen on this host, or None
    firewalld_restart_blocked: str | None = None
    # a restart unloads nf_conntrack here: the live values must be applied again after it
    firewalld_restart_flushes: bool = False
    # check Docker's chains are back after a firewalld restart
    verify_docker_chains: bool = False
    # conntune_state: absent: the interface whose CAKE root qdisc is removed
    cake_remove: str | None = None
    state: str = "present"
    conflicts: list[Conflict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def sysctls(self) -> dict[str, int]:
        """Live sysctl targets in write order: max before the timeouts (buckets go first)."""
        values: dict[str, int] = {}
        if self.conntrack_max is not None:
            values[MAX_KEY] = self.conntrack_max
        values.update(self.timeouts)
        return values

    def as_dict(self) -> dict:
        """The plan as ``conntune plan --json`` prints it."""
        return {
            "state": self.state,
            "conntrack_max": self.conntrack_max,
            "buckets": self.buckets,
            "memory_worst_case_bytes": self.memory_worst_case_bytes,
            "memory_budget_bytes": self.memory_budget_bytes,
            "timeouts": dict(self.timeouts),
            "cake": None
            if self.cake is None
            else {
                "interface": self.cake.interface,
                "kind": self.cake.kind,
                "bandwidth_mbit": self.cake.bandwidth_bit / 10**6,
                "bandwidth_bit": self.cake.bandwidth_bit,
                **self.cake.options,
            },
            "cake_remove": self.cake_remove,
            "load_conntrack": self.load_conntrack,
            "firewalld_restart": self.firewalld_restart,
            "firewalld_restart_blocked": self.firewalld_restart_blocked,
            "firewalld_restart_flushes": self.firewalld_restart_flushes,
            "files": sorted(path for path, content in self.files.items() if content is not None),
            "conflicts": [conflict.__dict__ for conflict in self.conflicts],
            "warnings": list(self.warnings),
            "reasons": list(self.reasons),
        }
