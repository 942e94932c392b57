"""
conntune settings for every host. All are optional: the defaults below are what conntune does
when a key is absent. Override per group (``group_data/<group>.py``), per host (host data in the
inventory) or per run (``--data key=value``). Unknown ``conntrack_*``/``cake_*`` keys are
refused, so a typo cannot silently fall back to a default.
"""

# --- Table size -------------------------------------------------------------------------------
# nf_conntrack_max. Default (None): MemTotal / 16384 / 2 rounded up to a power of two, the blog's
# rule and the 2.6-era kernel default (64 GB -> 2097152; about 1.2 % of RAM when full).
conntrack_max = None
# conntune never lowers a live nf_conntrack_max that is already higher, unless this is True.
conntrack_allow_shrink = False
# Entries per hash bucket when the table is full: buckets = max / ratio, rounded up to 512.
# 1 is the kernel's own ratio since 5.15; 4 is the blog's stated max/4. Above 4 is refused:
# since 5.15 the kernel drops inserts on long hash chains before the table is full.
conntrack_hashsize_ratio = 1
# Refuse a plan whose worst-case table memory is above this share of RAM.
conntrack_max_memory_percent = 5

# --- Timeouts ---------------------------------------------------------------------------------
# "server" (default): RouterOS values except syn_sent/syn_recv (kernel defaults, longer than the
#   SYN retry schedule) and close_wait 3600 (as kube-proxy; kubernetes#32551).
# "routeros": the RouterOS documented defaults exactly, as the blog applied them.
# "kube-proxy": established 86400 and close_wait 3600 only.
# "kernel": touch no timeout.
# `conntune profiles` prints the table.
conntrack_timeout_profile = "server"
# Single overrides, seconds, short or full sysctl names: {"udp_timeout": 30}.
conntrack_timeouts: dict[str, int] = {}

# --- CAKE -------------------------------------------------------------------------------------
cake = True
# Default (None): the interface of the default route.
cake_interface = None
# Default (None): the link speed the NIC reports. tc units: "1gbit", "950mbit"; a bare number
# is Mbit/s. Required when the NIC reports no speed (most virtual NICs).
cake_bandwidth = None
# besteffort, diffserv3, diffserv4, diffserv8 or precedence.
cake_diffserv = "besteffort"
# CAKE's options for links that are not plain Ethernet to a switch (tc-cake(8)); each is sent
# on every run, so removing one here puts CAKE's default back.
# Flow isolation: triple-isolate (default), dual-srchost, dual-dsthost, hosts, flows, srchost,
# dsthost, flowblind. dual-*host with cake_nat on a NAT router shares per inner host.
cake_flow_isolation = "triple-isolate"
# Fairness by the inner addresses of NAT'd flows (reads conntrack's mappings).
cake_nat = False
# Clear DSCP marks after CAKE has sorted packets into its tins.
cake_wash = False
# Drop redundant pure TCP ACKs: "disabled", "enabled" or "aggressive" (asymmetric uplinks).
cake_ack_filter = "disabled"
# Split GSO super-packets: keeps latency low at low rates; False above ~10 Gbit/s.
cake_split_gso = True
# Expected round-trip time: "50ms", "1s"... or datacentre (100 us), lan (1 ms), metro (10 ms),
# regional (30 ms), internet (100 ms, the default), oceanic (300 ms), satellite (1 s),
# interplanetary (1000 s).
cake_rtt = "internet"
# Per-packet link-layer overhead: bytes (-64..256) or a link preset: ethernet (38, mpu 84),
# docsis (18, mpu 64), pppoe-ptm (30, PTM), bridged-ptm (22, PTM), conservative (48, ATM),
# raw (none: CAKE's default, right for an Ethernet NIC shaped at its own rate).
cake_overhead = "raw"
# Minimum packet size CAKE accounts for, bytes (0..256); None: the preset's, or none.
cake_mpu = None
# One CAKE instance shapes about 2.5 Gbit/s on one CPU (LibreQoS issue #127). Faster links get
# cake_mq (one instance per TX queue) where kernel and tc have it, else CAKE is skipped with the
# reason. True: put one single-queue CAKE there anyway, accepting the cap.
cake_force_single_queue = False

# --- firewalld --------------------------------------------------------------------------------
# "on-change": restart only when this run changed a conntune file and firewalld is active.
# "always" / "never".
firewalld_restart = "on-change"

# "on-change" restarts are never done on a host with Docker older than 28.3.3 (CVE-2025-54388:
# its isolation rules are not restored after a firewalld reload) unless this is True.
firewalld_restart_old_docker = False

# --- Neighbours and undo ------------------------------------------------------------------------
# Keys also set by a sysctl file that sorts after conntune's (or /etc/sysctl.conf), or by
# kube-proxy / Cilium at runtime, are skipped with a warning naming the file and line. True:
# conntune manages them anyway.
conntune_override_conflicts = False
# "absent" undoes conntune on the host (same as `conntune revert`): its files and CAKE unit
# removed, the CAKE qdisc deleted, the live values recorded before its first change restored.
conntune_state = "present"
# Two controllers converging one host at once (a laptop run and the scheduled reconcile): the
# second waits this many seconds for the first, then reports the host as busy. Writes never
# interleave (a host-side lock under /run/conntune).
conntune_lock_wait = 30
