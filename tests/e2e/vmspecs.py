"""The test VMs: which Debian, how much RAM, what the NIC reports. Shared by the pytest fixtures
and scripts/vm-env.sh (which builds the images and booted snapshots before the test run)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VMSpec:
    suite: str
    mem_mb: int
    nic_speed: int | None  # None: virtio-net reports no speed (-1, "Unknown!")
    smp: int = 1  # never more than 2 vCPUs in all: this machine has 2 cores

    @property
    def snapshot(self) -> str:
        return f"booted-{self.mem_mb}m-nic{self.nic_speed or 'none'}-smp{self.smp}"


SPECS: dict[str, VMSpec] = {
    # Debian 12, kernel 6.1: a small and a larger host in one fleet (different sizing)
    "bookworm-1g": VMSpec("bookworm", 1024, 1000),
    "bookworm-3g": VMSpec("bookworm", 3072, 1000),
    # Debian 13, kernel 6.12, virtio NIC without a reported speed
    "trixie": VMSpec("trixie", 1536, None),
    # Debian 11, kernel 5.10: max = 4 x buckets by default, pfifo_fast, firewalld 0.9
    "bullseye": VMSpec("bullseye", 1024, 1000),
    # Debian sid, whatever kernel the archive serves (7.x in 2026-11: cake_mq). Its virtio NIC
    # has one queue (qemu user networking); the tests add a 4-queue veth pair in the guest
    "sid": VMSpec("sid", 1536, None),
    # bookworm + docker.io, busybox-static, apparmor and /root/bb.tar (tests/vm/build-image.sh)
    "docker-bookworm": VMSpec("docker-bookworm", 2048, 1000),
}

if __name__ == "__main__":  # for scripts/vm-env.sh
    for name, spec in SPECS.items():
        print(name, spec.suite, spec.mem_mb, spec.nic_speed or "none", spec.smp, spec.snapshot)
