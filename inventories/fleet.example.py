"""
An example fleet: copy to ``inventories/fleet.py`` and edit. Groups are module-level lists;
group settings live in ``group_data/<group>.py`` or in the second element of a tuple.

Host keys are checked strictly: every host's key must be in ``ssh_known_hosts_file`` first
(``ssh-keyscan -H host >> ~/.ssh/known_hosts`` after verifying it out of band). pyinfra's
default, accept-new, would trust whatever answers on first contact.
"""

_ssh = {
    "ssh_user": "ops",
    "_sudo": True,  # conntune writes sysctls, /etc and qdiscs: root, via sudo
    "ssh_strict_host_key_checking": "yes",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
}

# Docker hosts behind NAT, like the blog's: 1 GbE, RouterOS timeouts as the blog chose.
docker_hosts = (
    [
        ("reimu.example.net", {"cake_interface": "net0"}),
        "marisa.example.net",
    ],
    {**_ssh, "conntrack_timeout_profile": "server"},
)

# Kubernetes nodes: kube-proxy sets its own conntrack values; keep its timeouts, no CAKE.
k8s_nodes = (
    ["node-1.example.net", "node-2.example.net"],
    {**_ssh, "conntrack_timeout_profile": "kube-proxy", "cake": False},
)

# VMs whose virtio NIC reports no speed: give CAKE the provisioned rate.
vms = (["edge-1.example.net"], {**_ssh, "cake_bandwidth": "950mbit"})
