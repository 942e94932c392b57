"""
A table filled on purpose on a real kernel (Debian 12, 6.1): `conntune audit` reports the host
as dropping, with the kernel's table-full line, and the drop counter rising between audits.
"""

from __future__ import annotations

from tests.e2e.helpers import conntune_json, stat_totals

FILL = r"""
import socket, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 5556)); server.listen(4096)
held = []
for _ in range(int(sys.argv[1])):
    client = socket.socket(); client.settimeout(0.3)
    try:
        client.connect(("127.0.0.1", 5556)); held.append(client); held.append(server.accept()[0])
    except OSError:
        client.close()  # SYN dropped: the table is full
print(len(held) // 2)
"""


def audit(inventory) -> dict:
    return conntune_json("audit", str(inventory))


def test_full_table_is_reported_as_dropping(vm_lab, tmp_path):
    vm = vm_lab.start("bookworm-1g", "bw-full")
    try:
        inventory = vm_lab.inventory([vm], tmp_path / "inventory.py")
        assert audit(inventory)["verdict"] in ("ok", "drift")
        vm.ssh(f"cat > /root/fill.py <<'EOF'\n{FILL}\nEOF")
        # fill a 64-entry table over this one ssh session, then give the room back so the
        # audit's own new SSH connection is not the packet that gets dropped
        fill = (
            "old=$(sysctl -n net.netfilter.nf_conntrack_max); "
            "sysctl -q -w net.netfilter.nf_conntrack_max=64; python3 /root/fill.py {n}; "
            "sysctl -q -w net.netfilter.nf_conntrack_max=$old"
        )
        vm.ssh(fill.format(n=120), timeout=300)
        first = audit(inventory)
        assert first["verdict"] == "dropping", first
        assert first["table_full_lines"] >= 1 and first["table_full_last"]
        assert first["drop"] > 0
        assert "table full" in first["reason"]
        assert first["drop"] == stat_totals(vm)["drop"]  # the same counter the kernel shows
        vm.ssh(fill.format(n=80), timeout=300)
        second = audit(inventory)
        assert second["drop"] > first["drop"]
    finally:
        vm.kill()
