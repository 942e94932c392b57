"""
Conntrack timeout profiles, in seconds, keyed by sysctl name.

Sources (docs/kernel-facts.md §4): MikroTik RouterOS "Connection tracking" documented
defaults; Linux defaults from Documentation/networking/nf_conntrack-sysctl.rst and
nf_conntrack_proto_*.c; kube-proxy pkg/proxy/conntrack and defaults.go.
"""

from __future__ import annotations

P = "net.netfilter.nf_conntrack_"

# Every timeout a profile may set, with the Linux default for reference (and `conntune plan`).
LINUX_DEFAULTS: dict[str, int] = {
    f"{P}tcp_timeout_syn_sent": 120,
    f"{P}tcp_timeout_syn_recv": 60,
    f"{P}tcp_timeout_established": 432000,
    f"{P}tcp_timeout_fin_wait": 120,
    f"{P}tcp_timeout_close_wait": 60,
    f"{P}tcp_timeout_last_ack": 30,
    f"{P}tcp_timeout_time_wait": 120,
    f"{P}tcp_timeout_close": 10,
    f"{P}tcp_timeout_max_retrans": 300,
    f"{P}tcp_timeout_unacknowledged": 300,
    f"{P}udp_timeout": 30,
    f"{P}udp_timeout_stream": 120,
    f"{P}icmp_timeout": 30,
    f"{P}icmpv6_timeout": 30,
    f"{P}generic_timeout": 600,
}

# RouterOS documented defaults, exactly as the blog copied them. RouterOS tracks *forwarded*
# flows of a router; "loose-tcp-tracking yes" equals Linux's default nf_conntrack_tcp_loose=1,
# so it needs no setting.
ROUTEROS: dict[str, int] = {
    f"{P}tcp_timeout_syn_sent": 5,
    f"{P}tcp_timeout_syn_recv": 5,
    f"{P}tcp_timeout_established": 86400,
    f"{P}tcp_timeout_fin_wait": 10,
    f"{P}tcp_timeout_close_wait": 10,
    f"{P}tcp_timeout_last_ack": 10,
    f"{P}tcp_timeout_time_wait": 10,
    f"{P}tcp_timeout_close": 10,
    f"{P}tcp_timeout_max_retrans": 300,
    f"{P}tcp_timeout_unacknowledged": 300,
    f"{P}udp_timeout": 10,
    f"{P}udp_timeout_stream": 180,
    f"{P}icmp_timeout": 10,
    f"{P}icmpv6_timeout": 10,
    f"{P}generic_timeout": 600,
}

# RouterOS values, except where they hurt an end host:
SERVER: dict[str, int] = {
    **ROUTEROS,
    # A SYN_SENT entry must outlive the SYN retry schedule (1, 3, 7, 15 s... tcp_syn_retries=6
    # spans ~127 s): RouterOS's 5 s expires it after the second retry. Kernel default kept.
    f"{P}tcp_timeout_syn_sent": 120,
    # Same for SYN_RECV against SYN-ACK retries (tcp_synack_retries=5, ~63 s). Kernel default.
    f"{P}tcp_timeout_syn_recv": 60,
    # kube-proxy sets 1 h on purpose: a short CLOSE_WAIT expiry broke NAT'd FINs of
    # long-lived half-closed connections (kubernetes#32551).
    f"{P}tcp_timeout_close_wait": 3600,
}

# What kube-proxy itself sets (established 24 h, close_wait 1 h); everything else untouched.
KUBE_PROXY: dict[str, int] = {
    f"{P}tcp_timeout_established": 86400,
    f"{P}tcp_timeout_close_wait": 3600,
}

PROFILES: dict[str, dict[str, int]] = {
    "server": SERVER,
    "routeros": ROUTEROS,
    "kube-proxy": KUBE_PROXY,
    "kernel": {},  # touch nothing
}
DEFAULT_PROFILE = "server"

# proc_dointvec_jiffies stores seconds * HZ in an int: above INT_MAX / 1000 a HZ=1000 kernel
# refuses the write (kernel/sysctl.c, do_proc_dointvec_jiffies_conv).
MAX_TIMEOUT = 2147483647 // 1000


def timeout_key(name: str) -> str:
    """Full sysctl name for a timeout given in full or short form (``udp_timeout``)."""
    name = name.strip()
    for prefix in ("net.netfilter.nf_conntrack_", "nf_conntrack_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return P + name


def short_name(key: str) -> str:
    return key.removeprefix(P)
