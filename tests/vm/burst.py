#!/usr/bin/env python3
"""
Conntrack-table-full burst, run INSIDE a test VM as root (adapted from the lab's burst.py):

    burst.py URL N CONC [TIMEOUT]

Fetches URL N times from CONC threads (one TCP connection per fetch, HTTP/1.0 via urllib) and
prints ok/failed counts, the error kinds, latency percentiles, the deltas of the
/proc/net/stat/nf_conntrack columns (summed over the per-CPU rows and parsed by header name: the
columns differ between kernels) and how many "table full" lines dmesg gained. Standard library
only (the guest has python3, nothing else). Example, Docker VM with a published port:

    burst.py http://10.0.2.15:8080/f 200 40 2

While the table is full new SSH logins stall too: set nf_conntrack_max, burst and restore it in
one SSH command. busybox 1.35's `wget -T N` segfaults: this script does not use it.
"""

import collections
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def ct_stat() -> dict[str, int]:
    with open("/proc/net/stat/nf_conntrack") as f:
        head = f.readline().split()
        rows = [line.split() for line in f if line.strip()]
    totals = {k: sum(int(r[i], 16) for r in rows) for i, k in enumerate(head) if k != "entries"}
    totals["entries"] = int(rows[0][0], 16)  # a global count, repeated on every row
    return totals


def table_full() -> int:
    out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return sum("table full, dropping packet" in line for line in out.splitlines())


def fetch(url: str, timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
        return "ok", time.monotonic() - started
    except Exception as error:  # only classified
        reason = getattr(error, "reason", error)
        return f"{type(reason).__name__}:{str(reason)[:40]}", time.monotonic() - started


def main() -> None:
    url, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        max_ = f.read().strip()
    s0, d0, t0 = ct_stat(), table_full(), time.monotonic()
    with ThreadPoolExecutor(conc) as pool:
        done = list(pool.map(lambda _: fetch(url, timeout), range(n)))
    wall = time.monotonic() - t0
    s1, d1 = ct_stat(), table_full()
    kinds = collections.Counter(kind for kind, _ in done)
    latencies = sorted(seconds for kind, seconds in done if kind == "ok")

    def pct(p: float) -> str:
        if not latencies:
            return "-"
        return f"{latencies[min(len(latencies) - 1, int(p * len(latencies)))]:.2f}s"

    ok = kinds.pop("ok", 0)
    print(
        f"nf_conntrack_max={max_} fetches={n} conc={conc} timeout={timeout}s wall={wall:.1f}s "
        f"ok={ok} failed={sum(kinds.values())} {dict(kinds)}"
    )
    print(f"latency ok p50={pct(0.5)} p90={pct(0.9)} max={pct(1)}")
    keys = ("new", "insert", "insert_failed", "drop", "early_drop", "clashres", "search_restart")
    deltas = " ".join(f"{k}=+{s1[k] - s0[k]}" for k in keys if k in s1)
    print(f"stat deltas: {deltas} | entries {s0['entries']}->{s1['entries']}")
    print(f"dmesg 'table full' lines: +{d1 - d0}")


if __name__ == "__main__":
    main()
