#!/bin/bash
# Runs INSIDE the docker-bookworm test VM as root (adapted from the lab):
#   vm.sh ssh NAME PORT -- bash -s -- ACTION... < tests/vm/docker-fwtest.sh
# e.g. ACTION = systemctl restart firewalld | firewall-cmd --reload
# Needs the container of the image's header (build-image.sh): local/bb:1 published on :8080.
# Fetches through the published port (eth0 address -> Docker's DNAT), runs ACTION, then polls
# every 0.5 s for 30 s: fetch ok?, DOCKER nat chain has the DNAT rule?, docker0 in firewalld's
# docker zone? Prints each change of state with the ms since the action started.
ms() { date +%s%3N; }
IP=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1); U=http://$IP:8080/index.html
state() {
  local f=fail c=no-chain z
  # busybox 1.35's wget -T segfaults: timeout(1) instead
  timeout 3 busybox wget -q -O /dev/null "$U" 2>/dev/null && f=ok
  iptables -t nat -S DOCKER 2>/dev/null | grep -q DNAT && c=dnat-rule
  z=$(firewall-cmd --get-zone-of-interface=docker0 2>/dev/null || echo none)
  echo "fetch=$f nat=$c docker0-zone=$z"
}
echo "before: $(state)"
echo "docker $(docker version --format '{{.Server.Version}}'), firewalld $(firewall-cmd --version)"
t0=$(ms); "$@"; rc=$?; echo "'$*' rc=$rc after $(( $(ms) - t0 )) ms"
last=''; end=$(( $(ms) + 30000 ))
while [ "$(ms)" -lt "$end" ]; do
  s=$(state); [ "$s" != "$last" ] && echo "+$(( $(ms) - t0 )) ms: $s"; last=$s; sleep 0.5
done
journalctl -u docker --since "-40s" -o cat --no-pager | grep -iE 'firewall|reload|iptables' | tail -5
