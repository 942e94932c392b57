#!/bin/bash
# Runs INSIDE a test VM as root (adapted from the lab):
#   vm.sh ssh NAME PORT -- 'cat > /root/holdconn.py' < tests/vm/holdconn.py
#   vm.sh ssh NAME PORT -- bash -s -- CMD ARGS < tests/vm/fwprobe.sh
#   info            kernel, firewalld version/backend/cleanup keys, conntrack sizing, stat file header
#   snap LABEL      conntrack count, entries of the held connections (dport 9000 = holdconn.py,
#                   dport 22 = ssh), nf_conntrack lines of /proc/modules, the nf_conntrack_max marker.
#                   procfs only: the conntrack tool would autoload nf_conntrack(_netlink) itself.
#   hold-start N    start holdconn.py (copied to /root) as echo server on :9000 + N idle connections
#                   to the VM's own eth0 address; hold-stop kills both (pid files in /root)
#   rtest ACTION    snap; run ACTION ("systemctl restart firewalld", "firewall-cmd --reload", ...);
#                   snap right away; poll until firewalld's nft table is back; snap; ping the held
#                   connections (SIGUSR1 to holdconn.py, pid in /root/hold.pid); snap
# bullseye (firewalld 0.9, CleanupOnExit=yes): `rtest systemctl restart firewalld` shows
# nf_conntrack unloaded right after the restart and back with the kernel's default max.
set -u
ms() { date +%s%3N; }
snap() {
  echo "== $1 $(date +%T.%3N)"
  if [ -e /proc/sys/net/netfilter/nf_conntrack_count ]; then
    echo "  count=$(cat /proc/sys/net/netfilter/nf_conntrack_count) max(marker)=$(cat /proc/sys/net/netfilter/nf_conntrack_max)"
    echo "  entries dport=9000: $(grep -c 'dport=9000 ' /proc/net/nf_conntrack)  dport=22 ESTABLISHED: $(grep ESTABLISHED /proc/net/nf_conntrack | grep -c 'dport=22 ')"
  else echo "  nf_conntrack sysctls absent (module not loaded)"; fi
  grep -E '^(nf_conntrack|nft_ct|nf_nat) ' /proc/modules | cut -d' ' -f1,3,4 | sed 's/^/  mod: /'
  grep -q '^nf_conntrack ' /proc/modules || echo "  mod: nf_conntrack NOT loaded"
}
case $1 in
info)
  echo "kernel: $(uname -r)"; echo "firewalld: $(firewall-cmd --version 2>&1)"
  grep -E '^(FirewallBackend|CleanupOnExit|CleanupModulesOnExit|FlushAllOnReload|IndividualCalls)' /etc/firewalld/firewalld.conf
  for f in nf_conntrack_max nf_conntrack_buckets nf_conntrack_count; do
    printf '%s=%s (%s)\n' $f "$(cat /proc/sys/net/netfilter/$f 2>&1)" "$(stat -c %A /proc/sys/net/netfilter/$f 2>&1)"; done
  echo "hashsize param: $(cat /sys/module/nf_conntrack/parameters/hashsize 2>&1)"
  grep MemTotal /proc/meminfo
  if [ -e /proc/net/stat/nf_conntrack ]; then echo "/proc/net/stat/nf_conntrack:"; head -2 /proc/net/stat/nf_conntrack
  else echo "/proc/net/stat/nf_conntrack: missing"; fi
  ;;
snap) snap "$2" ;;
hold-start)
  ip=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
  setsid python3 /root/holdconn.py server 9000 >/root/server.log 2>&1 </dev/null & echo $! >/root/server.pid
  sleep 1
  setsid python3 /root/holdconn.py hold "$ip" 9000 "${2:-5}" >/root/hold.log 2>&1 </dev/null & echo $! >/root/hold.pid
  sleep 1; cat /root/hold.log ;;
hold-stop)
  for f in /root/hold.pid /root/server.pid; do [ -f $f ] && kill "$(cat $f)" 2>/dev/null; rm -f $f; done; true ;;
rtest)
  shift; snap before
  t0=$(ms); "$@"; rc=$?; t1=$(ms); echo "'$*' returned rc=$rc after $((t1 - t0)) ms"
  snap "right after"
  until nft list table inet firewalld >/dev/null 2>&1 && grep -q '^nft_ct ' /proc/modules; do sleep 0.2; done
  t2=$(ms); echo "firewalld nft table + nft_ct back $((t2 - t0)) ms after the start of the action"
  echo "firewall-cmd --state: $(firewall-cmd --state 2>&1)"
  snap "rules back"
  kill -USR1 "$(cat /root/hold.pid)"; sleep 2; echo "  held connections: $(tail -1 /root/hold.log)"
  snap "after ping"
  ;;
esac
