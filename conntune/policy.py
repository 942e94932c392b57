"""
The tuning policy: from what a host is (``HostFacts``) and what the operator asked
(``Settings``) to what the host should be (``Plan``). No pyinfra, no I/O: facts read, policy
decides, operations converge.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from conntune import paths, profiles, sizing
from conntune.hostfacts import BUCKETS_KEY, MAX_KEY, HostFacts
from conntune.render import parse_original, render_cake_unit, render_original, render_sysctl_file
from conntune.settings import InvalidSettings, SettingError, Settings
from conntune.units import format_bytes, format_rate
from facts.parse import modprobe_options

# conntune's files are a few KiB: below this, a write would fail half way through a run
MIN_FREE_KB = 64
# What kube-proxy sets itself (pkg/proxy/conntrack): conntune does not fight over these
KUBE_PROXY_KEYS = (MAX_KEY, BUCKETS_KEY, *profiles.KUBE_PROXY)
# CVE-2025-54388: Docker before 28.3.3 did not restore its isolation rules after a firewalld
# reload (domain.md §6)
DOCKER_FIXED = (28, 3, 3)


@dataclass(frozen=True)
class CakePlan:
    interface: str
    bandwidth_bit: int
    diffserv: str

    @property
    def bandwidth_bytes(self) -> int:
        """What ``tc -j`` reports: cake's ``options.bandwidth`` is in bytes per second."""
        return self.bandwidth_bit // 8

    @property
    def bandwidth_mbit(self) -> float:
        return self.bandwidth_bit / 10**6

    @property
    def rate(self) -> str:
        return format_rate(self.bandwidth_bit)


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
    # why a firewalld restart must not happen on this host (old Docker), or None
    firewalld_restart_blocked: str | None = None
    # check Docker's chains are back after a firewalld restart
    verify_docker_chains: bool = False
    # conntune_state: absent: the interface whose CAKE root qdisc is removed
    cake_remove: str | None = None
    state: str = "present"
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
        return {
            "conntrack_max": self.conntrack_max,
            "hashsize": self.buckets,
            "memory_worst_case_bytes": self.memory_worst_case_bytes,
            "memory_budget_bytes": self.memory_budget_bytes,
            "timeouts": dict(self.timeouts),
            "cake": None
            if self.cake is None
            else {
                "interface": self.cake.interface,
                "bandwidth_mbit": self.cake.bandwidth_mbit,
                "bandwidth_bit": self.cake.bandwidth_bit,
                "diffserv": self.cake.diffserv,
            },
            "firewalld_restart": self.firewalld_restart,
            "files": sorted(path for path, content in self.files.items() if content is not None),
            "warnings": list(self.warnings),
            "reasons": list(self.reasons),
        }


def plan(facts: HostFacts, settings: Settings) -> Plan:
    """Decide a host's desired state. Raises ``InvalidSettings`` with every reason to refuse."""
    result = Plan(
        firewalld_restart=settings.firewalld_restart,
        firewalld_active=facts.firewalld.active,
        state=settings.conntune_state,
    )
    errors: list[SettingError] = []
    _check_host(facts, errors)
    if settings.conntune_state == "absent":
        if errors:
            raise InvalidSettings(errors)
        _plan_absent(facts, result)
    else:
        _plan_sizing(facts, settings, result, errors)
        _plan_timeouts(facts, settings, result)
        _plan_cake(facts, settings, result, errors)
        if errors:
            raise InvalidSettings(errors)
        _resolve_conflicts(facts, settings, result)
        _plan_files(facts, result)
    _plan_firewalld(facts, settings, result)
    return result


def _check_host(facts: HostFacts, errors: list[SettingError]) -> None:
    """Host conditions that make any change unsafe: refused before anything is touched."""
    if facts.sysctl_path is None:
        errors.append(SettingError("sysctl", "the sysctl command (procps) is not installed"))
    if not facts.conntrack_loaded and not facts.conntrack_loadable:
        errors.append(
            SettingError(
                "nf_conntrack",
                "the module is not loaded and cannot be loaded here (modprobe -n nf_conntrack "
                "fails): nothing to tune",
            )
        )
    if facts.etc_read_only:
        errors.append(SettingError("/etc", "is on a read-only filesystem: settings cannot persist"))
    for where, free in (("/etc", facts.etc_free_kb), ("/var/lib", facts.varlib_free_kb)):
        if free is not None and free < MIN_FREE_KB:
            errors.append(SettingError(where, f"its filesystem is full ({free} KiB free)"))


def _plan_sizing(facts: HostFacts, s: Settings, out: Plan, errors: list[SettingError]) -> None:
    if facts.sizing_writable is False:
        out.warnings.append(
            "nf_conntrack_max and the hash size are read-only here (a network namespace other "
            "than the host's, e.g. a container): sizing is left to the host kernel; timeouts "
            "are per namespace and are still applied"
        )
        return
    live_max = facts.conntrack_max
    count = facts.conntrack_count or 0
    if s.conntrack_max is not None:
        target = s.conntrack_max
        why = f"nf_conntrack_max {target}: set by conntrack_max"
        if target < count:
            errors.append(
                SettingError(
                    "conntrack_max",
                    f"{target} is below the {count} connections tracked right now: new "
                    "connections would be dropped at once",
                )
            )
    elif facts.mem_bytes is None:
        errors.append(
            SettingError(
                "conntrack_max", "MemTotal could not be read: set conntrack_max explicitly"
            )
        )
        return
    else:
        target = sizing.default_conntrack_max(facts.mem_bytes)
        why = (
            f"nf_conntrack_max {target}: MemTotal {format_bytes(facts.mem_bytes)} / 16384 / 2 = "
            f"{facts.mem_bytes // 32768}, rounded up to a power of two (the 2.6-era kernel "
            "default the blog used)"
        )
    if live_max is not None and live_max > target and not s.conntrack_allow_shrink:
        why = (
            f"nf_conntrack_max {live_max}: kept, the live value is above the planned {target} "
            "(conntune never shrinks the table unless conntrack_allow_shrink is set)"
        )
        target = live_max
    buckets = sizing.buckets_for(target, s.conntrack_hashsize_ratio)
    ratio = s.conntrack_hashsize_ratio
    out.reasons.append(why)
    out.reasons.append(
        f"hash size {buckets}: nf_conntrack_max / {ratio:g}"
        + (
            " (the kernel's own ratio since 5.15, d532bcd0b269)"
            if ratio == 1
            else f" ({ratio:g} entries per bucket when full)"
        )
        + f", rounded up to a multiple of {sizing.BUCKET_ROUNDING}; more than 4 per bucket "
        "drops packets below max since 5.15 (chain-length limit, d7e7747ac5c2)"
    )
    worst = sizing.memory_worst_case(target, buckets, facts.slab_objsize)
    out.memory_worst_case_bytes = worst
    objsize = facts.slab_objsize or sizing.DEFAULT_OBJSIZE
    source = "slabinfo" if facts.slab_objsize else "typical, slabinfo unreadable"
    if facts.mem_bytes:
        budget = int(facts.mem_bytes * s.conntrack_max_memory_percent / 100)
        out.memory_budget_bytes = budget
        share = 100 * worst / facts.mem_bytes
        out.reasons.append(
            f"memory when full: {target} x ({objsize} B object ({source}) + "
            f"{sizing.EXTENSIONS_BYTES} B extensions) + {buckets} x {sizing.BUCKET_BYTES} B = "
            f"{format_bytes(worst)}, {share:.2f} % of RAM (limit "
            f"{s.conntrack_max_memory_percent:g} %)"
        )
        if worst > budget:
            message = (
                f"a table of {target} entries may use {format_bytes(worst)} ({share:.1f} % of "
                f"RAM), above conntrack_max_memory_percent={s.conntrack_max_memory_percent:g}"
            )
            if target == live_max:
                out.warnings.append(f"live nf_conntrack_max: {message}")
            else:
                errors.append(SettingError("conntrack_max", message))
    out.conntrack_max = target
    out.buckets = buckets
    out.load_conntrack = not facts.conntrack_loaded


def _plan_timeouts(facts: HostFacts, s: Settings, out: Plan) -> None:
    wanted = {**profiles.PROFILES[s.conntrack_timeout_profile], **s.conntrack_timeouts}
    if facts.conntrack_loaded:
        missing = [key for key in wanted if key not in facts.sysctls]
        for key in missing:
            out.warnings.append(f"{key} does not exist on this kernel: skipped")
            del wanted[key]
    elif facts.sizing_writable is False:
        out.warnings.append(
            "nf_conntrack is not loaded in this kernel and cannot be loaded from here: "
            "timeouts skipped"
        )
        return
    out.timeouts = wanted
    if wanted:
        overrides = (
            f", {len(s.conntrack_timeouts)} set by conntrack_timeouts"
            if (s.conntrack_timeouts)
            else ""
        )
        out.reasons.append(
            f"timeouts: profile {s.conntrack_timeout_profile!r}{overrides} "
            f"({len(wanted)} values; `conntune profiles` lists them)"
        )
    else:
        out.reasons.append(
            f"timeouts: profile {s.conntrack_timeout_profile!r} leaves every timeout as it is"
        )


def _plan_cake(facts: HostFacts, s: Settings, out: Plan, errors: list[SettingError]) -> None:
    if not s.cake:
        return
    iface = s.cake_interface or facts.default_iface
    setting = "cake_interface" if s.cake_interface else "cake"
    if iface is None:
        errors.append(
            SettingError("cake_interface", "the host has no default route: set cake_interface")
        )
        return
    known = facts.interfaces.get(iface)
    if facts.interfaces and known is None:
        errors.append(SettingError(setting, f"interface {iface!r} does not exist on this host"))
        return
    if not facts.cake_available:
        out.warnings.append(
            "sch_cake is not available in this kernel (no module, not built in): CAKE skipped"
        )
        return
    if facts.tc_path is None:
        errors.append(SettingError("cake", "tc (iproute2) is not installed"))
        return
    if known is not None and known.carrier is False:
        errors.append(SettingError(setting, f"interface {iface!r} has no carrier (link down)"))
        return
    speed = facts.link_speed_mbit(iface)
    if s.cake_bandwidth_bit is not None:
        bandwidth = s.cake_bandwidth_bit
        why = f"CAKE on {iface}: {format_rate(bandwidth)} set by cake_bandwidth"
        if speed is not None and bandwidth > speed * 10**6:
            out.warnings.append(
                f"cake_bandwidth {format_rate(bandwidth)} is above the link speed of {iface} "
                f"({speed} Mbit/s): the queue will build in the NIC, not in CAKE"
            )
    elif speed is None:
        errors.append(
            SettingError(
                "cake_bandwidth",
                f"the link speed of {iface} is unknown (a virtual NIC?): set cake_bandwidth, "
                "e.g. '1gbit'",
            )
        )
        return
    else:
        bandwidth = speed * 10**6
        why = (
            f"CAKE on {iface}: {format_rate(bandwidth)}, the link speed the NIC reports (the "
            "blog's 1024mbit on 1 GbE was above line rate)"
        )
    out.cake = CakePlan(iface, bandwidth, s.cake_diffserv)
    out.reasons.append(f"{why}, {s.cake_diffserv}")


def _plan_files(facts: HostFacts, out: Plan) -> None:
    sysctl_values: dict[str, int] = {}
    if out.buckets is not None and facts.buckets_writable:
        sysctl_values[BUCKETS_KEY] = out.buckets
    sysctl_values.update(out.sysctls)
    out.files[paths.SYSCTL_FILE] = render_sysctl_file(sysctl_values) if sysctl_values else None

    host_can_load = facts.sizing_writable is not False
    foreign_hashsize = [
        line
        for line in facts.modprobe_options
        if line.path != paths.MODPROBE_FILE and "hashsize" in modprobe_options(line.text)
    ]
    if out.buckets is not None and foreign_hashsize:
        out.warnings.append(
            "another modprobe file already sets an nf_conntrack hash size; conntune does not add a "
            "second one (hashsize given twice has crashed kernels, 2045cdfa1b40): "
            + "; ".join(map(str, foreign_hashsize))
        )
        out.files[paths.MODPROBE_FILE] = None
    elif out.buckets is not None:
        out.files[paths.MODPROBE_FILE] = (
            "# Managed by conntune: the hash size at module load (the live value is set too).\n"
            f"options nf_conntrack hashsize={out.buckets}\n"
        )
    else:
        out.files[paths.MODPROBE_FILE] = None
    # systemd-modules-load runs before systemd-sysctl: without this the net.netfilter keys do
    # not exist yet at boot and are skipped (systemd#1113, domain.md §3).
    out.files[paths.MODULES_LOAD_FILE] = (
        "# Managed by conntune: load nf_conntrack before systemd-sysctl applies sysctl.d.\n"
        "nf_conntrack\n"
        if sysctl_values and host_can_load
        else None
    )
    out.files[paths.CAKE_UNIT_FILE] = (
        render_cake_unit(out.cake, facts.tc_path or "/usr/sbin/tc") if out.cake else None
    )
    if paths.ORIGINAL_FILE in facts.owned_files and facts.owned_files[paths.ORIGINAL_FILE] is None:
        out.files[paths.ORIGINAL_FILE] = render_original(facts, out)


def _sorts_after_ours(path: str) -> bool:
    """Whether systemd-sysctl applies ``path`` after conntune's file (it then wins at boot)."""
    if path in ("/etc/sysctl.conf",):  # Debian's 99-sysctl.conf links to it: read last
        return True
    return posixpath.basename(path) > posixpath.basename(paths.SYSCTL_FILE)


def _resolve_conflicts(facts: HostFacts, s: Settings, out: Plan) -> None:
    """
    Keys another party also sets: a later sysctl file, or kube-proxy / Cilium at runtime. By
    default conntune does not fight (the key is skipped, with the file and line); with
    ``conntune_override_conflicts`` it manages the key anyway and says who else sets it.
    """
    owners: dict[str, list[str]] = {}
    for line in facts.sysctl_file_lines:
        if line.path == paths.SYSCTL_FILE:
            continue
        key = line.text.lstrip("-").split("=", 1)[0].strip().replace("/", ".")
        if _sorts_after_ours(line.path):
            owners.setdefault(key, []).append(f"{line.path}:{line.lineno} ({line.text})")
        elif key in out.sysctls or key == BUCKETS_KEY:
            out.warnings.append(f"{line.path}:{line.lineno} sets {key} too; conntune's file wins")
    for name, present in (("kube-proxy", facts.kube_proxy), ("Cilium", facts.cilium)):
        if present:
            for key in KUBE_PROXY_KEYS:
                owners.setdefault(key, []).append(f"{name} (sets it at runtime)")
    for key, who in owners.items():
        managed = key in out.sysctls or (key == BUCKETS_KEY and out.buckets is not None)
        if not managed:
            continue
        if s.conntune_override_conflicts:
            out.warnings.append(f"{key}: overriding {'; '.join(who)} (conntune_override_conflicts)")
            continue
        out.warnings.append(
            f"{key}: skipped, also set by {'; '.join(who)} "
            "(set conntune_override_conflicts: true to take it over)"
        )
        if key == MAX_KEY:
            out.conntrack_max = None
        elif key == BUCKETS_KEY:
            out.buckets = None
        else:
            out.timeouts.pop(key, None)


def _docker_version(text: str | None) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in match.groups()) if match else None


def _plan_firewalld(facts: HostFacts, s: Settings, out: Plan) -> None:
    if facts.docker_version is None or not facts.firewalld.active:
        return
    version = _docker_version(facts.docker_version)
    out.verify_docker_chains = facts.docker_chains
    if version is not None and version < DOCKER_FIXED and not s.firewalld_restart_old_docker:
        out.firewalld_restart_blocked = (
            f"{facts.docker_version} is older than 28.3.3 (CVE-2025-54388: container isolation "
            "rules are not restored after a firewalld reload); firewalld is not restarted. "
            "Upgrade Docker, or set firewalld_restart_old_docker: true and restart Docker after"
        )
        out.warnings.append(out.firewalld_restart_blocked)


def _plan_absent(facts: HostFacts, out: Plan) -> None:
    """Undo: remove conntune's files and CAKE, restore the live values recorded before."""
    original_text = facts.owned_files.get(paths.ORIGINAL_FILE)
    original = parse_original(original_text or "")
    if original_text is None:
        out.warnings.append(
            f"{paths.ORIGINAL_FILE} is missing: live values cannot be restored, files only"
        )
    out.buckets = original.hashsize
    out.timeouts = {key: value for key, value in original.sysctls.items() if key != MAX_KEY}
    out.conntrack_max = original.sysctls.get(MAX_KEY)
    if facts.sizing_writable is False:
        out.conntrack_max = out.buckets = None
    for iface, kind in original.qdiscs.items():
        current = facts.root_qdisc(iface)
        if kind != "cake" and current is not None and current.get("kind") == "cake":
            out.cake_remove = iface
    out.files = {path: None for path in paths.OWNED_FILES}
    out.reasons.append(
        "conntune_state: absent: remove conntune's files and CAKE, restore "
        f"{len(original.sysctls) + (original.hashsize is not None)} recorded live values"
    )
