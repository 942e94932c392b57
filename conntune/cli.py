"""The ``conntune`` command line: plan, profiles, audit, reconcile, revert, watch, schedule."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import psutil

from conntune import fleet, metrics, profiles, report, terminal, watch
from conntune.audit import HostAudit, audit_host
from conntune.changes import drift
from conntune.facts.reading import ReadingError
from conntune.hostfacts import HostFacts
from conntune.hypothetical import hypothetical
from conntune.plan import Plan
from conntune.policy import plan
from conntune.pyinfra_api import NoHosts, inventory_host_names, parse_data_value
from conntune.readings import load_reading, read_this_machine
from conntune.report import write_atomically
from conntune.schedule import Schedule, conntune_command
from conntune.settings import SPECS, InvalidSettings, boolean, settings_from_data
from conntune.units import format_bytes, parse_size_bytes
from conntune.watcher import Watcher


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NoHosts as error:  # exit status 2, as for any bad argument
            raise click.UsageError(str(error)) from None


@click.group(cls=_Group)
@click.version_option(package_name="conntune")
def main() -> None:
    """Size the conntrack table, set its timeouts and shape the uplink with CAKE."""


def _parse_data(pairs: tuple[str, ...]) -> dict[str, object]:
    """``KEY=VALUE`` pairs, values read as pyinfra's ``--data`` reads them."""
    data: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--data")
        data[key] = parse_data_value(value)
    return data


def setting_options(command):
    """One option per setting (``--cake-bandwidth``, plus its short names), from the specs."""
    for name, spec in reversed(SPECS.items()):
        flag = "--" + name.replace("_", "-")
        names = [flag, *spec.metadata["cli"]]
        if spec.metadata["check"] is boolean:
            names = [f"{flag}/--no-{name.replace('_', '-')}"]
            command = click.option(*names, name, default=None, help=spec.metadata["help"])(command)
        else:
            command = click.option(*names, name, metavar="VALUE", help=spec.metadata["help"])(
                command
            )
    return command


def _settings_data(options: dict[str, object], pairs: tuple[str, ...]) -> dict[str, object]:
    data = _parse_data(pairs)
    for name in SPECS:
        value = options.pop(name, None)
        if value is not None:
            data[name] = value if isinstance(value, bool) else parse_data_value(value)
    return data


def _host_for_plan(reading: str | None, mem: str | None, cpus, link_speed) -> HostFacts:
    if reading is not None:
        if mem or cpus or link_speed:
            raise click.UsageError("--reading describes the host: drop --mem/--cpus/--link-speed")
        try:
            return load_reading(reading)
        except ReadingError as error:
            raise click.BadParameter(str(error), param_hint="--reading") from None
    if mem is None and cpus is None and link_speed is None:
        return read_this_machine()
    try:
        mem_bytes = parse_size_bytes(mem) if mem else psutil.virtual_memory().total
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--mem") from None
    return hypothetical(mem_bytes, cpus or psutil.cpu_count(), link_speed)


@main.command("plan")
@click.option("--reading", type=click.Path(exists=True, dir_okay=False),
              help="Replay a saved host reading (`conntune reading`).")  # fmt: skip
@click.option("--mem", help="RAM of a hypothetical host (bytes, or 64G / 64GiB).")
@click.option("--cpus", type=click.IntRange(min=1), help="CPU count of the hypothetical host.")
@click.option("--link-speed", type=click.IntRange(min=1), help="Its NIC speed in Mbit/s.")
@click.option("--data", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A setting, as pyinfra's --data takes it.")  # fmt: skip
@setting_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plan_command(reading, mem, cpus, link_speed, pairs, as_json, **options) -> None:
    """Print the desired state of a host, its memory cost, and why.

    The host is this machine (read as a deploy reads it), a saved reading (--reading), or a
    hypothetical one (--mem, --cpus, --link-speed). Exit status 2: the settings are refused.
    """
    facts = _host_for_plan(reading, mem, cpus, link_speed)
    try:
        desired = plan(facts, settings_from_data(_settings_data(options, pairs)))
    except InvalidSettings as refused:
        if as_json:
            click.echo(json.dumps({"refused": [
                {"setting": e.setting, "message": e.message} for e in refused.errors
            ]}, indent=2))  # fmt: skip
        for error in refused.errors:
            click.echo(f"conntune: refused: {error}", err=True)
        sys.exit(2)
    changes = [str(change) for change in drift(facts, desired)]
    if as_json:
        document = desired.as_dict()
        document["changes"] = changes
        document["host"] = {"mem_bytes": facts.mem_bytes, "cpus": facts.cpus,
                            "kernel": facts.kernel, "unreadable": facts.unreadable}  # fmt: skip
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(_explain(facts, desired, changes))


def _explain(facts: HostFacts, desired: Plan, changes: list[str]) -> str:
    lines = [f"host: {format_bytes(facts.mem_bytes or 0)} RAM, {facts.cpus or '?'} CPUs", ""]
    if desired.conntrack_max is not None or desired.buckets is not None:
        memory = format_bytes(desired.memory_worst_case_bytes or 0)
        lines += [
            f"  net.netfilter.nf_conntrack_max     = {desired.conntrack_max or '(left alone)'}",
            f"  buckets (nf_conntrack_buckets)     = {desired.buckets or '(left alone)'}",
            f"  memory when the table is full      = {memory}",
        ]
    for key, value in desired.timeouts.items():
        default = profiles.LINUX_DEFAULTS.get(key)
        lines.append(f"  {key:<52} = {value:>6}   (Linux default {default})")
    if desired.cake:
        lines.append(f"  CAKE on {desired.cake.interface}: {desired.cake.describe()}")
    lines += ["", "why:"] + [f"  - {reason}" for reason in desired.reasons]
    lines += ["", "changes on this host:" if changes else "changes on this host: none"]
    lines += [f"  - {change}" for change in changes]
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


@main.command("reading")
@_inventory
@_limit
@click.option("-o", "--output", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Where HOST.reading goes.")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True, help="Show pyinfra's warnings in full.")
def reading_cli(inventory, limit, out_dir, verbose) -> None:
    """Save what conntune reads on each host of INVENTORY: one raw reading per host.

    Replay them anywhere with `conntune plan --reading FILE` and `conntune audit --reading FILE`.
    Exit status 3: some hosts could not be read.
    """
    _logging(verbose)
    try:  # before any host is read: a reading that cannot be saved is not worth taking
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise click.BadParameter(f"{out_dir}: {error.strerror}", param_hint="-o") from None
    saved, failed = fleet.save_readings(inventory, Path(out_dir), limit=list(limit) or None)
    for name, path in saved.items():
        click.echo(f"{name}: {path}")
    for name, error in failed.items():
        click.echo(f"{name}: not read: {error}", err=True)
    sys.exit(fleet.EXIT_FAILED if failed else fleet.EXIT_OK)


@main.command("audit")
@click.argument("inventory", required=False)
@_limit
@_data
@click.option("--reading", "readings", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Audit saved readings instead of live hosts (no INVENTORY).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON document (keys in the README).")
@click.option("--prometheus", type=click.Path(dir_okay=False), help="Write textfile metrics.")
@click.option("-v", "--verbose", is_flag=True, help="List each drifting setting and warning.")
def audit_command(inventory, limit, data, readings, as_json, prometheus, verbose) -> None:
    """Diagnose every host of INVENTORY (read only): conntrack pressure, drops, drift, qdisc."""
    _logging(verbose)
    if bool(inventory) == bool(readings):
        raise click.UsageError("give an INVENTORY or --reading FILE (not both)")
    if readings:
        rows = [_audit_reading(path, _parse_data(data)) for path in readings]
    else:
        rows = fleet.audit(inventory, limit=list(limit) or None, data=_parse_data(data),
                           show_progress=not as_json)  # fmt: skip
    if prometheus:
        write_atomically(prometheus, metrics.textfile(rows, previous=Path(prometheus)))
    if as_json:
        click.echo(report.as_json(rows))
    else:
        click.echo(report.table(rows, verbose=verbose, terminal=sys.stdout.isatty()))


def _audit_reading(path: str, data: dict[str, object]) -> HostAudit:
    try:
        facts = load_reading(path)
    except ReadingError as error:
        raise click.BadParameter(str(error), param_hint="--reading") from None
    return audit_host(Path(path).name.removesuffix(".reading"), facts, data)


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
        write_atomically(prometheus, metrics.textfile(run.final_rows, previous=Path(prometheus)))
    click.echo(fleet.describe(run))
    sys.exit(run.exit_code)


def _locked_reconcile(inventory, limit, data, check, report_file) -> fleet.Reconciliation:
    """One reconcile per inventory at a time (exit 75 otherwise); the JSON report if asked."""
    from conntune.deploys.tune import tune

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
    """Live conntrack pressure, churn and CAKE queues, worst host first (q or Ctrl-C stops)."""
    _logging(False)
    # Ctrl-C and a scheduler's SIGTERM only raise a flag: the loop then closes every connection
    # itself (an exception thrown into pyinfra's gevent hub mid-sample can leave it waiting)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    watcher = Watcher(inventory, limit=list(limit) or None, timeout=max(3.0, 2 * interval))
    live = sys.stdout.isatty() and not as_json and not once
    try:
        with terminal.progress("connecting", enabled=not as_json) as progress:
            watcher.connect(progress)
        with terminal.progress("reading hosts", enabled=not as_json) as progress:
            watcher.start(progress)
        with terminal.live_screen(live, stop) as show:
            deadline = time.monotonic() + interval
            while not stop.is_set():
                while not stop.is_set() and time.monotonic() < deadline:
                    time.sleep(min(0.1, interval))
                if stop.is_set():
                    break
                # samples on a fixed beat; a round slower than --interval starts the next at once
                deadline = max(deadline + interval, time.monotonic())
                screen = watch.Screen(interval, watcher.step(), period_s=watcher.period_s)
                if as_json:
                    click.echo(json.dumps(screen.as_dict(), indent=2 if once else None))
                elif live:
                    show(terminal.watch_screen(screen))
                else:
                    click.echo(terminal.watch_text(screen) + "\n")
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
@click.option("--executable", default=None,
              help="conntune in the unit (default: the one running now).")  # fmt: skip
@click.option("--metrics-file", default="/var/lib/node_exporter/textfile_collector/conntune.prom",
              show_default=True, help="Prometheus textfile the reconcile writes.")  # fmt: skip
def schedule_command(inventory, every, check, user, dry_run, remove, executable, metrics_file):
    """Run `conntune reconcile INVENTORY` from a systemd timer on this controller."""
    if not remove:  # a timer whose inventory does not load would fail on every run
        if not Path(inventory).is_file():
            raise click.BadParameter(f"{inventory}: no such inventory file", param_hint="INVENTORY")
        try:
            inventory_host_names(inventory)
        except NoHosts as error:
            raise click.BadParameter(str(error), param_hint="INVENTORY") from None
    state_dir = (Path.home() / ".local/state/conntune") if user else Path("/var/lib/conntune")
    plan_ = Schedule(
        inventory=Path(inventory).resolve(),
        every=every,
        check=check,
        user=user,
        command=tuple(conntune_command(executable)),
        workdir=Path.cwd().resolve(),
        state_dir=state_dir.resolve(),
        metrics_file=Path(metrics_file).resolve(),
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
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {', '.join(str(plan_.unit_dir / n) for n in units)}")
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
