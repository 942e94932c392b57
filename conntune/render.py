"""
The text of every file conntune writes on a host (conntune.paths lists them), and which of them
a plan wants. Pure functions of the plan and the host facts.
"""

from __future__ import annotations

import shlex

from conntune import cake as cake_policy
from conntune import conflicts, paths
from conntune.hostfacts import BUCKETS_KEY, HostFacts
from conntune.original import original_record
from conntune.plan import CakePlan, Plan

HEADER = "# Managed by conntune: edits are overwritten. `conntune plan` explains the values.\n"


def sysctl_file(values: dict[str, int]) -> str:
    return HEADER + "".join(f"{key} = {value}\n" for key, value in values.items())


def modprobe_file(buckets: int) -> str:
    return (
        "# Managed by conntune: the hash size at module load (the live value is set too).\n"
        f"options nf_conntrack hashsize={buckets}\n"
    )


# systemd-modules-load runs before systemd-sysctl: without this the net.netfilter keys do not
# exist yet at boot and are skipped (systemd#1113, docs/kernel-facts.md §3).
MODULES_LOAD_FILE = (
    "# Managed by conntune: load nf_conntrack before systemd-sysctl applies sysctl.d.\n"
    "nf_conntrack\n"
)


def systemd_escape(name: str) -> str:
    """
    A name as it appears inside a unit name (``systemd-escape``; systemd's unit_name_escape,
    src/basic/unit-name.c): ASCII letters, digits, ``:``, ``_`` and ``.`` stay, every other byte
    becomes ``\\xNN``. A bridge ``br-1a2b`` is the device ``sys-subsystem-net-devices-br\\x2d1a2b``:
    unescaped, the unit would wait for a device that never appears.
    """
    return "".join(
        char if char.isascii() and (char.isalnum() or char in ":_.") else
        "".join(f"\\x{byte:02x}" for byte in char.encode())
        for char in name
    )  # fmt: skip


def cake_unit(cake: CakePlan, tc_path: str) -> str:
    """
    A oneshot unit bound to the device, as sqm-scripts' sqm@.service does
    (docs/kernel-facts.md §5): it runs when the NIC appears (boot, or re-creation) and stops
    with it.
    """
    device = f"sys-subsystem-net-devices-{systemd_escape(cake.interface)}.device"
    command = shlex.join([tc_path, *cake_policy.tc_arguments(cake)])
    return (
        "# Managed by conntune: edits are overwritten. `conntune plan` explains the rate.\n"
        "[Unit]\n"
        f"Description=conntune: CAKE qdisc on {cake.interface} at {cake.rate}\n"
        f"BindsTo={device}\n"
        f"After={device}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={command}\n"
        "\n"
        "[Install]\n"
        f"WantedBy={device}\n"
        "WantedBy=multi-user.target\n"
    )


def plan_files(facts: HostFacts, out: Plan) -> None:
    """Every file conntune owns: its wanted content, or ``None`` when it must not exist."""
    sysctl_values: dict[str, int] = {}
    if out.buckets is not None and facts.knob_writable(BUCKETS_KEY):
        sysctl_values[BUCKETS_KEY] = out.buckets
    sysctl_values.update(out.sysctls)
    out.files[paths.SYSCTL_FILE] = sysctl_file(sysctl_values) if sysctl_values else None
    if sysctl_values and not facts.systemd:
        out.warnings.append(
            f"no systemd here (/run/systemd/system is absent): {paths.SYSCTL_FILE} acts at the "
            "next start only if the init applies /etc/sysctl.d (procps's init script does; a "
            "container started without an init does not). The live values are set now; in a "
            "container, keep them with the runtime's sysctl option (docker run --sysctl, a "
            "pod's securityContext.sysctls)"
        )

    # module files only where the table belongs to this kernel: in a container they set nothing
    host_kernel = out.buckets is not None or out.conntrack_max is not None or out.load_conntrack
    foreign = conflicts.foreign_hashsize(facts)
    repeats = conflicts.install_repeats_options(facts)
    if out.buckets is not None and foreign:
        out.warnings.append(
            "another module option already sets nf_conntrack's hash size; conntune does not add "
            "a second one (hashsize given twice has crashed kernels, 2045cdfa1b40): "
            + "; ".join(map(str, foreign))
        )
        out.files[paths.MODPROBE_FILE] = None
    elif out.buckets is not None and repeats:
        kept = " and in its sysctl file" if BUCKETS_KEY in sysctl_values else ""
        out.warnings.append(
            f"{repeats[0]}: this install command passes $CMDLINE_OPTS to a second modprobe, which "
            "reads the module options again, so an `options nf_conntrack hashsize=` line would "
            "reach the kernel twice (which has crashed kernels, 2045cdfa1b40): conntune writes no "
            f"module options file and sets the hash size live{kept}; to keep it at boot, add "
            f"hashsize={out.buckets} to that install command"
        )
        out.files[paths.MODPROBE_FILE] = None
    elif out.buckets is not None:
        out.files[paths.MODPROBE_FILE] = modprobe_file(out.buckets)
    else:
        out.files[paths.MODPROBE_FILE] = None
    out.files[paths.MODULES_LOAD_FILE] = (
        MODULES_LOAD_FILE if sysctl_values and host_kernel else None
    )
    # the unit keeps CAKE across reboots; without systemd there is nothing to enable it with
    # (`systemctl enable` would fail after the live values are set): CAKE is set live only
    keep = out.cake is not None and facts.systemd
    out.files[paths.CAKE_UNIT_FILE] = (
        cake_unit(out.cake, facts.tools.tc or "/usr/sbin/tc") if keep and out.cake else None
    )
    if out.cake is not None and not facts.systemd:
        out.warnings.append(
            f"CAKE on {out.cake.interface} is set live only: no systemd here for "
            f"{paths.CAKE_UNIT_FILE}, so it is gone after a reboot (re-run conntune at boot, or "
            "add the tc command to the host's own network configuration)"
        )
    # the undo record: each value as it was before conntune first owned it (conntune.original)
    recorded = facts.owned_files.get(paths.ORIGINAL_FILE)
    if recorded is not None or out.sysctls or out.buckets is not None or out.cake is not None:
        out.files[paths.ORIGINAL_FILE] = original_record(facts, out, recorded)
