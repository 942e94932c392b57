"""
The baseline: the same job as deploy.py in a container (3 files, the server profile's 15
timeouts live and persisted, hash size and CAKE attempted, firewalld restarted on change where
it runs), written the usual way with pyinfra's built-in operations only.
"""

from pyinfra import host
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from conntune.profiles import SERVER

changed = []
for key, value in SERVER.items():
    changed.append(
        server.sysctl(
            name=f"sysctl {key}",
            key=key,
            value=value,
            persist=True,
            persist_file="/etc/sysctl.d/90-conntune.conf",
        )
    )
changed.append(
    files.line(
        name="modprobe options",
        path="/etc/modprobe.d/conntune.conf",
        line="options nf_conntrack hashsize=262144",
    )
)
changed.append(
    files.line(name="modules-load", path="/etc/modules-load.d/conntune.conf", line="nf_conntrack")
)
server.shell(
    name="hash size and CAKE (read-only / absent in a container)",
    commands=[
        "echo 262144 > /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || true",
        "tc qdisc replace dev eth0 root cake bandwidth 1gbit besteffort 2>/dev/null || true",
    ],
)
if host.data.get("bench_firewalld", True):  # False on the sshd-only bench hosts (no systemd)
    systemd.service(
        name="restart firewalld", service="firewalld", restarted=True, _if=any_changed(*changed)
    )
