"""The ``conntune`` command line: explain a plan, list the profiles."""

from __future__ import annotations

import json
import sys

import click
import psutil

from conntune import profiles
from conntune.hostfacts import HostFacts, Interface
from conntune.policy import Plan, plan
from conntune.settings import InvalidSettings, settings_from_data
from conntune.units import format_bytes, parse_size_bytes


def _route_dev_from_proc() -> str | None:
    """The default-route interface from /proc/net/route (no `ip` needed)."""
    try:
        with open("/proc/net/route") as route:
            for line in route.read().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000":
                    return fields[0]
    except OSError:
        return None
    return None


def this_machine() -> HostFacts:
    """This machine as psutil sees it: memory, CPUs, NICs and their speeds."""
    interfaces = {
        name: Interface(name, stats.speed or None, "up" if stats.isup else "down", stats.isup)
        for name, stats in psutil.net_if_stats().items()
    }
    return HostFacts(
        mem_bytes=psutil.virtual_memory().total,
        cpus=psutil.cpu_count(),
        default_iface=_route_dev_from_proc(),
        interfaces=interfaces,
        tc_path="tc",
        cake_available=True,
        sizing_writable=True,
        buckets_writable=True,
    )


def hypothetical(mem_bytes: int, cpus: int | None, link_speed: int | None) -> HostFacts:
    return HostFacts(
        mem_bytes=mem_bytes,
        cpus=cpus,
        default_iface="eth0",
        interfaces={"eth0": Interface("eth0", link_speed, "up", True)},
        tc_path="tc",
        cake_available=True,
        sizing_writable=True,
        buckets_writable=True,
    )


@click.group()
@click.version_option(package_name="conntune")
def main() -> None:
    """Size the conntrack table, set its timeouts and shape the uplink with CAKE."""


@main.command("plan")
@click.option("--mem", help="RAM of the host (bytes, or 64G / 64GiB). Default: this machine.")
@click.option("--cpus", type=click.IntRange(min=1), help="CPU count of the host.")
@click.option("--link-speed", type=click.IntRange(min=1), help="NIC speed in Mbit/s.")
@click.option(
    "--profile",
    default=profiles.DEFAULT_PROFILE,
    show_default=True,
    type=click.Choice(list(profiles.PROFILES)),
    help="Timeout profile.",
)
@click.option(
    "--hashsize-ratio",
    type=float,
    default=1,
    show_default=True,
    help="Entries per bucket when full (1..4).",
)
@click.option("--max", "conntrack_max", type=int, help="nf_conntrack_max instead of the RAM rule.")
@click.option("--bandwidth", help="CAKE rate (e.g. 1gbit). Default: the link speed.")
@click.option("--diffserv", default="besteffort", show_default=True, help="CAKE diffserv mode.")
@click.option("--no-cake", is_flag=True, help="Plan without CAKE.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plan_command(
    mem: str | None,
    cpus: int | None,
    link_speed: int | None,
    profile: str,
    hashsize_ratio: float,
    conntrack_max: int | None,
    bandwidth: str | None,
    diffserv: str,
    no_cake: bool,
    as_json: bool,
) -> None:
    """Print the desired state for a host, its memory cost, and why."""
    if mem is None:
        facts = this_machine()
        if cpus:
            facts.cpus = cpus
        if link_speed and facts.default_iface:
            facts.interfaces[facts.default_iface] = Interface(
                facts.default_iface, link_speed, "up", True
            )
    else:
        try:
            facts = hypothetical(parse_size_bytes(mem), cpus, link_speed)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--mem") from None
    data: dict[str, object] = {
        "conntrack_timeout_profile": profile,
        "conntrack_hashsize_ratio": int(hashsize_ratio)
        if hashsize_ratio.is_integer()
        else hashsize_ratio,
        "cake_diffserv": diffserv,
        "cake": not no_cake,
    }
    if conntrack_max is not None:
        data["conntrack_max"] = conntrack_max
    if bandwidth is not None:
        data["cake_bandwidth"] = bandwidth
    notes = []
    if not no_cake and bandwidth is None and facts.link_speed_mbit(facts.default_iface) is None:
        data["cake"] = False
        notes.append(
            "CAKE not planned: the link speed is unknown (pass --link-speed or --bandwidth)"
        )
    try:
        desired = plan(facts, settings_from_data(data))
    except InvalidSettings as refused:
        for error in refused.errors:
            click.echo(f"conntune: refused: {error}", err=True)
        sys.exit(2)
    desired.warnings.extend(notes)
    if as_json:
        document = desired.as_dict()
        document["host"] = {"mem_bytes": facts.mem_bytes, "cpus": facts.cpus}
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(_explain(facts, desired))


def _explain(facts: HostFacts, desired: Plan) -> str:
    lines = [f"host: {format_bytes(facts.mem_bytes or 0)} RAM, {facts.cpus or '?'} CPUs", ""]
    if desired.conntrack_max is not None:
        memory = format_bytes(desired.memory_worst_case_bytes or 0)
        lines += [
            f"  net.netfilter.nf_conntrack_max     = {desired.conntrack_max}",
            f"  hashsize (nf_conntrack_buckets)    = {desired.buckets}",
            f"  memory when the table is full      = {memory}",
        ]
    for key, value in desired.timeouts.items():
        default = profiles.LINUX_DEFAULTS.get(key)
        lines.append(f"  {key:<52} = {value:>6}   (Linux default {default})")
    if desired.cake:
        lines.append(
            f"  CAKE on {desired.cake.interface}: {desired.cake.rate} {desired.cake.diffserv}"
        )
    lines += ["", "why:"] + [f"  - {reason}" for reason in desired.reasons]
    if desired.warnings:
        lines += ["", "warnings:"] + [f"  - {warning}" for warning in desired.warnings]
    return "\n".join(lines)


@main.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def profiles_command(as_json: bool) -> None:
    """List the timeout profiles (seconds) next to the Linux defaults."""
    names = [name for name in profiles.PROFILES if name != "kernel"]
    if as_json:
        click.echo(json.dumps({"linux": profiles.LINUX_DEFAULTS, **profiles.PROFILES}, indent=2))
        return
    click.echo(f"{'timeout':<32}{'linux':>8}" + "".join(f"{n:>12}" for n in names))
    for key, default in profiles.LINUX_DEFAULTS.items():
        row = "".join(f"{profiles.PROFILES[n].get(key, '-')!s:>12}" for n in names)
        click.echo(f"{profiles.short_name(key):<32}{default:>8}{row}")
    click.echo("\n'kernel' sets nothing; '-' leaves the value as it is.")


if __name__ == "__main__":
    main()
