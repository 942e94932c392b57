#!/usr/bin/env python3
"""
Benchmark: conntune against the floor (`pyinfra exec -- true`), a built-in pyinfra deploy and
Ansible (default settings and pipelining), over N systemd + sshd + firewalld containers.

    sudo .venv/bin/python bench/run.py --sizes 10,25,50 --ansible-max 25

Prints a table (and writes it to bench/results.md). Remote commands are counted on the hosts:
a ForceCommand wrapper appends a line per SSH command (exec or subsystem) to /run/bench-count,
so every tool is counted the same way, whatever its own logging. Controller CPU and peak memory
come from wait4() on each run. Needs the test images (scripts/test-env.sh).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from conntune import paths
from conntune.profiles import LINUX_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
KEYS = REPO / "tests" / "docker" / "keys"
IMAGE = "local/conntune-testhost:latest"
PREFIX = "ctbench"
ANSIBLE_VENV = Path(os.environ.get("CONNTUNE_ANSIBLE_VENV", "/var/cache/conntune/ansible-venv"))

COUNTER = """#!/bin/sh
echo x >> /run/bench-count
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""
RESET = f"rm -f {' '.join(paths.OWNED_FILES)}; rm -rf {paths.STATE_DIR}; sysctl -q -w " + " ".join(
    f"{key}={value}" for key, value in LINUX_DEFAULTS.items()
)


@dataclass
class Result:
    wall: float
    cpu: float
    max_rss_kb: int
    commands_per_host: float
    ok: bool


def sh(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kwargs)


def docker_exec(name: str, command: str) -> None:
    sh("docker", "exec", name, "sh", "-c", command)


class Fleet:
    def __init__(self, size: int, work: Path) -> None:
        self.size, self.work = size, work
        self.names = [f"{PREFIX}{i}" for i in range(size)]
        self.ports: dict[str, int] = {}
        self.key = work / "id_ed25519"
        shutil.copy(KEYS / "id_ed25519", self.key)
        self.key.chmod(0o600)

    def up(self) -> None:
        for name in self.names:
            sh("docker", "rm", "-f", name, check=False)
            sh("docker", "run", "-d", "--name", name, "--privileged", "--tmpfs", "/run",
               "--tmpfs", "/run/lock", "-p", "127.0.0.1::22", IMAGE)  # fmt: skip
        for name in self.names:
            port = sh("docker", "port", name, "22").stdout.split(":")[-1].strip()
            self.ports[name] = int(port)
        deadline = time.time() + 300
        pending = set(self.names)
        while pending and time.time() < deadline:
            for name in sorted(pending):
                state = subprocess.run(
                    ["docker", "exec", name, "systemctl", "is-active", "ssh", "firewalld"],
                    capture_output=True, text=True,
                ).stdout.split()  # fmt: skip
                if state == ["active", "active"]:
                    pending.discard(name)
            time.sleep(1)
        if pending:
            raise SystemExit(f"hosts not ready: {sorted(pending)}")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._install_counter, self.names))
        pub = (KEYS / "ssh_host_ed25519_key.pub").read_text().split()
        (self.work / "known_hosts").write_text(
            "".join(f"[127.0.0.1]:{p} {pub[0]} {pub[1]}\n" for p in self.ports.values())
        )
        self._inventories()

    def _install_counter(self, name: str) -> None:
        docker_exec(name, f"cat > /usr/local/bin/bench-count <<'EOF'\n{COUNTER}EOF\n"
                          "chmod 755 /usr/local/bin/bench-count; printf 'Match User root\\n"
                          "  ForceCommand /usr/local/bin/bench-count\\n' > "
                          "/etc/ssh/sshd_config.d/99-bench.conf; systemctl reload ssh")  # fmt: skip

    def _inventories(self) -> None:
        common = {
            "ssh_hostname": "127.0.0.1", "ssh_user": "root", "ssh_key": str(self.key),
            "ssh_known_hosts_file": str(self.work / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
        }  # fmt: skip
        hosts = ",\n".join(
            f"    ({name!r}, {{**_c, 'ssh_port': {port}}})" for name, port in self.ports.items()
        )
        (self.work / "inventory.py").write_text(f"_c = {common!r}\nhosts = [\n{hosts}\n]\n")
        lines = ["[all]"] + [
            f"{name} ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
            f"ansible_ssh_private_key_file={self.key}"
            for name, port in self.ports.items()
        ]
        (self.work / "hosts.ini").write_text("\n".join(lines) + "\n")

    def reset(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: docker_exec(n, RESET), self.names))

    def zero_counters(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: docker_exec(n, ": > /run/bench-count"), self.names))

    def commands(self) -> float:
        def count(name: str) -> int:
            out = sh("docker", "exec", name, "sh", "-c", "wc -l < /run/bench-count").stdout
            return int(out.strip() or 0)

        with ThreadPoolExecutor(8) as pool:
            counts = list(pool.map(count, self.names))
        return sum(counts) / len(counts)

    def down(self) -> None:
        for name in self.names:
            sh("docker", "rm", "-f", name, check=False)


def measure(fleet: Fleet, argv: list[str], env: dict[str, str] | None = None) -> Result:
    fleet.zero_counters()
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    ok = os.waitstatus_to_exitcode(status) == 0
    if not ok:
        print(f"  ! {' '.join(argv[:4])}... failed: {stderr[-400:]}", file=sys.stderr)
    return Result(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, fleet.commands(), ok)


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


def run_size(size: int, ansible_max: int, tools: list[str]) -> list[tuple[str, str, Result]]:
    work = Path(tempfile.mkdtemp(prefix=f"conntune-bench-{size}-"))
    fleet = Fleet(size, work)
    rows: list[tuple[str, str, Result]] = []
    py = sys.executable
    inventory = str(work / "inventory.py")
    try:
        fleet.up()
        rows.append(("floor", "exec true", measure(fleet, [py, "-m", "pyinfra", inventory,
                                                           "exec", "--", "true"])))  # fmt: skip
        pyinfra_jobs = {
            "conntune": "deploy.py",
            "builtin": str(REPO / "bench" / "builtin_deploy.py"),
        }
        for tool, deploy in pyinfra_jobs.items():
            if tool not in tools:
                continue
            fleet.reset()
            base = [py, "-m", "pyinfra", inventory, deploy]
            rows.append((tool, "dry run", measure(fleet, [*base, "--dry"])))
            rows.append((tool, "apply (fresh)", measure(fleet, [*base, "-y"])))
            rows.append((tool, "no-op run", measure(fleet, [*base, "-y"])))
            if tool == "conntune":
                rows.append((tool, "audit", measure(fleet, [py, "-m", "conntune.cli", "audit",
                                                            inventory])))  # fmt: skip
        playbook = ansible_ready() if size <= ansible_max and "ansible" in tools else None
        for pipelining in (True, False) if playbook else ():
            tool = "ansible+pipelining" if pipelining else "ansible"
            env = ansible_env(work, pipelining)
            fleet.reset()
            base = [
                str(playbook),
                "-i",
                str(work / "hosts.ini"),
                str(REPO / "bench" / "playbook.yml"),
            ]
            rows.append((tool, "dry run", measure(fleet, [*base, "--check"], env)))
            rows.append((tool, "apply (fresh)", measure(fleet, base, env)))
            rows.append((tool, "no-op run", measure(fleet, base, env)))
    finally:
        fleet.down()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def table(results: dict[int, list[tuple[str, str, Result]]]) -> str:
    lines = [
        "| N | tool | phase | wall s | cmds/host | controller CPU s | peak RSS MiB | "
        "RSS/host MiB | vs floor | conntune ÷ this |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, rows in results.items():
        floor = next(r for tool, _, r in rows if tool == "floor")
        mine = {phase: r for tool, phase, r in rows if tool == "conntune"}
        for tool, phase, r in rows:
            ratio = ""
            if tool not in ("floor", "conntune") and phase in mine:
                ratio = f"{mine[phase].wall / r.wall:.2f}"
            flag = "" if r.ok else " (failed)"
            lines.append(
                f"| {size} | {tool} | {phase}{flag} | {r.wall:.1f} | {r.commands_per_host:.1f} | "
                f"{r.cpu:.1f} | {r.max_rss_kb / 1024:.0f} | {r.max_rss_kb / 1024 / size:.1f} | "
                f"{r.wall / floor.wall:.2f}x | {ratio} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--ansible-max", type=int, default=25)
    parser.add_argument("--tools", default="conntune,builtin,ansible")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.md"))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    tools = args.tools.split(",")
    inotify = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(inotify.read_text()) < 1024:  # ~20+ systemd containers need more than 128
        inotify.write_text("1024")
    results = {}
    for size in sizes:
        print(f"== N = {size}", file=sys.stderr)
        results[size] = run_size(size, args.ansible_max, tools)
        print(table({size: results[size]}), file=sys.stderr)
    machine = f"{os.cpu_count()} CPUs, {os.uname().release}, {time.strftime('%Y-%m-%d')}"
    text = f"Machine: {machine}\n\n{table(results)}\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
