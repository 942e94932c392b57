"""
Debian VMs under qemu for end-to-end tests on a real kernel (marker ``vm``).

Each VM is restored from a booted RAM snapshot (3-5 s) on a fresh disk overlay, so every test
module gets clean hosts; they are killed at teardown (the overlay is thrown away, so a power cut
is a clean stop). Images and snapshots come from scripts/vm-env.sh (cached by recipe hash).

``vm_lab.start("bookworm-1g", ...)`` -> ``VM`` with ``.ssh(cmd)``, ``.reboot()``, ``.name``;
``vm_lab.inventory(vms, path, **data)`` writes a pyinfra inventory with strict host-key checking;
``vm_lab.pyinfra(inventory, *args)`` runs ``python -m pyinfra`` as a user would.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.vmspecs import SPECS, VMSpec

REPO = Path(__file__).resolve().parents[2]
VMDIR = REPO / "tests" / "vm"
WORK = Path(os.environ.get("CONNTUNE_VM_WORK", "/var/tmp/conntune-vm"))
# seconds a VM start waits while other VMs hold the vCPUs vm.sh allows (MAX_VCPUS, 2)
VCPU_WAIT = float(os.environ.get("CONNTUNE_VM_VCPU_WAIT", "900"))
SSH_ATTEMPTS = 4
_CONNECT_FAILED = re.compile(
    r"banner exchange|kex_exchange_identification|Connection (refused|reset|closed|timed out)"
)


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.vm)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(spec: VMSpec, cache: Path) -> dict[str, str]:
    return {**os.environ, "W": str(WORK / spec.suite), "SNAPDIR": str(cache / "snap")}


@dataclass
class VM:
    name: str
    spec: VMSpec
    port: int
    env: dict[str, str]
    workdir: Path
    kernel: str = ""  # `uname -r` of the image (its kernel-version file)
    timings: dict[str, float] = field(default_factory=dict)
    lab_timings: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "run" / self.name / "known_hosts"

    def ssh(self, command: str, check: bool = True, timeout: float = 300, input: str | None = None):
        argv = [
            "ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", "root@127.0.0.1", command,
        ]  # fmt: skip
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        for attempt in range(1, SSH_ATTEMPTS + 1):
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **stdin)
            # A guest with one vCPU on a busy 2-core CI machine can miss ssh's banner deadline
            # (seen once in CI: "Connection timed out during banner exchange" right after the
            # second VM of a pair was restored). Only connection failures are retried: the
            # command never ran, so running it again is safe.
            if not (result.returncode == 255 and _CONNECT_FAILED.search(result.stderr)):
                break
            self.lab_timings.append(("ssh-retry", f"{self.name}: {result.stderr.strip()}", 0.0))
            time.sleep(3 * attempt)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name}: `{command}` exited {result.returncode}\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def vmsh(self, *args: str, timeout: float = 600, check: bool = True):
        result = subprocess.run(
            [str(VMDIR / "vm.sh"), *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if not check:
            return result
        if result.returncode != 0:
            raise AssertionError(f"vm.sh {' '.join(args)}: {result.stdout}\n{result.stderr}")
        return result.stdout

    def restore(self) -> None:
        """Restore from the spec's snapshot; while other VMs hold the vCPUs vm.sh allows
        (exit 3: another session's VMs, on a shared machine), wait for them."""
        deadline = time.monotonic() + VCPU_WAIT
        while True:
            started = time.monotonic()
            result = self.vmsh(
                "restore", self.name, str(self.port), self.spec.snapshot, check=False
            )
            if result.returncode == 0:
                self.timings["restore"] = time.monotonic() - started
                return
            if result.returncode == 4:  # the port was taken meanwhile
                self.port = _free_port()
            elif result.returncode != 3 or time.monotonic() > deadline:
                raise AssertionError(f"vm.sh restore {self.name}: {result.stdout}\n{result.stderr}")
            time.sleep(5)

    def reboot(self) -> float:
        started = time.monotonic()
        self.vmsh("reboot", self.name, str(self.port))
        self.timings["reboot"] = time.monotonic() - started
        self.lab_timings.append(("reboot", self.name, self.timings["reboot"]))
        self.ssh(f"date -s @{int(time.time())} >/dev/null")
        return self.timings["reboot"]

    def kill(self) -> None:
        pidfile = self.workdir / "run" / self.name / "qemu.pid"
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 9)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
        except (OSError, ValueError):
            pass
        subprocess.run(["rm", "-rf", str(self.workdir / "run" / self.name)], check=False)


class VMLab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.caches: dict[str, Path] = {}
        self.kernels: dict[str, str] = {}  # suite -> kernel version of its image
        self.running: list[VM] = []
        self.timings: list[tuple[str, str, float]] = []

    def prepare(self, spec: VMSpec) -> Path:
        """Image + booted snapshot for ``spec`` (built once, cached by recipe hash)."""
        key = f"{spec.suite}/{spec.snapshot}"
        if key not in self.caches:
            started = time.monotonic()
            env = {
                **os.environ,
                "NIC_SPEED": str(spec.nic_speed or ""),
                "SMP": str(spec.smp),
                "SNAP_NAME": spec.snapshot,
            }
            result = subprocess.run(
                [str(VMDIR / "prepare.sh"), spec.suite, str(WORK / spec.suite), str(spec.mem_mb)],
                env=env, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if result.returncode != 0:
                raise AssertionError(f"prepare.sh {spec}: {result.stdout}\n{result.stderr}")
            values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
            self.caches[key] = Path(values["SNAPDIR"]).parent
            self.kernels[spec.suite] = values.get("KERNEL", "?")
            self.timings.append(
                (
                    "prepare",
                    f"{key} (kernel {self.kernels[spec.suite]})",
                    time.monotonic() - started,
                )
            )
        return self.caches[key]

    def start(self, spec_name: str, name: str) -> VM:
        spec = SPECS[spec_name]
        cache = self.prepare(spec)
        vm = VM(
            name, spec, _free_port(), _env(spec, cache), WORK / spec.suite,
            kernel=self.kernels[spec.suite], lab_timings=self.timings,
        )  # fmt: skip
        try:
            vm.restore()
        except BaseException:
            vm.kill()  # a qemu that started but never answered
            raise
        self.timings.append(
            ("restore", f"{name} ({spec.suite}, kernel {vm.kernel})", vm.timings["restore"])
        )
        self.running.append(vm)
        return vm

    def stop_all(self) -> None:
        for vm in self.running:
            vm.kill()
        self.running.clear()

    def inventory(self, vms: list[VM], path: Path, per_host: dict | None = None, **data) -> Path:
        """A pyinfra inventory over real SSH, strict host-key checking, as users write them."""
        lines = ["vms = ["]
        for vm in vms:
            host = {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": vm.port,
                "ssh_user": "root",
                "ssh_key": str(vm.key),
                "ssh_known_hosts_file": str(vm.known_hosts),
                "ssh_strict_host_key_checking": "yes",
                # as users of slow hosts set it: a guest starved of CPU can miss one handshake
                "ssh_connect_retries": 2,
                **data,
                **((per_host or {}).get(vm.name, {})),
            }
            lines.append(f"    ({vm.name!r}, {host!r}),")
        lines.append("]")
        path.write_text("\n".join(lines) + "\n")
        return path

    def pyinfra(self, inventory: Path, *args: str, timeout: float = 1200):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pyinfra", str(inventory), *args],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1", "COLUMNS": "200"},
        )  # fmt: skip
        self.timings.append(("pyinfra", " ".join(args), time.monotonic() - started))
        return result


@pytest.fixture(scope="session")
def vm_lab(tmp_path_factory):
    if (
        not (VMDIR / "vm.sh").exists()
        or subprocess.run(
            ["sh", "-c", "command -v qemu-system-x86_64"], capture_output=True
        ).returncode
    ):
        if os.environ.get("CI"):
            pytest.fail("qemu is not installed: run scripts/vm-env.sh")
        pytest.skip("qemu is not installed: run scripts/vm-env.sh")
    lab = VMLab(tmp_path_factory.mktemp("vms"))
    yield lab
    lab.stop_all()
    print("\nVM timings (s):")
    for kind, what, seconds in lab.timings:
        print(f"  {kind:<8} {seconds:7.1f}  {what}")
