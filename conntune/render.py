"""The text of every file conntune writes on a host. Pure functions of the plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conntune.hostfacts import BUCKETS_KEY, HostFacts

if TYPE_CHECKING:
    from conntune.policy import CakePlan, Plan

HEADER = "# Managed by conntune: edits are overwritten. `conntune plan` explains the values.\n"
HASHSIZE = "nf_conntrack.hashsize"


def render_sysctl_file(values: dict[str, int]) -> str:
    return HEADER + "".join(f"{key} = {value}\n" for key, value in values.items())


def render_cake_unit(cake: CakePlan, tc_path: str) -> str:
    """
    A oneshot unit bound to the device, as sqm-scripts' sqm@.service does (domain.md §5): it
    runs when the NIC appears (boot, or re-creation) and stops with it.
    """
    device = f"sys-subsystem-net-devices-{cake.interface}.device"
    return (
        HEADER.replace("plan` explains the values", "plan` explains the rate") + "[Unit]\n"
        f"Description=conntune: CAKE qdisc on {cake.interface} at {cake.rate}\n"
        f"BindsTo={device}\n"
        f"After={device}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={tc_path} qdisc replace dev {cake.interface} root cake "
        f"bandwidth {cake.bandwidth_bit}bit {cake.diffserv}\n"
        "\n"
        "[Install]\n"
        f"WantedBy={device}\n"
        "WantedBy=multi-user.target\n"
    )


def render_original(facts: HostFacts, plan: Plan) -> str:
    """The live values conntune is about to own, as they are before its first change."""
    lines = [
        "# conntune: live values before conntune first changed this host.\n",
        "# `conntune revert` restores them. Written once, never updated.\n",
    ]
    if plan.buckets is not None and facts.buckets is not None:
        lines.append(f"{HASHSIZE} = {facts.buckets}\n")
    for key in plan.sysctls:
        if key in facts.sysctls and key != BUCKETS_KEY:
            lines.append(f"{key} = {facts.sysctls[key]}\n")
    if plan.cake is not None:
        qdisc = facts.root_qdisc(plan.cake.interface)
        lines.append(f"qdisc.{plan.cake.interface} = {qdisc.get('kind') if qdisc else 'none'}\n")
    return "".join(lines)


@dataclass
class Original:
    """What ``render_original`` recorded: the live values before conntune's first change."""

    sysctls: dict[str, int] = field(default_factory=dict)
    hashsize: int | None = None
    qdiscs: dict[str, str] = field(default_factory=dict)


def parse_original(text: str) -> Original:
    original = Original()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key.startswith("#"):
            continue
        if key == HASHSIZE and value.isdigit():
            original.hashsize = int(value)
        elif key.startswith("qdisc."):
            original.qdiscs[key.removeprefix("qdisc.")] = value
        elif value.lstrip("-").isdigit():
            original.sysctls[key] = int(value)
    return original
