#!/usr/bin/env python3
"""
Benchmark: conntune against the floor (`pyinfra exec -- true`), a built-in pyinfra deploy and
Ansible (default settings and pipelining), over N containers, in one run per size.

    sudo .venv/bin/python bench/run.py --sizes 10,25,50,100,200

Two kinds of host, both from the debootstrap base image (no registry):
  systemd  local/conntune-testhost: systemd + sshd + firewalld (a first apply restarts
           firewalld); for N <= --systemd-max (50), and Ansible there up to --ansible-max (25).
  sshd     local/conntune-benchhost (bench/sshhost/, built here when its recipe changed):
           sshd only, ~5 MiB each, for every N: no systemd, so no firewalld restart and no
           CAKE unit enablement.
In both, the container's network namespace makes nf_conntrack_max and the hash size read-only
(timeouts are writable) and this kernel has no sch_cake. All hosts sit on one bridge network
and are reached at their container IPs on port 22: no published ports, no docker-proxy.

Remote commands are counted on the hosts: a ForceCommand wrapper appends a line per SSH command
(exec or subsystem) to a file the bench mounts from this machine, so every tool is counted the
same way whatever its own logging. Controller CPU and peak memory come from wait4() on each
run; the hosts' CPU from their cgroups. The tools run with the open-files limit of a laptop
(--nofile, soft 1024). Prints a table and writes it to bench/results.md; needs the test
images (scripts/test-env.sh).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from conntune import paths
from conntune.facts.reading import reading_command
from conntune.profiles import LINUX_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
KEYS = REPO / "tests" / "docker" / "keys"
PREFIX = "ctbench-"
NETWORK = "ctbench-net"
LABEL = "org.conntune.bench=1"  # on every container and network this bench creates
ANSIBLE_VENV = Path(os.environ.get("CONNTUNE_ANSIBLE_VENV", "/var/cache/conntune/ansible-venv"))
CGROUP_CPU = Path("/sys/fs/cgroup/cpuacct/docker")

COUNTER = """#!/bin/sh
echo x >> /bench/count 2>/dev/null
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""
READING_ONLY = "{ " + reading_command() + "\n} >/dev/null"
RESET = f"rm -f {' '.join(paths.OWNED_FILES)}; rm -rf {paths.STATE_DIR} /run/conntune; " + (
    "sysctl -q -w " + " ".join(f"{key}={value}" for key, value in LINUX_DEFAULTS.items())
)


@dataclass(frozen=True)
class Kind:
    name: str
    image: str
    run_args: tuple[str, ...]
    describe: str


KINDS = {
    "systemd": Kind(
        "systemd", "local/conntune-testhost:latest",
        ("--privileged", "--tmpfs", "/run", "--tmpfs", "/run/lock"),
        "systemd + sshd + firewalld (no module options file in a container, so a first apply "
        "restarts no firewalld; the floor's exec restart firewalld is what one costs)",
    ),
    "sshd": Kind(
        "sshd", "local/conntune-benchhost:latest", ("--privileged", "--init"),
        "sshd only: no systemd, so no firewalld restart and no CAKE unit enablement",
    ),
}  # fmt: skip
COMMON = (
    "both: a container network namespace (nf_conntrack_max and buckets read-only, timeouts "
    "writable), no sch_cake in this kernel"
)


@dataclass
class Result:
    wall: float
    cpu: float
    max_rss_kb: int
    commands_per_host: float
    hosts_cpu: float
    ok: bool


def sh(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kwargs)


def cleanup() -> None:
    """Remove every container and network of this bench (this run's or a crashed one's)."""
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    for start in range(0, len(ids), 50):
        sh("docker", "rm", "-f", *ids[start : start + 50], check=False)
    nets = sh("docker", "network", "ls", "-q", "--filter", f"label={LABEL}", check=False)
    for net in nets.stdout.split():
        sh("docker", "network", "rm", net, check=False)


def build_benchhost() -> None:
    subprocess.run(["bash", str(REPO / "bench" / "sshhost" / "build.sh")], check=True)


class Fleet:
    """``size`` containers of one kind on the bench network; runs use the first N of them."""

    def __init__(self, kind: Kind, size: int, work: Path) -> None:
        self.kind, self.size, self.work = kind, size, work
        self.names = [f"{PREFIX}{kind.name}-{i}" for i in range(size)]
        self.ips: dict[str, str] = {}
        self.cgroups: dict[str, Path] = {}
        self.key = work / "id_ed25519"
        shutil.copy(KEYS / "id_ed25519", self.key)
        self.key.chmod(0o600)

    def count_file(self, name: str) -> Path:
        return self.work / "counts" / name / "count"

    def _run(self, name: str) -> None:
        self.count_file(name).parent.mkdir(parents=True, exist_ok=True)
        self.count_file(name).touch()
        sh("docker", "run", "-d", "--name", name, "--hostname", name, "--label", LABEL,
           "--network", NETWORK, "-v", f"{self.count_file(name).parent}:/bench",
           *self.kind.run_args, self.kind.image)  # fmt: skip

    def up(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(self._run, self.names))
        fmt = "{{.Name}} {{.Id}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        for start in range(0, self.size, 100):
            out = sh("docker", "inspect", "-f", fmt, *self.names[start : start + 100]).stdout
            for line in out.splitlines():
                name, cid, ip = line.split()
                self.ips[name.lstrip("/")] = ip
                self.cgroups[name.lstrip("/")] = CGROUP_CPU / cid / "cpuacct.usage"
        self._wait_ready()
        if self.kind.name == "systemd":
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(self._install_counter, self.names))
        pub = (KEYS / "ssh_host_ed25519_key.pub").read_text().split()
        (self.work / "known_hosts").write_text(
            "".join(f"{ip} {pub[0]} {pub[1]}\n" for ip in self.ips.values())
        )
        print(f"  {self.size} {self.kind.name} hosts up in {time.monotonic() - started:.0f} s",
              file=sys.stderr)  # fmt: skip

    def _ssh_banner(self, name: str) -> bool:
        try:
            with socket.create_connection((self.ips[name], 22), timeout=2) as conn:
                return conn.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _systemd_ready(self, name: str) -> bool:
        state = sh("docker", "exec", name, "systemctl", "is-active", "ssh", "firewalld",
                   check=False).stdout.split()  # fmt: skip
        return state == ["active", "active"]

    def _wait_ready(self) -> None:
        ready = self._systemd_ready if self.kind.name == "systemd" else self._ssh_banner
        deadline = time.time() + 300
        pending = set(self.names)
        while pending and time.time() < deadline:
            with ThreadPoolExecutor(8) as pool:
                states = dict(zip(sorted(pending), pool.map(ready, sorted(pending)), strict=True))
            pending = {name for name, ok in states.items() if not ok}
            if pending:
                time.sleep(1)
        if pending:
            raise SystemExit(f"hosts not ready: {sorted(pending)}")

    def _install_counter(self, name: str) -> None:
        sh("docker", "exec", name, "sh", "-c",
           f"cat > /usr/local/bin/bench-count <<'EOF'\n{COUNTER}EOF\n"
           "chmod 755 /usr/local/bin/bench-count; printf 'Match User root\\n"
           "  ForceCommand /usr/local/bin/bench-count\\n' > "
           "/etc/ssh/sshd_config.d/99-bench.conf; systemctl reload ssh")  # fmt: skip

    def inventories(self, size: int) -> tuple[Path, Path]:
        common = {
            "ssh_user": "root", "ssh_key": str(self.key),
            "bench_firewalld": self.kind.name == "systemd",  # bench/builtin_deploy.py
            "ssh_known_hosts_file": str(self.work / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
        }  # fmt: skip
        names = self.names[:size]
        hosts = ",\n".join(
            f"    ({name!r}, {{**_c, 'ssh_hostname': {self.ips[name]!r}}})" for name in names
        )
        inventory = self.work / f"inventory-{size}.py"
        inventory.write_text(f"_c = {common!r}\nhosts = [\n{hosts}\n]\n")
        ini = self.work / f"hosts-{size}.ini"
        ini.write_text("\n".join(["[all]"] + [
            f"{name} ansible_host={self.ips[name]} ansible_user=root "
            f"ansible_ssh_private_key_file={self.key}" for name in names
        ]) + "\n")  # fmt: skip
        return inventory, ini

    def reset(self, size: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: sh("docker", "exec", n, "sh", "-c", RESET),
                          self.names[:size]))  # fmt: skip

    def zero_counters(self, size: int) -> None:
        for name in self.names[:size]:
            self.count_file(name).write_text("")

    def commands(self, size: int) -> float:
        counts = [self.count_file(n).read_text().count("\n") for n in self.names[:size]]
        return sum(counts) / len(counts)

    def hosts_cpu(self, size: int) -> float:
        """CPU seconds the first ``size`` containers have used so far (0 if not readable)."""
        total = 0
        for name in self.names[:size]:
            try:
                total += int(self.cgroups[name].read_text())
            except (OSError, ValueError):
                return 0.0
        return total / 1e9

    def down(self) -> None:
        for start in range(0, len(self.names), 50):
            sh("docker", "rm", "-f", *self.names[start : start + 50], check=False)


def measure(
    fleet: Fleet, size: int, argv: list[str], env: dict[str, str] | None = None, nofile: int = 0
) -> Result:
    def limits() -> None:
        if nofile:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    fleet.zero_counters(size)
    hosts_before = fleet.hosts_cpu(size)
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, preexec_fn=limits,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        ok = os.waitstatus_to_exitcode(status) == 0
        if not ok:
            stderr.seek(0)
            text = stderr.read().decode(errors="replace")
            print(f"  ! {' '.join(argv[:4])}... failed: {text[-600:]}", file=sys.stderr)
    hosts = fleet.hosts_cpu(size) - hosts_before
    return Result(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, fleet.commands(size),
                  hosts, ok)  # fmt: skip


def ansible_ready() -> Path | None:
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if playbook.exists():
        return playbook
    print("installing ansible from PyPI into", ANSIBLE_VENV, file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
    subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible"], check=True)
    return playbook if playbook.exists() else None


def ansible_env(work: Path, pipelining: bool) -> dict[str, str]:
    config = work / f"ansible-{pipelining}.cfg"
    config.write_text(
        "[defaults]\nhost_key_checking = True\nforks = 50\ninterpreter_python = auto_silent\n"
        f"[ssh_connection]\npipelining = {pipelining}\n"
        f"ssh_args = -o UserKnownHostsFile={work / 'known_hosts'} -o ControlMaster=auto "
        "-o ControlPersist=60s\n"
    )
    return {"ANSIBLE_CONFIG": str(config)}


Row = tuple[str, str, Result]


def run_size(fleet: Fleet, size: int, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    py = sys.executable
    inventory, ini = (str(path) for path in fleet.inventories(size))

    def timed(argv: list[str], env: dict[str, str] | None = None) -> Result:
        return measure(fleet, size, argv, env, args.nofile)

    rows.append(("floor", "exec true", timed([py, "-m", "pyinfra", inventory, "exec", "--",
                                              "true"])))  # fmt: skip
    # what a reading costs the hosts alone: the reading script run, its output left there
    rows.append(("floor", "exec reading.sh", timed([py, "-m", "pyinfra", inventory, "exec", "--",
                                                    READING_ONLY])))  # fmt: skip
    if fleet.kind.name == "systemd":  # what the restarts of a first apply cost on their own
        rows.append(("floor", "exec restart firewalld", timed(
            [py, "-m", "pyinfra", inventory, "exec", "--", "systemctl", "restart", "firewalld"]
        )))  # fmt: skip
    pyinfra_jobs = {
        "conntune": [py, "-m", "pyinfra", inventory, "deploy.py"],
        "conntune+proposed": [py, str(REPO / "bench" / "proposed.py"), inventory, "deploy.py"],
        "builtin": [py, "-m", "pyinfra", inventory, str(REPO / "bench" / "builtin_deploy.py")],
    }
    for tool, base in pyinfra_jobs.items():
        if tool.replace("conntune+", "") not in args.tools:
            continue
        fleet.reset(size)
        rows.append((tool, "dry run", timed([*base, "--dry"])))
        rows.append((tool, "apply (fresh)", timed([*base, "-y"])))
        rows.append((tool, "no-op run", timed([*base, "-y"])))
        if tool == "conntune":
            rows.append((tool, "audit", timed([py, "-m", "conntune.cli", "audit", inventory])))
    wants_ansible = "ansible" in args.tools and fleet.kind.name == "systemd"
    playbook = ansible_ready() if wants_ansible and size <= args.ansible_max else None
    for pipelining in (True, False) if playbook else ():
        tool = "ansible+pipelining" if pipelining else "ansible"
        env = ansible_env(fleet.work, pipelining)
        fleet.reset(size)
        base = [str(playbook), "-i", ini, str(REPO / "bench" / "playbook.yml")]
        rows.append((tool, "dry run", timed([*base, "--check"], env)))
        rows.append((tool, "apply (fresh)", timed(base, env)))
        rows.append((tool, "no-op run", timed(base, env)))
    return rows


Results = dict[tuple[str, int], list[Row]]


def table(results: Results) -> str:
    lines = [
        "| N | hosts | tool | phase | wall s | cmds/host | controller CPU s | hosts CPU s | "
        "peak RSS MiB | RSS/host MiB | vs floor | conntune ÷ this |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, size), rows in results.items():
        floor = next(r for tool, phase, r in rows if phase == "exec true")
        mine = {phase: r for tool, phase, r in rows if tool == "conntune"}
        for tool, phase, r in rows:
            ratio = ""
            if tool not in ("floor", "conntune") and phase in mine:
                ratio = f"{mine[phase].wall / r.wall:.2f}"
            flag = "" if r.ok else " (failed)"
            lines.append(
                f"| {size} | {kind} | {tool} | {phase}{flag} | {r.wall:.1f} | "
                f"{r.commands_per_host:.1f} | {r.cpu:.1f} | {r.hosts_cpu:.1f} | "
                f"{r.max_rss_kb / 1024:.0f} | {r.max_rss_kb / 1024 / size:.2f} | "
                f"{r.wall / floor.wall:.2f}x | {ratio} |"
            )
    return "\n".join(lines)


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(value) over log(N): 1.0 is linear growth."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(v, 1e-3)) for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


def growth(results: Results, low: int = 25, high: int = 200) -> str:
    """Per host kind, tool and phase: the log-log slope of wall time and CPU from low to high."""
    series: dict[tuple[str, str, str], list[tuple[int, Result]]] = {}
    for (kind, size), rows in results.items():
        if low <= size <= high:
            for tool, phase, r in rows:
                series.setdefault((kind, tool, phase), []).append((size, r))
    lines = [
        "| hosts | tool | phase | N | wall s | wall exponent | CPU exponent |",
        "|---|---|---|---|---|---|---|",
    ]
    for (kind, tool, phase), points in series.items():
        if len(points) < 2:
            continue
        wall = slope([(n, r.wall) for n, r in points])
        cpu = slope([(n, r.cpu) for n, r in points])
        sizes = f"{points[0][0]}–{points[-1][0]}"
        walls = f"{points[0][1].wall:.1f} → {points[-1][1].wall:.1f}"
        lines.append(f"| {kind} | {tool} | {phase} | {sizes} | {walls} | {wall:.2f} | {cpu:.2f} |")
    return "\n".join(lines)


def targets(results: Results) -> str:
    """The issue's targets, each checked at every N."""
    lines = ["| N | hosts | target | measured | met |", "|---|---|---|---|---|"]
    for (kind, size), rows in results.items():
        by = {(tool, phase): r for tool, phase, r in rows}
        floor = by[("floor", "exec true")]
        for phase in ("audit", "dry run", "no-op run"):
            r = by.get(("conntune", phase))
            if r:
                ratio = r.wall / floor.wall
                lines.append(f"| {size} | {kind} | {phase} <= 1.2x floor | {ratio:.2f}x | "
                             f"{'yes' if ratio <= 1.2 and r.ok else 'NO'} |")  # fmt: skip
        apply = by.get(("conntune", "apply (fresh)"))
        if apply:
            restart = by.get(("floor", "exec restart firewalld"))
            extra = max(0.0, restart.wall - floor.wall) if restart else 0.0
            limit = 2 * floor.wall + extra
            what = "apply <= 2x floor" + (f" + restarts ({extra:.1f} s)" if restart else "")
            lines.append(f"| {size} | {kind} | {what} | {apply.wall:.1f} s of {limit:.1f} s "
                         f"({apply.wall / floor.wall:.2f}x) | "
                         f"{'yes' if apply.wall <= limit and apply.ok else 'NO'} |")  # fmt: skip
            cmds = apply.commands_per_host
            lines.append(f"| {size} | {kind} | apply <= 6 commands/host | {cmds:.1f} | "
                         f"{'yes' if cmds <= 6 else 'NO'} |")  # fmt: skip
        reads = [by[("conntune", p)] for p in ("audit", "dry run", "no-op run")
                 if ("conntune", p) in by]  # fmt: skip
        if reads:
            worst = max(r.commands_per_host for r in reads)
            lines.append(f"| {size} | {kind} | 1 command/host to read | {worst:.1f} | "
                         f"{'yes' if worst <= 1.0 else 'NO'} |")  # fmt: skip
        if size == 200:
            rss = max(r.max_rss_kb for tool, _, r in rows if tool == "conntune") / 1024 / size
            lines.append(f"| {size} | {kind} | controller memory <= 1 MiB/host | "
                         f"{rss:.2f} MiB/host | {'yes' if rss <= 1 else 'NO'} |")  # fmt: skip
    return "\n".join(lines)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,25,50,100,200")
    parser.add_argument("--kinds", default="systemd,sshd", help="host kinds to measure")
    parser.add_argument("--systemd-max", type=int, default=50, help="largest systemd fleet")
    parser.add_argument("--ansible-max", type=int, default=25)
    parser.add_argument(
        "--tools",
        default="conntune,proposed,builtin,ansible",
        help="proposed: conntune with bench/proposed.py's changes patched in",
    )
    parser.add_argument("--nofile", type=int, default=1024, help="tools' soft open-files limit")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.md"))
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    args.tools = args.tools.split(",")
    plan = {
        kind: [s for s in sizes if kind == "sshd" or s <= args.systemd_max]
        for kind in args.kinds.split(",")
    }
    plan = {kind: kind_sizes for kind, kind_sizes in plan.items() if kind_sizes}
    inotify = Path("/proc/sys/fs/inotify/max_user_instances")
    if "systemd" in plan and int(inotify.read_text()) < 1024:  # ~20+ systemd containers
        inotify.write_text("1024")
    # a SIGTERM/SIGHUP still removes the containers (the finally below)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _: sys.exit(128 + signum))
    started_load = load()
    results: Results = {}
    notes = []
    cleanup()
    try:
        if "sshd" in plan:
            build_benchhost()
        sh("docker", "network", "create", "--label", LABEL, "-o",
           "com.docker.network.bridge.name=ctbench0", NETWORK)  # fmt: skip
        for kind, kind_sizes in plan.items():
            work = Path(tempfile.mkdtemp(prefix=f"conntune-bench-{kind}-"))
            fleet = Fleet(KINDS[kind], max(kind_sizes), work)
            try:
                fleet.up()
                for size in kind_sizes:
                    before = load()
                    print(f"== {kind} N = {size} (load {before})", file=sys.stderr)
                    results[(kind, size)] = run_size(fleet, size, args)
                    notes.append(f"{kind} N = {size}: loadavg {before} before, {load()} after")
                    print(table({(kind, size): results[(kind, size)]}), file=sys.stderr)
            finally:
                fleet.down()
                shutil.rmtree(work, ignore_errors=True)
    finally:
        cleanup()
    machine = (f"{os.cpu_count()} CPUs, {os.uname().release}, {time.strftime('%Y-%m-%d')}; "
               f"loadavg (1, 5, 15 min) {started_load} at the start, "
               f"{load()} at the end")  # fmt: skip
    kinds = "\n".join(f"- {kind}: {KINDS[kind].describe}" for kind in plan) + f"\n- {COMMON}"
    text = (
        f"Machine: {machine}\n\nHosts:\n{kinds}\n\n{table(results)}\n\n"
        f"Growth from N = 25 to 200 (slope on log-log, least squares over the sizes run; "
        f"1.00 = linear):\n\n{growth(results)}\n\nTargets:\n\n{targets(results)}\n\n"
        "Load during the run:\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
