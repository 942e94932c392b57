# conntune host reading (format 2): everything conntune needs from a host, in one POSIX sh
# command. Each section prints a marker line "@@conntune:NAME", then the raw output of a tool,
# so a saved reading can be replayed anywhere (`conntune plan --reading FILE`); README.md,
# "The reading format", documents every section. No section ever makes the script fail, none
# changes the host (only `conntrack -S`, run when /proc/net/stat is absent, may load
# nf_conntrack_netlink), and nothing from the inventory is formatted into it.
#
#   sh reading.sh                  the whole reading (what `pyinfra ... deploy.py` runs)
#   sh reading.sh sample IFACE     the counters `conntune watch` samples every interval
#
# conntune.facts.reading loads this file; the watch sends only the functions it needs.

section() { printf '\n@@conntune:%s\n' "$1"; }

# The kernel's conntrack table-full lines, filtered on the host so only they cross the wire;
# the same rule as conntune.facts.parse.table_full_lines ("expectation table full" is another
# limit).
table_full_lines() {
  { dmesg --time-format iso 2>/dev/null || dmesg 2>/dev/null; } \
    | grep -i 'conntrack.*table full' | grep -iv 'expectation table full'
}

# Conntrack counters: /proc/net/stat/nf_conntrack when the kernel has it
# (CONFIG_NF_CONNTRACK_PROCFS), else conntrack-tools over netlink, only while nf_conntrack is
# loaded (conntrack would load it).
conntrack_counters() {
  section stat
  cat /proc/net/stat/nf_conntrack 2>/dev/null
  if [ ! -e /proc/net/stat/nf_conntrack ] && [ -e /proc/sys/net/netfilter/nf_conntrack_count ]; then
    section conntrack_S
    conntrack -S 2>/dev/null
  fi
}

# nf_conntrack's directives in the modprobe.d files given, as "path:line:text" (grep -H -n's
# shape): a line ending in "\" continues on the next, joined as kmod joins them (modprobe.d(5);
# libkmod-util.c, freadline_wrapped), numbered by its first line.
modprobe_conf() {
  for mc_file in "$@"; do
    shift
    [ -f "$mc_file" ] && [ -r "$mc_file" ] && set -- "$@" "$mc_file"
  done
  [ $# -gt 0 ] || return 0
  awk '
    function emit() {
      if (tolower(line) ~ /^[ \t]*(options|install|remove|softdep)[ \t]+nf[-_]conntrack([ \t]|$)/)
        print file ":" start ":" line
      cont = 0
    }
    FNR == 1 && cont { emit() }
    {
      if (!cont) { file = FILENAME; start = FNR; line = "" }
      line = line $0
      if (line ~ /\\$/) { line = substr(line, 1, length(line) - 1); cont = 1; next }
      emit()
    }
    END { if (cont) emit() }' "$@" 2>/dev/null
}

# CleanupOnExit= and CleanupModulesOnExit= of firewalld.conf on stdin, as firewalld reads them
# (src/firewall/core/io/firewalld_conf.py, read()): "key = value" split on "=", both sides
# stripped; comments, lines with another "=", empty values and repeats of a key are skipped,
# so the first valid line of a key wins.
firewalld_conf() {
  awk -F= '
    { sub(/^[ \t\r]+/, "") }
    /^[#;]/ || NF != 2 { next }
    {
      k = $1; v = $2
      gsub(/^[ \t\r]+|[ \t\r]+$/, "", k); gsub(/^[ \t\r]+|[ \t\r]+$/, "", v)
      if (v != "" && !(k in seen)) seen[k] = v
    }
    END {
      printf "cleanup_on_exit=%s\ncleanup_modules=%s\n", seen["CleanupOnExit"], seen["CleanupModulesOnExit"]
    }'
}

# One line per network device: name, then key=value fields read from /sys/class/net.
netdev() {
  for d in /sys/class/net/*; do
    [ -d "$d" ] || continue  # bonding_masters is a file
    nd_kind=
    while IFS= read -r nd_line; do
      case $nd_line in DEVTYPE=*) nd_kind=${nd_line#DEVTYPE=} ;; esac
    done 2>/dev/null < "$d/uevent"
    nd_lower=
    for l in "$d"/lower_* "$d"/brif/*; do
      [ -e "$l" ] || continue
      nd_name=${l##*/}
      while :; do
        case $nd_name in *lower_*) nd_name=${nd_name%%lower_*}${nd_name#*lower_} ;; *) break ;; esac
      done
      nd_lower=$nd_lower${nd_lower:+,}$nd_name
    done
    txq=0; for q in "$d"/queues/tx-*; do [ -e "$q" ] && txq=$((txq + 1)); done
    nd_speed=; IFS= read -r nd_speed 2>/dev/null < "$d/speed"
    nd_oper=; IFS= read -r nd_oper 2>/dev/null < "$d/operstate"
    nd_carrier=; IFS= read -r nd_carrier 2>/dev/null < "$d/carrier"
    # phys: a device on a bus (its sysfs "device" link): a NIC, not a veth, tap, bridge or bond
    nd_phys=0; [ -e "$d/device" ] && nd_phys=1
    printf '%s speed=%s operstate=%s carrier=%s txqueues=%s kind=%s lower=%s phys=%s\n' "${d##*/}" \
      "$nd_speed" "$nd_oper" "$nd_carrier" "$txq" "$nd_kind" "$nd_lower" "$nd_phys"
  done
}

# What this tc can parse: "help" makes tc print the qdisc's usage and stop before any change
# (tc/q_cake.c, cake_parse_opt); a tc without the qdisc says 'Unknown qdisc'.
tc_knows() {
  tc qdisc add dev lo root "$1" help 2>&1 | head -n 1
}

reading() {
  export LC_ALL=C PATH="$PATH:/usr/sbin:/sbin"
  section format; echo 2
  section uid; id -u
  section caps
  awk '/^CapEff:/ {print "cap_eff=" $2} FILENAME ~ /uid_map$/ && FNR == 1 {print "uid_map=" $1 " " $2 " " $3}' \
    /proc/self/status /proc/self/uid_map 2>/dev/null
  section kernel; uname -r
  section meminfo; cat /proc/meminfo
  section nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN
  section cmdline; cat /proc/cmdline 2>/dev/null
  section route; ip -o route show default 2>/dev/null
  section route6; ip -6 -o route show default 2>/dev/null
  section netdev; netdev
  prev='' seen=' '
  for word in $(ip -o route show default 2>/dev/null; ip -6 -o route show default 2>/dev/null); do
    if [ "$prev" = dev ] && [ -e "/sys/class/net/$word" ]; then
      case $seen in *" $word "*) ;; *)
        seen="$seen$word "
        section "ethtool $word"; ethtool "$word" 2>/dev/null | grep -E '^[[:space:]]*Speed:' ;;
      esac
    fi
    prev=$word
  done
  section tools
  for tool in sysctl modprobe systemctl tc conntrack flock; do
    printf '%s=%s\n' "$tool" "$(command -v "$tool" 2>/dev/null)"
  done
  section tc_version; tc -V 2>&1 | head -n 1
  section tc_cake; tc_knows cake
  section tc_cake_mq; tc_knows cake_mq
  section qdisc; tc -j -s qdisc show 2>&1
  section modules; awk '$1 ~ /^(nf_conntrack|nf_conntrack_netlink|sch_cake)$/ {print $1}' /proc/modules 2>/dev/null
  section cake
  if grep -q '^sch_cake ' /proc/modules 2>/dev/null || modprobe -n -q sch_cake 2>/dev/null; then echo yes; else echo no; fi
  section cake_mq
  if modprobe -n -q net-sch-cake_mq 2>/dev/null; then echo yes; else echo no; fi
  section conntrack_loadable
  if [ -e /proc/sys/net/netfilter/nf_conntrack_max ] || grep -q '^nf_conntrack ' /proc/modules 2>/dev/null \
     || modprobe -n -q nf_conntrack 2>/dev/null; then echo yes; else echo no; fi
  section sysctl
  sysctl -e net.netfilter 2>/dev/null; sysctl -e net.nf_conntrack_max 2>/dev/null
  sysctl -e net.ipv4.netfilter 2>/dev/null
  section modes; stat -c '%a %n' /proc/sys/net/netfilter/* /proc/sys/net/nf_conntrack_max 2>/dev/null
  section mounts; awk '$2 == "/" || $2 ~ /^\/(proc|sys)(\/|$)/' /proc/mounts 2>/dev/null
  section hashsize; cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null
  conntrack_counters
  section slab; grep -E '^(# name|nf_conntrack )' /proc/slabinfo 2>/dev/null
  # the kernel log read once, for the table-full lines and whether it is readable
  if kmsg=$(dmesg --time-format iso 2>/dev/null) || kmsg=$(dmesg 2>/dev/null); then
    kmsg_readable=yes
  else
    kmsg_readable=no
  fi
  section tablefull
  printf '%s\n' "$kmsg" | grep -i 'conntrack.*table full' | grep -iv 'expectation table full'
  section dmesg_readable; echo "$kmsg_readable"; kmsg=
  L=/lib; [ -L /lib ] && L=
  section modprobe_files
  modprobe_conf /etc/modprobe.d/*.conf /run/modprobe.d/*.conf /usr/local/lib/modprobe.d/*.conf \
    /usr/lib/modprobe.d/*.conf ${L:+$L/modprobe.d/*.conf}
  section sysctl_files
  grep -H -n -E 'conntrack|netfilter' /etc/sysctl.conf /etc/sysctl.d/*.conf /run/sysctl.d/*.conf \
    /usr/local/lib/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf ${L:+$L/sysctl.d/*.conf} 2>/dev/null
  section firewalld
  fw=$(command -v firewalld 2>/dev/null || { [ -e /usr/sbin/firewalld ] && echo /usr/sbin/firewalld; })
  printf 'installed=%s\n' "${fw:+yes}"
  printf 'active=%s\n' "$(systemctl is-active firewalld 2>/dev/null)"
  printf 'enabled=%s\n' "$(systemctl is-enabled firewalld 2>/dev/null)"
  v=$(dpkg-query -W -f='${Version}' firewalld 2>/dev/null || rpm -q --qf '%{VERSION}' firewalld 2>/dev/null)
  [ -z "$v" ] && [ -n "$fw" ] && v=$(firewall-offline-cmd --version 2>/dev/null || firewall-cmd --version 2>/dev/null)
  printf 'version=%s\n' "$v"
  if [ -r /etc/firewalld/firewalld.conf ]; then
    firewalld_conf < /etc/firewalld/firewalld.conf
  else
    printf 'cleanup_on_exit=\ncleanup_modules=\n'
  fi
  section systemd; [ -d /run/systemd/system ] && echo yes
  section host
  printf 'etc_options=%s\n' "$(findmnt -n -o OPTIONS -T /etc 2>/dev/null)"
  df -Pk /etc /var/lib 2>/dev/null \
    | awk 'NR==2 {e=$4} NR==3 {v=$4} END {printf "etc_free_kb=%s\nvarlib_free_kb=%s\n", e, v}'
  section neighbours
  printf 'docker=%s\n' "$(dockerd --version 2>/dev/null || docker --version 2>/dev/null)"
  chains=
  if command -v dockerd >/dev/null 2>&1; then
    if iptables -n -L DOCKER >/dev/null 2>&1 || nft list chain ip filter DOCKER >/dev/null 2>&1; then chains=yes; fi
  fi
  printf 'docker_chains=%s\n' "$chains"
  kube=; cilium=  # one pass over /proc for both
  for p in $(pgrep -l -x 'kube-proxy|cilium-agent' 2>/dev/null); do
    case $p in kube-proxy) kube=yes ;; cilium-agent) cilium=yes ;; esac
  done
  printf 'kube_proxy=%s\ncilium=%s\n' "$kube" "$cilium"
  section lock; cat /run/conntune/lease 2>/dev/null
  section counters_at_change; cat /var/lib/conntune/counters-at-change 2>/dev/null
  section boot_id; IFS= read -r bid 2>/dev/null < /proc/sys/kernel/random/boot_id && echo "$bid"
  section cake_unit; systemctl is-enabled conntune-cake.service 2>/dev/null
  for f in /etc/sysctl.d/90-conntune.conf /etc/modprobe.d/conntune.conf \
           /etc/modules-load.d/conntune.conf /etc/systemd/system/conntune-cake.service \
           /var/lib/conntune/original.conf; do
    if [ -f "$f" ]; then
      section "file $f"; cat "$f" 2>/dev/null || echo '%%conntune-unreadable%%'
    else
      section "nofile $f"
    fi
  done
  section end
}

# `conntune watch`: the levels and counters of one sample ($1: the egress device, or empty).
sample() {
  export LC_ALL=C PATH="$PATH:/usr/sbin:/sbin"
  section count; cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null
  section max; cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null
  section buckets; cat /proc/sys/net/netfilter/nf_conntrack_buckets 2>/dev/null
  conntrack_counters
  section tablefull; table_full_lines | wc -l
  section qdisc; [ -n "$1" ] && tc -j -s qdisc show dev "$1" 2>/dev/null
  section end
}

if [ $# -eq 0 ]; then reading; else "$@"; fi
true
