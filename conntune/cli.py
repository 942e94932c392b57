"""The ``conntune`` command line: plan, profiles, audit, reconcile, revert, watch, schedule."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import psutil

from conntune import fleet, profiles, report, watch
from conntune.hostfacts import HostFacts, Interface
from conntune.policy import Plan, plan
from conntune.report import write_atomically
from conntune.schedule import Schedule
from conntune.settings import InvalidSettings, settings_from_data
from conntune.units import format_bytes, parse_size_bytes
from conntune.watcher import Watcher


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


def _logging(verbose: bool) -> None:
    """pyinfra's API installs no log handler: show its warnings and errors (all with -v)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    pyinfra_logger = logging.getLogger("pyinfra")
    pyinfra_logger.handlers[:] = [handler]
    pyinfra_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    pyinfra_logger.propagate = False


_inventory = click.argument("inventory")
_limit = click.option("--limit", multiple=True, help="Only these hosts or groups (globs allowed).")
_data = click.option("--data", multiple=True, metavar="KEY=VALUE", help="Override host data.")


def _parse_data(pairs: tuple[str, ...]) -> dict[str, object]:
    data: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--data")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    return data


@main.command("audit")
@_inventory
@_limit
@_data
@click.option("--json", "as_json", is_flag=True, help="One JSON document (keys in the README).")
@click.option("--prometheus", type=click.Path(dir_okay=False), help="Write textfile metrics.")
@click.option("-v", "--verbose", is_flag=True, help="List each drifting setting and warning.")
def audit_command(inventory, limit, data, as_json, prometheus, verbose) -> None:
    """Diagnose every host of INVENTORY (read only): conntrack pressure, drops, drift, qdisc."""
    _logging(verbose)
    rows = fleet.audit(inventory, limit=list(limit) or None, data=_parse_data(data))
    if prometheus:
        write_atomically(prometheus, report.prometheus(rows, previous=Path(prometheus)))
    click.echo(report.as_json(rows) if as_json else report.table(rows, verbose=verbose))


@main.command("reconcile")
@_inventory
@_limit
@_data
@click.option("--check", is_flag=True, help="Report drift, change nothing (exit 2 on drift).")
@click.option("--report", "report_file", type=click.Path(dir_okay=False), help="JSON report.")
@click.option("--prometheus", type=click.Path(dir_okay=False), help="Write textfile metrics.")
@click.option("-v", "--verbose", is_flag=True, help="Show pyinfra's progress.")
def reconcile_command(inventory, limit, data, check, report_file, prometheus, verbose) -> None:
    """Converge every drifting host of INVENTORY; for schedulers (never prompts).

    Exit status: 0 converged or nothing to do, 2 drift found (--check), 3 some hosts failed,
    75 another reconcile of the same inventory is running.
    """
    _logging(verbose)
    run = _locked_reconcile(inventory, limit, _parse_data(data), check, report_file)
    if prometheus:
        write_atomically(prometheus, report.prometheus(run.final_rows, previous=Path(prometheus)))
    click.echo(fleet.describe(run))
    sys.exit(run.exit_code)


def _locked_reconcile(inventory, limit, data, check, report_file) -> fleet.Reconciliation:
    """One reconcile per inventory at a time (exit 75 otherwise); the JSON report if asked."""
    from deploys.conntune import tune

    try:
        with fleet.inventory_lock(inventory):
            run = fleet.reconcile(inventory, tune, check=check, limit=list(limit) or None,
                                  data=data)  # fmt: skip
    except fleet.Locked as locked:
        click.echo(f"conntune: {locked}", err=True)
        sys.exit(fleet.EXIT_LOCKED)
    if report_file:
        write_atomically(report_file, json.dumps(run.as_dict(), indent=2))
    return run


@main.command("revert")
@_inventory
@_limit
@click.option("--report", "report_file", type=click.Path(dir_okay=False), help="JSON report.")
@click.option("-v", "--verbose", is_flag=True, help="Show pyinfra's progress.")
def revert_command(inventory, limit, report_file, verbose) -> None:
    """Undo conntune on every host of INVENTORY: remove its files and CAKE, restore the live
    values recorded before its first change (same as deploy.py with conntune_state: absent)."""
    _logging(verbose)
    run = _locked_reconcile(inventory, limit, {"conntune_state": "absent"}, False, report_file)
    click.echo(fleet.describe(run, verb="revert", done="reverted"))
    sys.exit(run.exit_code)


@main.command("watch")
@_inventory
@_limit
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
              help="Seconds between samples.")  # fmt: skip
@click.option("--once", is_flag=True, help="Two samples --interval apart, print the rates, exit.")
@click.option("--json", "as_json", is_flag=True, help="JSON (with --once: one document).")
def watch_command(inventory, limit, interval, once, as_json) -> None:
    """Live conntrack pressure and CAKE queues, per host, refreshed in place (Ctrl-C stops)."""
    _logging(False)
    # Ctrl-C and a scheduler's SIGTERM only raise a flag: the loop then closes every connection
    # itself (an exception thrown into pyinfra's gevent hub mid-sample can leave it waiting)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    watcher = Watcher(inventory, limit=list(limit) or None, timeout=max(3.0, 2 * interval))
    color = sys.stdout.isatty() and not as_json
    try:
        watcher.start()
        while not stop.is_set():
            deadline = time.monotonic() + interval
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(min(0.1, interval))
            if stop.is_set():
                break
            views = watcher.step()
            if as_json:
                document = {"interval_s": interval, "hosts": [v.as_dict() for v in views]}
                click.echo(json.dumps(document, indent=None if not once else 2))
            elif color:
                click.echo("\x1b[H\x1b[2J" + watch.render(views, color=True), nl=True)
            else:
                click.echo(watch.render(views, color=False) + "\n")
            if once:
                break
    finally:
        watcher.close()


@main.command("schedule")
@_inventory
@click.option("--every", required=True, help="Period: 5m, 15m, 30m, 1h, 6h, 1d.")
@click.option("--check", is_flag=True, help="Only report drift (reconcile --check).")
@click.option("--user", is_flag=True, help="A user unit (~/.config/systemd/user).")
@click.option("--dry-run", is_flag=True, help="Print the units, write nothing.")
@click.option("--remove", is_flag=True, help="Disable and remove the units.")
@click.option("--executable", default=None, help="conntune path in the unit (default: this one).")
@click.option("--metrics-file", default="/var/lib/node_exporter/textfile_collector/conntune.prom",
              show_default=True, help="Prometheus textfile the reconcile writes.")  # fmt: skip
def schedule_command(inventory, every, check, user, dry_run, remove, executable, metrics_file):
    """Run `conntune reconcile INVENTORY` from a systemd timer on this controller."""
    state_dir = (Path.home() / ".local/state/conntune") if user else Path("/var/lib/conntune")
    plan_ = Schedule(
        inventory=Path(inventory).resolve(),
        every=every,
        check=check,
        user=user,
        executable=executable or shutil.which("conntune") or sys.argv[0],
        workdir=Path.cwd(),
        state_dir=state_dir,
        metrics_file=Path(metrics_file),
    )
    try:
        units = plan_.units()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--every") from None
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    timer = f"{plan_.name}.timer"
    if remove:
        if not dry_run:
            subprocess.run([*systemctl, "disable", "--now", timer], check=False)
            for name in units:
                (plan_.unit_dir / name).unlink(missing_ok=True)
            subprocess.run([*systemctl, "daemon-reload"], check=False)
        click.echo(f"removed {', '.join(str(plan_.unit_dir / n) for n in units)}")
        return
    if dry_run:
        for name, text in units.items():
            click.echo(f"# {plan_.unit_dir / name}\n{text}")
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        write_atomically(plan_.unit_dir / name, text)
    subprocess.run([*systemctl, "daemon-reload"], check=True)
    subprocess.run([*systemctl, "enable", "--now", timer], check=True)
    click.echo(f"installed and started {timer} ({plan_.unit_dir})")


if __name__ == "__main__":
    main()
