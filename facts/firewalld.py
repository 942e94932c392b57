"""
What firewalld's own check says of its configuration, read before a run that restarts it.

.. code:: python

    from conntune.facts.firewalld import FirewalldConfigProblems
    problems = host.get_fact(FirewalldConfigProblems)
"""

from __future__ import annotations

from pyinfra.api import FactBase
from typing_extensions import override

# the last line of the fact's output: firewall-cmd's exit status
_STATUS = "conntune:check-config-status="


def config_problems(output: str) -> str | None:
    """
    What ``firewall-cmd --check-config`` objected to, from the fact's output: ``""`` when it
    passed, its text (or its exit status when it printed nothing) when it failed, ``None`` when
    the output has no status line (the check did not run).
    """
    lines = output.rstrip("\n").splitlines()
    if not lines or not lines[-1].startswith(_STATUS):
        return None
    status = lines[-1].removeprefix(_STATUS).strip()
    if status == "0":
        return ""
    return "\n".join(lines[:-1]).strip() or f"exit status {status}"


class FirewalldConfigProblems(FactBase[str | None]):
    """
    Returns what ``firewall-cmd --check-config`` (firewall-cmd(1), firewalld 0.9 and later)
    says is wrong with firewalld's permanent configuration: ``""`` when it passes, the
    messages when it fails, ``None`` where firewall-cmd is not installed.

    A restart on a configuration the check refuses would leave firewalld stopped and the host
    without its firewall, so a run that restarts firewalld reads this first (a dry run too).
    The check parses every zone, service and policy file: about a second of CPU on the host.

    .. code:: python

        "ERROR: INVALID_ZONE: conntune-test-bad.xml: not well-formed (invalid token)"
    """

    @override
    def requires_command(self) -> str:
        return "firewall-cmd"

    @override
    def command(self) -> str:
        return f"firewall-cmd --check-config 2>&1; echo {_STATUS}$?"

    @override
    def process(self, output: list[str]) -> str | None:
        return config_problems("\n".join(output))
