#!/bin/bash
# Runs INSIDE a test VM as root (piped in by capture-fixtures.sh). Writes the raw stdout of each
# command, byte for byte, to /root/cap/FILE and a log of what was run to /root/capmeta/.
# It deliberately overflows the conntrack table (nf_conntrack_max=64) and restores it afterwards,
# all within this one SSH session (new SSH logins fail while the table is full).
set -u
C=/root/cap; M=/root/capmeta
rm -rf "$C" "$M"; mkdir -p "$C" "$M"
# run FILE 'shell command'   -> stdout to $C/FILE (stderr to $M/stderr/FILE), command logged
mkdir -p "$M/stderr"
run() {
  local f=$1; shift
  bash -c "$*" > "$C/$f" 2> "$M/stderr/$f"
  local rc=$?
  printf '%s\t%s\t%s\n' "$f" "$rc" "$*" >> "$M/commands.tsv"
  [ -s "$M/stderr/$f" ] || rm -f "$M/stderr/$f"
}
note() { echo "$*" >> "$M/notes.txt"; }
# excerpt: from 20 lines before the first 'table full' line to 20 lines after the last one
excerpt='awk '"'"'/table full/ {if (!f) f = NR; l = NR} {a[NR] = $0} END {if (!f) exit 1; s = f - 20; if (s < 1) s = 1; e = l + 20; if (e > NR) e = NR; for (i = s; i <= e; i++) print a[i]}'"'"

timeout 180 systemctl is-system-running --wait > /dev/null 2>&1
note "system state: $(systemctl is-system-running)"
note "capture start: $(date -u +%FT%TZ)"
note "lsmod netfilter/sched: $(lsmod | awk '$1 ~ /^(nf_conntrack|nf_tables|sch_cake|sch_fq_codel)$/ {printf "%s ", $1}')"

# ---------------- host facts ----------------
run os-release.txt 'cat /etc/os-release'
run meminfo.txt 'cat /proc/meminfo'
run nproc.txt 'nproc'
run uname_r.txt 'uname -r'

# ---------------- conntrack, idle ----------------
run proc_net_stat_nf_conntrack.idle.txt 'cat /proc/net/stat/nf_conntrack'
run conntrack_S.txt 'conntrack -S'
run conntrack_C.txt 'conntrack -C'
run sysctl_net_netfilter.txt 'sysctl net.netfilter'
run sysctl_a_grep_conntrack.txt 'sysctl -a 2>/dev/null | grep conntrack'
run sys_module_nf_conntrack_parameters_hashsize.txt 'cat /sys/module/nf_conntrack/parameters/hashsize'
run stat_conntrack_files.txt "stat -c '%a %n' /proc/sys/net/netfilter/nf_conntrack_max /proc/sys/net/netfilter/nf_conntrack_buckets /sys/module/nf_conntrack/parameters/hashsize"

# ---------------- NIC / routes ----------------
run sys_class_net_eth0_speed.txt 'cat /sys/class/net/eth0/speed 2>&1'
run sys_class_net_eth0_duplex.txt 'cat /sys/class/net/eth0/duplex 2>&1'
run sys_class_net_lo_speed.txt 'cat /sys/class/net/lo/speed 2>&1'
run ethtool_eth0.txt 'ethtool eth0'
run ethtool_lo.txt 'ethtool lo'
run ip_o_route_show_default.txt 'ip -o route show default'
run ip_j_route_show_default.json 'ip -j route show default'

# ---------------- qdisc: default ----------------
run tc_j_s_qdisc.default.json 'tc -j -s qdisc show'
run tc_j_qdisc.default.json 'tc -j qdisc show'
run tc_s_qdisc.default.txt 'tc -s qdisc show'
run tc_j_s_qdisc_dev_eth0.default.json 'tc -j -s qdisc show dev eth0'

# ---------------- qdisc: cake 1000mbit besteffort ----------------
tc qdisc replace dev eth0 root cake bandwidth 1000mbit besteffort; note "cake 1000mbit besteffort rc=$?"
run tc_j_s_qdisc.cake_1000mbit.json 'tc -j -s qdisc show'
run tc_j_qdisc.cake_1000mbit.json 'tc -j qdisc show'
run tc_s_qdisc.cake_1000mbit.txt 'tc -s qdisc show'
run tc_j_s_qdisc_dev_eth0.cake_1000mbit.json 'tc -j -s qdisc show dev eth0'

# ---------------- qdisc: cake 10mbit diffserv4 + traffic ----------------
tc qdisc replace dev eth0 root cake bandwidth 10mbit diffserv4; note "cake 10mbit diffserv4 rc=$?"
ping -c 200 -i 0.01 -s 1200 10.0.2.2 > "$M/ping_gateway.txt" 2>&1; note "ping 10.0.2.2 rc=$? ($(tail -2 "$M/ping_gateway.txt" | head -1))"
# one flow per diffserv4 tin: CS1 (Bulk), default (Best Effort), AF41 (Video), EF (Voice)
for tos in 0x20 0x00 0x88 0xb8; do ping -c 30 -i 0.01 -s 1000 -Q $tos 10.0.2.2 > /dev/null 2>&1; done
# UDP blast well above 10 Mbit/s so the shaper queues (and maybe drops)
python3 - <<'EOF' >> "$M/notes.txt" 2>&1
import socket, time
sent = 0
socks = []
for tos in (0x20, 0x00, 0x88, 0xb8):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    s.setblocking(False)
    socks.append(s)
end = time.time() + 3
payload = b"x" * 1400
err = 0
while time.time() < end:
    for i, s in enumerate(socks):
        try:
            s.sendto(payload, ("10.0.2.2", 9000 + i)); sent += 1
        except OSError:
            err += 1
print(f"udp blast: sent={sent} send_errors={err}")
EOF
run tc_j_s_qdisc.cake_10mbit_diffserv4_traffic.json 'tc -j -s qdisc show'
run tc_j_qdisc.cake_10mbit_diffserv4_traffic.json 'tc -j qdisc show'
run tc_s_qdisc.cake_10mbit_diffserv4_traffic.txt 'tc -s qdisc show'
run tc_j_s_qdisc_dev_eth0.cake_10mbit_diffserv4_traffic.json 'tc -j -s qdisc show dev eth0'

run proc_net_stat_nf_conntrack.after_traffic.txt 'cat /proc/net/stat/nf_conntrack'
run conntrack_S.after_traffic.txt 'conntrack -S'
run conntrack_C.after_traffic.txt 'conntrack -C'
run slabinfo.txt 'head -2 /proc/slabinfo; grep nf_conntrack /proc/slabinfo'

# ---------------- firewalld ----------------
run firewalld_info.txt "systemctl is-active firewalld; systemctl is-enabled firewalld; dpkg-query -W -f='\${Version}\n' firewalld; grep -E '^CleanupModulesOnExit' /etc/firewalld/firewalld.conf; cat /usr/lib/modprobe.d/*firewalld* /etc/modprobe.d/*firewalld* 2>/dev/null"
note "firewalld modprobe files: $(ls /usr/lib/modprobe.d/*firewalld* /etc/modprobe.d/*firewalld* 2>/dev/null | tr '\n' ' ')"

# ---------------- conntrack table overflow ----------------
# Is loopback traffic tracked with firewalld's ruleset alone?
python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 8999)); s.listen(1)
c = socket.create_connection(("127.0.0.1", 8999)); a, _ = s.accept()
import subprocess; print(subprocess.run(["conntrack", "-L", "-p", "tcp", "--dport", "8999"], capture_output=True, text=True).stdout, end="")
' > "$M/loopback_tracked.txt" 2>&1
if grep -q 'dport=8999' "$M/loopback_tracked.txt"; then
  note "loopback tracked by firewalld ruleset alone: yes"
else
  note "loopback tracked by firewalld ruleset alone: no -> adding nft ct rule"
  nft add table inet conntune_capture
  nft add chain inet conntune_capture c '{ type filter hook output priority 0; }'
  nft add rule inet conntune_capture c ct state new counter
fi
old_max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
old_buckets=$(cat /proc/sys/net/netfilter/nf_conntrack_buckets)
note "before overflow: max=$old_max buckets=$old_buckets count=$(cat /proc/sys/net/netfilter/nf_conntrack_count)"
echo "conntune-capture: starting conntrack overflow (max 64)" > /dev/kmsg
sysctl -q -w net.netfilter.nf_conntrack_buckets=512
sysctl -q -w net.netfilter.nf_conntrack_max=64
note "during overflow: max=$(cat /proc/sys/net/netfilter/nf_conntrack_max) buckets=$(cat /proc/sys/net/netfilter/nf_conntrack_buckets)"
python3 - <<'EOF' >> "$M/notes.txt" 2>&1
import socket, time
# 1) non-assured UDP entries (unanswered datagrams to closed ports): early_drop candidates
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(20000, 20400):
    try:
        u.sendto(b"x", ("127.0.0.1", port))
    except OSError:
        pass
# 2) assured TCP entries (completed handshakes, held open): cannot be early-dropped -> "table full"
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9000)); srv.listen(4096); srv.setblocking(False)
clients, accepted = [], []
def drain():
    while True:
        try:
            a, _ = srv.accept(); accepted.append(a)
        except BlockingIOError:
            return
for i in range(300):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", 9000)); clients.append(c)
    if i % 10 == 0:
        drain(); time.sleep(0.01)
end = time.time() + 8          # let SYN retransmits (1 s, 3 s, 7 s) hit the full table too
while time.time() < end:
    drain(); time.sleep(0.2)
print(f"overflow: tcp clients={len(clients)} accepted={len(accepted)}")
with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
    print("overflow: nf_conntrack_count while held =", f.read().strip())
import subprocess
for name, cmd in (("proc_net_stat_nf_conntrack.after_overflow.txt", "cat /proc/net/stat/nf_conntrack"),
                  ("conntrack_S.after_overflow.txt", "conntrack -S"),
                  ("conntrack_C.after_overflow.txt", "conntrack -C")):
    with open("/root/cap/" + name, "wb") as f:
        rc = subprocess.run(["bash", "-c", cmd], stdout=f).returncode
    with open("/root/capmeta/commands.tsv", "a") as m:
        m.write(f"{name}\t{rc}\t{cmd}\n")
for s in clients + accepted:
    s.close()
EOF
sysctl -q -w net.netfilter.nf_conntrack_max="$old_max"
sysctl -q -w net.netfilter.nf_conntrack_buckets="$old_buckets"
nft delete table inet conntune_capture 2>/dev/null
echo "conntune-capture: conntrack overflow done, max restored" > /dev/kmsg
note "after restore: max=$(cat /proc/sys/net/netfilter/nf_conntrack_max) buckets=$(cat /proc/sys/net/netfilter/nf_conntrack_buckets) count=$(cat /proc/sys/net/netfilter/nf_conntrack_count)"
# some ordinary kernel lines after the table-full ones ("bash (PID): drop_caches: 3")
sleep 1; echo 3 > /proc/sys/vm/drop_caches; sleep 1
run dmesg_full.txt 'dmesg'
run dmesg_table_full.txt "dmesg | $excerpt"
run dmesg_iso_table_full.txt "dmesg --time-format iso | $excerpt"
run journalctl_k_table_full.txt "journalctl -k --no-pager | $excerpt"
run journalctl_k_iso_table_full.txt "journalctl -k -o short-iso --no-pager | $excerpt"
note "table full lines in dmesg: $(dmesg | grep -c 'table full')"
note "capture end: $(date -u +%FT%TZ)"
