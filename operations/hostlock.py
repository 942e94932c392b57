"""
The host lock around conntune's write commands (``hostlock.sh``): two controllers converging
one host at the same moment never interleave their writes. The second waits up to
``conntune_lock_wait`` seconds, then fails that host as busy; if the first changed the host
while the second waited, the second changes nothing and says to run again.

A run's lock is a plain mapping, so it can be an operation argument::

    {"token": "laptop-4242-1f2e3d4c", "generation": 3, "wait": 30, "release": False,
     "stale": "-"}

``generation`` is the lease generation the run read (``HostFacts.lease``); the run's last write
command has ``release`` set. A lease whose holder ran on this controller and whose process is
gone (a run cut off mid-apply) is ``stale``: it is taken over at once instead of waiting for it
to expire.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from functools import cache
from importlib.resources import files

from pyinfra.api import QuoteString, StringCommand

# Longer than any one write step (a firewalld restart and waiting for nf_conntrack to come
# back take up to ~70 s): a run that died holding the lease frees the host after this
LEASE_SECONDS = 120


@cache
def functions() -> str:
    return files(__package__).joinpath("hostlock.sh").read_text()


@cache
def run_token() -> str:
    """This controller run's name in the lease: host, pid and a random part."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:40] or "controller"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def dead_here(holder: str | None) -> bool:
    """Whether a lease holder was a conntune run on this controller that is no longer running."""
    if not holder:
        return False
    name, _, rest = holder.rpartition("-")[0].rpartition("-")
    pid = rest if name else ""
    if name != run_token().rsplit("-", 2)[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lock_for(generation: int, wait: int, release: bool = False, stale: str | None = None) -> dict:
    return {"token": run_token(), "generation": generation, "wait": wait, "release": release,
            "stale": stale or "-"}  # fmt: skip


def release_command(lock: dict) -> StringCommand:
    return StringCommand(functions(), "lease_release", QuoteString(str(lock["token"])))


def locked(command: StringCommand, lock: dict | None, release: bool | None = None) -> StringCommand:
    """``command`` run only while this run holds the host lock; released after it if asked."""
    if lock is None:
        return command
    token = QuoteString(str(lock["token"]))
    take = [
        "lease_take", token, QuoteString(str(lock["generation"])), str(LEASE_SECONDS),
        QuoteString(str(lock["wait"])), QuoteString(str(lock.get("stale", "-"))),
    ]  # fmt: skip
    release = lock["release"] if release is None else release
    if not release:
        return StringCommand(functions(), *take, "&&", "{", command, ";", "}")
    return StringCommand(
        functions(), *take, "||", "exit", "$?", ";",
        "{", command, ";", "}", ";", "rc=$?", ";", "lease_release", token, ";", "exit", "$rc",
    )  # fmt: skip
