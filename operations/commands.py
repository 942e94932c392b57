"""
The remote commands conntune's operations send, built from ``StringCommand``/``QuoteString``
(no value is ever formatted into a shell string), and the ``--diff`` printer they share.
"""

from __future__ import annotations

import posixpath

from pyinfra import host, logger, state
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS

from conntune import paths
from conntune.facts.reading import script_functions
from conntune.hostfacts import HASHSIZE_PARAMETER


def show_diff(lines: list[str]) -> None:
    """Log ``--diff`` lines once per run: at change detection, or at execution under ``-y``."""
    if not state.config.DIFF:
        return
    if state.is_executing and state.should_check_for_changes():
        return
    for line in lines:
        logger.info(f"{host.print_prefix}  {line}")


def connector_arguments() -> dict[str, object]:
    """
    How the current operation runs its commands (``_sudo``, ``_sudo_password``...), for the
    extra commands a ``FunctionCommand`` sends: pyinfra does not pass them on by itself.
    """
    arguments = host.current_op_global_arguments or {}
    return {key: arguments[key] for key in CONNECTOR_ARGUMENT_KEYS if key in arguments}


def live_command(
    sysctls: dict[str, object], buckets: int | None, load: bool = False, record: bool = False
) -> StringCommand:
    """
    The hash size first (the table is resized in place), then the sysctls, in order. With
    ``record``, the counters as they stand go to ``paths.COUNTERS_FILE``: the audit then tells
    the drops since this change from the drops before it.
    """
    # the shell function the record needs is defined first: a definition inside the && chain
    # would end the chain at its closing line
    bits: list[object] = [script_functions("table_full_lines")] if record else []
    if load:
        bits += ["modprobe", "nf_conntrack", "&&"]
    if buckets is not None:
        bits += ["printf", "'%s\\n'", QuoteString(str(buckets)), ">", HASHSIZE_PARAMETER, "&&"]
    writes = [QuoteString(f"{key}={value}") for key, value in sysctls.items()]
    bits += ["sysctl", "-q", "-w", *writes] if writes else ["true"]
    if record:
        bits += ["&&", *_RECORD]
    return StringCommand(*bits)


_TEMP = f"{paths.COUNTERS_FILE}.tmp"
_RECORD = [
    "mkdir", "-p", paths.STATE_DIR, "&&", "{", "printf", "'tablefull %s boot %s\\n'",
    '"$(table_full_lines | wc -l)"', '"$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)";',
    "cat", "/proc/net/stat/nf_conntrack", "2>/dev/null", "||",
    "conntrack", "-S", "2>/dev/null;", "}", ">", _TEMP, "&&", "mv", "-f", _TEMP,
    paths.COUNTERS_FILE,
]  # fmt: skip


def _write_file(path: str, content: str) -> list[object]:
    """Write ``content`` to a temp file beside ``path``, then rename: never a truncated file."""
    directory, name = posixpath.split(path)
    temp = posixpath.join(directory, f".{name}.conntune-tmp")
    return [
        "mkdir", "-p", QuoteString(directory), "&&",
        "printf", "%s", QuoteString(content), ">", QuoteString(temp), "&&",
        "chmod", "0644", QuoteString(temp), "&&",
        "mv", "-f", QuoteString(temp), QuoteString(path),
    ]  # fmt: skip


def files_command(files: dict[str, str | None], enable_unit: bool = False) -> StringCommand:
    """Write (atomically) or remove each file; keep the CAKE unit's enablement in step."""
    unit_changed = paths.CAKE_UNIT_FILE in files
    bits: list[object] = ["umask", "022"]
    if unit_changed and files[paths.CAKE_UNIT_FILE] is None:
        bits += [
            "&&",
            "{",
            "systemctl",
            "disable",
            "--now",
            paths.CAKE_UNIT,
            "||",
            "true",
            ";",
            "}",
        ]
    # when removing, the undo record goes last: everything else is undone by then
    for path in sorted(files, key=lambda path: path == paths.ORIGINAL_FILE):
        content = files[path]
        if content is None and path == paths.ORIGINAL_FILE:
            bits += ["&&", "rm", "-f", paths.COUNTERS_FILE, QuoteString(path)]
        elif content is None:
            bits += ["&&", "rm", "-f", QuoteString(path)]
        else:
            bits += ["&&", *_write_file(path, content)]
    if unit_changed:
        bits += ["&&", "systemctl", "daemon-reload"]
    if enable_unit:
        bits += ["&&", "systemctl", "enable", paths.CAKE_UNIT]
    return StringCommand(*bits)


# printed when firewall-cmd(1) --check-config refuses firewalld's own configuration
CONFIG_INVALID = "conntune:firewalld-config-invalid"


def restart_firewalld() -> StringCommand:
    """
    ``systemctl restart firewalld``, after ``firewall-cmd --check-config`` passes (where
    firewall-cmd exists): a configuration firewalld would refuse never takes the firewall down.
    One command, so a first apply stays within its remote-command budget; a refusal prints
    ``CONFIG_INVALID`` and restarts nothing.
    """
    return StringCommand(
        "if", "command", "-v", "firewall-cmd", ">/dev/null", "&&", "!",
        "firewall-cmd", "--check-config", ">&2;", "then", "echo", CONFIG_INVALID + ";", "false;",
        "else", "systemctl", "restart", "firewalld;", "fi",
    )  # fmt: skip


FIREWALLD_ACTIVE = StringCommand("systemctl", "is-active", "--quiet", "firewalld")


# Docker re-creates its chains when firewalld signals Reloaded, about 10 s after a restart
# (measured on Debian 12 with docker.io 20.10, docs/kernel-facts.md §8): wait for both its
# filter and its nat chain (the published ports' DNAT rules), at most 60 s
DOCKER_CHAINS = StringCommand(
    "i=0;", "until", "iptables", "-n", "-L", "DOCKER", ">/dev/null", "2>&1", "&&",
    "iptables", "-t", "nat", "-n", "-L", "DOCKER", ">/dev/null", "2>&1;", "do",
    "[", "$i", "-ge", "120", "]", "&&", "exit", "1;", "sleep", "0.5;", "i=$((i+1));", "done",
)  # fmt: skip
