"""
The one remote command that reads everything conntune needs from a host, and its parser.

Every SSH round trip costs, and the common case of a scheduled run is "nothing to do", so the
whole reading is one POSIX shell script: each section prints a marker line, then the raw output
of a tool. Each probe tolerates a missing tool or file (no section ever makes the script fail);
the parser turns missing or unreadable sections into ``None`` and records them in
``HostFacts.unreadable``. Pure Python: the fact, the CLI and the tests share it.
"""

from __future__ import annotations

from conntune.hostfacts import Firewalld, HostFacts, Interface
from conntune.paths import CAKE_UNIT, OWNED_FILES
from facts import parse

MARKER = "@@conntune:"
# The kernel's conntrack table-full lines, filtered on the host so only they cross the wire; the
# same rule as parse.table_full_events ("expectation table full" is another limit). Shared by
# the host reading (the lines) and `conntune watch` (their count, every second).
TABLE_FULL_LINES = (
    "{ dmesg --time-format iso 2>/dev/null || dmesg 2>/dev/null; } "
    "| grep -i 'conntrack.*table full' | grep -iv 'expectation table full'"
)
UNREADABLE = "%%conntune-unreadable%%"

_FILES = " ".join(OWNED_FILES)

# Paths are fixed strings; nothing from the inventory is formatted into this script.
SCRIPT = rf"""
export LC_ALL=C PATH="$PATH:/usr/sbin:/sbin"
S() {{ printf '\n{MARKER}%s\n' "$1"; }}
S uid; id -u
S kernel; uname -r
S meminfo; cat /proc/meminfo
S nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN
S route; ip -o route show default 2>/dev/null
dev=$(ip -o route show default 2>/dev/null | awk '{{for(i=1;i<NF;i++) if($i=="dev"){{print $(i+1); exit}}}}')
S netdev
for d in /sys/class/net/*; do
  [ -e "$d" ] || continue
  printf '%s %s %s %s\n' "${{d##*/}}" "$(cat "$d/speed" 2>/dev/null || echo -)" \
    "$(cat "$d/operstate" 2>/dev/null || echo -)" "$(cat "$d/carrier" 2>/dev/null || echo -)"
done
S ethtool; [ -n "$dev" ] && ethtool "$dev" 2>/dev/null | grep -E '^[[:space:]]*Speed:'
S tc; command -v tc
S qdisc; tc -j -s qdisc show 2>/dev/null
S modules; awk '$1 ~ /^(nf_conntrack|sch_cake)$/ {{print $1}}' /proc/modules 2>/dev/null
S cake
if grep -q '^sch_cake ' /proc/modules 2>/dev/null || modprobe -n -q sch_cake 2>/dev/null; then echo yes; else echo no; fi
S sysctl; sysctl -e net.netfilter 2>/dev/null; sysctl -e net.nf_conntrack_max 2>/dev/null
S modes
stat -c '%a %n' /proc/sys/net/netfilter/nf_conntrack_max /proc/sys/net/netfilter/nf_conntrack_buckets 2>/dev/null
S procsys; awk '$2=="/proc/sys" {{print $4}}' /proc/mounts 2>/dev/null
S hashsize; cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null
S stat; cat /proc/net/stat/nf_conntrack 2>/dev/null || {{ echo; conntrack -S 2>/dev/null; }}
S slab; grep -E '^(# name|nf_conntrack )' /proc/slabinfo 2>/dev/null
S tablefull; {TABLE_FULL_LINES}
S dmesg_readable; dmesg >/dev/null 2>&1 && echo yes || echo no
S modprobe_options
L=/lib; [ -L /lib ] && L=
grep -H -n -E '^[[:space:]]*options[[:space:]]+nf_conntrack([[:space:]]|$)' /etc/modprobe.d/*.conf \
  /run/modprobe.d/*.conf /usr/local/lib/modprobe.d/*.conf /usr/lib/modprobe.d/*.conf \
  ${{L:+$L/modprobe.d/*.conf}} 2>/dev/null
S sysctl_files
grep -H -n -E '^[[:space:]]*-?net[./](netfilter[./]nf_conntrack|nf_conntrack_max)' /etc/sysctl.conf \
  /etc/sysctl.d/*.conf /run/sysctl.d/*.conf /usr/local/lib/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf \
  ${{L:+$L/sysctl.d/*.conf}} 2>/dev/null
S firewalld
printf 'installed=%s\n' "$(command -v firewalld >/dev/null 2>&1 || [ -e /usr/sbin/firewalld ] && echo yes)"
printf 'active=%s\n' "$(systemctl is-active firewalld 2>/dev/null)"
printf 'enabled=%s\n' "$(systemctl is-enabled firewalld 2>/dev/null)"
printf 'version=%s\n' "$(dpkg-query -W -f='${{Version}}' firewalld 2>/dev/null || rpm -q --qf '%{{VERSION}}' firewalld 2>/dev/null)"
printf 'cleanup_modules=%s\n' "$(sed -n 's/^CleanupModulesOnExit=//p' /etc/firewalld/firewalld.conf 2>/dev/null)"
S systemd; [ -d /run/systemd/system ] && echo yes
S tools
printf 'sysctl=%s\n' "$(command -v sysctl)"
printf 'conntrack_loadable=%s\n' "$(grep -q '^nf_conntrack ' /proc/modules 2>/dev/null || [ -e /proc/sys/net/netfilter/nf_conntrack_max ] || modprobe -n -q nf_conntrack 2>/dev/null && echo yes)"
printf 'etc_options=%s\n' "$(findmnt -n -o OPTIONS -T /etc 2>/dev/null)"
printf 'etc_free_kb=%s\n' "$(df -Pk /etc 2>/dev/null | awk 'NR==2 {{print $4}}')"
printf 'varlib_free_kb=%s\n' "$(df -Pk /var/lib 2>/dev/null | awk 'NR==2 {{print $4}}')"
S neighbours
printf 'docker=%s\n' "$(dockerd --version 2>/dev/null || docker --version 2>/dev/null)"
printf 'docker_chains=%s\n' "$(command -v dockerd >/dev/null 2>&1 && {{ iptables -n -L DOCKER >/dev/null 2>&1 || nft list chain ip filter DOCKER >/dev/null 2>&1; }} && echo yes)"
printf 'kube_proxy=%s\n' "$(pgrep -x kube-proxy >/dev/null 2>&1 && echo yes)"
printf 'cilium=%s\n' "$(pgrep -x cilium-agent >/dev/null 2>&1 && echo yes)"
S cake_unit; systemctl is-enabled {CAKE_UNIT} 2>/dev/null
for f in {_FILES}; do
  if [ -f "$f" ]; then S "file $f"; cat "$f" 2>/dev/null || echo "{UNREADABLE}"; else S "nofile $f"; fi
done
S end
true
"""


def split_sections(text: str) -> dict[str, str]:
    """Split the script's output into ``{section name: text}``."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARKER):
            current = sections.setdefault(line[len(MARKER) :].strip(), [])
        elif current is not None:
            current.append(line)
    # each section starts after a marker preceded by an empty line: drop that separator
    result = {}
    for name, lines in sections.items():
        while lines and lines[-1] == "":
            lines.pop()
        result[name] = "\n".join(lines) + ("\n" if lines else "")
    return result


def _interfaces(text: str) -> dict[str, Interface]:
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        name, speed, operstate, carrier = parts
        found[name] = Interface(
            name=name,
            speed_mbit=parse.link_speed_mbit(speed),
            operstate=None if operstate == "-" else operstate,
            carrier={"1": True, "0": False}.get(carrier),
        )
    return found


def _writable(modes: str, path: str, procsys_options: str) -> bool | None:
    """
    Whether root may write a sysctl: in a network namespace other than the initial one the kernel
    registers nf_conntrack_max and nf_conntrack_buckets 0444 (nf_conntrack_standalone.c,
    nf_conntrack_standalone_init_sysctl), and root obeys sysctl mode bits (proc_sys_permission).
    """
    for line in modes.splitlines():
        mode, _, name = line.partition(" ")
        if name.strip() == path and mode.isdigit():
            if "ro" in procsys_options.strip().split(","):
                return False
            return bool(int(mode, 8) & 0o200)
    return None


def host_facts(text: str) -> HostFacts:
    """Build ``HostFacts`` from the output of ``SCRIPT``. Never raises on odd output."""
    s = split_sections(text)
    facts = HostFacts()
    unreadable = facts.unreadable

    facts.uid = parse.int_or_none(s.get("uid"))
    facts.kernel = (s.get("kernel") or "").strip() or None
    try:
        facts.mem_bytes = parse.meminfo_bytes(s.get("meminfo", ""))
    except ValueError:
        unreadable.append("MemTotal (/proc/meminfo)")
    facts.cpus = parse.int_or_none(s.get("nproc"))

    facts.default_iface = parse.default_route_dev(s.get("route", ""))
    facts.interfaces = _interfaces(s.get("netdev", ""))
    facts.ethtool_speed_mbit = parse.link_speed_mbit(s.get("ethtool", ""))
    facts.tc_path = (s.get("tc") or "").strip() or None
    facts.qdiscs = parse.qdiscs(s.get("qdisc", ""))
    if facts.tc_path is None:
        unreadable.append("qdiscs (tc not installed)")

    modules = set((s.get("modules") or "").split())
    facts.sysctls = {
        key: value
        for key, value in parse.sysctl(s.get("sysctl", "")).items()
        if key.startswith(("net.netfilter.nf_conntrack", "net.nf_conntrack"))
    }
    facts.conntrack_loaded = "nf_conntrack" in modules or "net.netfilter.nf_conntrack_max" in (
        facts.sysctls
    )
    facts.cake_available = (s.get("cake") or "").strip() == "yes"

    procsys = s.get("procsys", "")
    modes = s.get("modes", "")
    facts.sizing_writable = _writable(modes, "/proc/sys/net/netfilter/nf_conntrack_max", procsys)
    facts.buckets_writable = _writable(
        modes, "/proc/sys/net/netfilter/nf_conntrack_buckets", procsys
    )
    facts.hashsize = parse.int_or_none(s.get("hashsize"))
    if facts.conntrack_loaded and facts.hashsize is None:
        unreadable.append(
            "/sys/module/nf_conntrack/parameters/hashsize (mode 0600: needs root; "
            "using net.netfilter.nf_conntrack_buckets)"
        )

    stat_text = s.get("stat", "")
    facts.stats = parse.conntrack_stat(stat_text) or parse.conntrack_cli_stats(stat_text)
    facts.slab_objsize = parse.slab_objsize(s.get("slab", ""))
    if facts.conntrack_loaded and facts.slab_objsize is None:
        unreadable.append("nf_conntrack slab object size (/proc/slabinfo needs root)")

    facts.table_full_lines = [
        line for line in (s.get("tablefull") or "").splitlines() if parse.table_full_events(line)
    ]
    if (s.get("dmesg_readable") or "").strip() == "no":
        unreadable.append("kernel log (dmesg restricted: needs root)")

    facts.modprobe_options = parse.grep_lines(s.get("modprobe_options", ""))
    facts.sysctl_file_lines = parse.grep_lines(s.get("sysctl_files", ""))

    fw = parse.key_values(s.get("firewalld", ""))
    facts.firewalld = Firewalld(
        installed=fw.get("installed") == "yes" or bool(fw.get("version")),
        active=fw.get("active") == "active",
        enabled=fw.get("enabled") == "enabled",
        version=fw.get("version") or None,
        cleanup_modules_on_exit=fw.get("cleanup_modules") or None,
    )
    facts.systemd = (s.get("systemd") or "").strip() == "yes"

    tools = parse.key_values(s.get("tools", ""))
    facts.sysctl_path = tools.get("sysctl") or None
    facts.conntrack_loadable = tools.get("conntrack_loadable") == "yes"
    facts.etc_read_only = "ro" in (tools.get("etc_options") or "").split(",")
    facts.etc_free_kb = parse.int_or_none(tools.get("etc_free_kb"))
    facts.varlib_free_kb = parse.int_or_none(tools.get("varlib_free_kb"))

    neighbours = parse.key_values(s.get("neighbours", ""))
    facts.docker_version = neighbours.get("docker") or None
    facts.docker_chains = neighbours.get("docker_chains") == "yes"
    facts.kube_proxy = neighbours.get("kube_proxy") == "yes"
    facts.cilium = neighbours.get("cilium") == "yes"
    facts.cake_unit_enabled = (s.get("cake_unit") or "").strip() == "enabled"

    for name, content in s.items():
        kind, _, path = name.partition(" ")
        if kind == "file":
            if content.strip() == UNREADABLE:
                unreadable.append(f"{path} (not readable)")
                facts.owned_files[path] = None
            else:
                facts.owned_files[path] = content
        elif kind == "nofile":
            facts.owned_files[path] = None

    facts.complete = "end" in s
    if not facts.complete:
        unreadable.append("host reading was cut short")
    return facts
