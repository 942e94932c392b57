"""
`conntune watch` on a real kernel: CAKE shaped to 10 Mbit/s with traffic shows throughput,
backlog and delay; a table filled on purpose shows usage near 100 % and a drop rate; the figures
agree with raw `tc -j -s` and /proc/net/stat/nf_conntrack readings taken around the same time.
"""

from __future__ import annotations

import time

from tests.e2e.helpers import conntune_json, root_qdisc, stat_totals

FLOOD = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + float(sys.argv[1])
payload = b"x" * 1200
while time.time() < end:
    try:
        s.sendto(payload, ("10.0.2.2", 9))
    except OSError:
        time.sleep(0.001)  # qdisc full: ENOBUFS
"""

FILL = r"""
import socket, sys, time
time.sleep(float(sys.argv[1]))
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 5557)); server.listen(4096)
held, end = [], time.time() + float(sys.argv[2])
while time.time() < end:
    client = socket.socket(); client.settimeout(0.2)
    try:
        client.connect(("127.0.0.1", 5557)); held += [client, server.accept()[0]]
    except OSError:
        client.close()
"""


def watch_once(inventory, interval: float) -> dict:
    return conntune_json("watch", str(inventory), "--once", "--interval", str(interval))


def test_watch_shows_cake_and_conntrack_pressure(vm_lab, tmp_path):
    vm = vm_lab.start("bookworm-1g", "bw-watch")
    try:
        inventory = vm_lab.inventory([vm], tmp_path / "inventory.py", cake_bandwidth="10mbit")
        applied = vm_lab.pyinfra(inventory, "deploy.py", "-y")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        vm.ssh(f"cat > /root/flood.py <<'EOF'\n{FLOOD}\nEOF")
        vm.ssh(f"cat > /root/fill.py <<'EOF'\n{FILL}\nEOF")

        # CAKE at 10 Mbit/s under a UDP flood
        vm.ssh("nohup python3 /root/flood.py 40 >/dev/null 2>&1 &")
        time.sleep(3)
        raw_before, t_before = root_qdisc(vm), time.monotonic()
        shaped = watch_once(inventory, 4)
        raw_after, t_after = root_qdisc(vm), time.monotonic()
        raw_rate = (raw_after["bytes"] - raw_before["bytes"]) * 8 / (t_after - t_before)
        assert shaped["qdisc_kind"] == "cake"
        assert shaped["qdisc_throughput_bit"] > 0
        # CAKE holds the rate near 10 Mbit/s; the watch's window lies inside the raw one
        assert 5e6 < shaped["qdisc_throughput_bit"] < 12e6, shaped
        assert 0.5 < shaped["qdisc_throughput_bit"] / raw_rate < 1.5, (shaped, raw_rate)
        assert shaped["qdisc_backlog_bytes"] > 0
        assert shaped["qdisc_drops_per_s"] > 0
        besteffort = next(t for t in shaped["tins"] if t["name"] == "besteffort")
        assert besteffort["avg_delay_us"] > 0 and besteffort["peak_delay_us"] > 0
        assert besteffort["offered_bit"] >= shaped["qdisc_throughput_bit"] * 0.9
        vm.ssh("pkill -f /root/flood.py", check=False)

        # a 64-entry table filled while the watch samples over its already-open connection
        old_max = int(vm.ssh("sysctl -n net.netfilter.nf_conntrack_max").stdout)
        vm.ssh(
            "nohup sh -c 'sleep 6; sysctl -q -w net.netfilter.nf_conntrack_max=64; "
            f"python3 /root/fill.py 0 30; sysctl -q -w net.netfilter.nf_conntrack_max={old_max}'"
            " >/dev/null 2>&1 &"
        )
        drops_before = stat_totals(vm)["drop"]
        started = time.monotonic()
        full = watch_once(inventory, 14)
        assert full["max"] == 64, full
        assert full["usage_percent"] >= 90
        assert full["per_second"]["drop"] > 0
        assert any("table" in item for item in full["attention"])
        # wait until the fill script gave the room back, then compare with the kernel's counter
        time.sleep(max(0, 40 - (time.monotonic() - started)))
        for _ in range(30):
            if vm.ssh("true", check=False, timeout=20).returncode == 0:
                break
            time.sleep(2)
        drops_after = stat_totals(vm)["drop"]
        assert drops_after - drops_before >= full["per_second"]["drop"] * full["interval_s"] * 0.99
    finally:
        vm.kill()
