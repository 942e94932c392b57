"""What the end-to-end tests read back from a VM, independently of conntune's own parsers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SNAPSHOT = (
    "sysctl -a 2>/dev/null | grep -E '^net\\.(netfilter\\.)?nf_conntrack' | grep -v _count; "
    "echo hashsize=$(cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null); "
    "tc -j qdisc show; echo; "
    "find /etc /var/lib/conntune -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum; "
    "systemctl is-enabled conntune-cake.service 2>&1; lsmod | awk '{print $1}' | sort"
)


def snapshot(vm) -> str:
    """Everything conntune could touch on a VM: conntrack sysctls, hash size, qdiscs, /etc."""
    return vm.ssh(SNAPSHOT).stdout


def sysctl(vm, key: str) -> int:
    return int(vm.ssh(f"sysctl -n {key}").stdout)


def hashsize(vm) -> int:
    return int(vm.ssh("cat /sys/module/nf_conntrack/parameters/hashsize").stdout)


def mem_total_bytes(vm) -> int:
    kb = vm.ssh("awk '/^MemTotal:/ {print $2}' /proc/meminfo").stdout
    return int(kb) * 1024


def expected_max(mem_bytes: int) -> int:
    """The blog's rule, computed here without conntune: RAM/16384/2 up to a power of two."""
    return 2 ** math.ceil(math.log2(mem_bytes / 16384 / 2))


def root_qdisc(vm, dev: str = "eth0") -> dict:
    qdiscs = json.loads(vm.ssh(f"tc -j -s qdisc show dev {dev}").stdout)
    return next(q for q in qdiscs if q.get("root"))


def stat_totals(vm) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack summed over CPUs (entries once: it is a global count)."""
    text = vm.ssh("cat /proc/net/stat/nf_conntrack").stdout.splitlines()
    header = text[0].split()
    totals: dict[str, int] = {}
    for row in text[1:]:
        for name, value in zip(header, row.split(), strict=False):
            number = int(value, 16)
            totals[name] = number if name == "entries" else totals.get(name, 0) + number
    return totals


def firewalld_start(vm) -> str:
    return vm.ssh(
        "systemctl show -p ActiveState -p ExecMainStartTimestampMonotonic firewalld"
    ).stdout


def conntune_json(*args: str) -> dict:
    """Run the conntune CLI with --json as an operator would; its first host's document."""
    result = subprocess.run(
        [sys.executable, "-m", "conntune.cli", *args, "--json"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["hosts"][0]


def sysctls(vm, keys) -> dict[str, int]:
    """Several sysctls in one SSH command (``sysctl KEY...`` prints ``KEY = VALUE`` lines)."""
    text = vm.ssh("sysctl " + " ".join(keys)).stdout
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" = ")
        values[key.strip()] = int(value)
    return values


READING_SCRIPT = Path(__file__).resolve().parents[2] / "facts" / "reading.sh"


def take_reading(vm) -> str:
    """A whole host reading, run as the deploy runs it: ``sh -s < facts/reading.sh`` as root."""
    return vm.ssh("sh -s", input=READING_SCRIPT.read_text()).stdout
