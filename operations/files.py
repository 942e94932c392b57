"""Converge the files conntune owns on a host (``conntune.paths``)."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation

from conntune import paths
from conntune.changes import file_changes, unified_diff
from conntune.facts.host import read_host
from conntune.operations.commands import files_command, show_diff
from conntune.operations.hostlock import locked


@operation()
def owned_files(
    files: dict[str, str | None], lock: dict | None = None
) -> Generator[StringCommand, None, None]:
    """
    Converge the files conntune owns: write each changed file atomically (temp file + rename,
    root-owned, 0644), remove the ones the plan no longer wants, and keep the CAKE unit enabled.

    + files: path -> wanted content; ``None`` removes the file
    + lock: the host lock this run holds (``conntune.operations.hostlock``), or ``None``

    **Example:**

    .. code:: python

        owned_files(
            name="Write conntune files",
            files={"/etc/sysctl.d/90-conntune.conf": "net.netfilter.nf_conntrack_max = 262144\\n"},
        )
    """
    facts = read_host(host)
    changes = file_changes(facts, files)
    unit_wanted = files.get(paths.CAKE_UNIT_FILE) is not None
    unit_changed = any(change.name == paths.CAKE_UNIT_FILE for change in changes)
    enable_unit = unit_wanted and (unit_changed or not facts.cake_unit_enabled)
    if not changes and not enable_unit:
        host.noop(f"{len(files)} conntune files already as planned")
        return

    for change in changes:
        show_diff(
            [f"{change.verb} {change.name}", *unified_diff(change.name, change.old, change.new)]
        )
    if enable_unit:
        show_diff([f"enable {paths.CAKE_UNIT}"])
    yield locked(files_command({c.name: c.new for c in changes}, enable_unit=enable_unit), lock)
