#!/usr/bin/env python3
"""
`pyinfra` with the two changes proposed for the deploy path patched in, so the benchmark can
show what they would give before they are made (README.md, "Speed"). A third,
the reading's output buffered on the host, landed in facts/reading.py (``reading_command``).

1. paramiko polling each idle connection every 2 s, not every 0.1 s (what
   ``conntune.pyinfra_api`` does for audit/reconcile/watch);
2. pyinfra's operation order taken from the frames' line numbers without ``inspect.stack()``,
   which reads source files and walks ``sys.modules`` for each frame (~2 ms per operation and
   host; the same order, checked on deploy.py and bench/builtin_deploy.py).

    python bench/proposed.py INVENTORY deploy.py --dry

Used by bench/run.py only; nothing here is imported by conntune.
"""

from __future__ import annotations

import sys


def _operation_order(state) -> list[int]:
    """``pyinfra.api.util.get_operation_order_from_stack`` without ``inspect``."""
    import pyinfra
    from pyinfra.api.util import PYINFRA_INSTALL_DIR

    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    start = 0
    if state.current_deploy_filename:
        for start, item in enumerate(frames):  # noqa: B007 (the index is the result)
            if item.f_code.co_filename == state.current_deploy_filename:
                break
    numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    numbers += [
        item.f_lineno
        for item in frames[start:]
        if not item.f_code.co_filename.startswith(PYINFRA_INSTALL_DIR)
    ]
    return numbers


def patch() -> None:
    import paramiko
    import pyinfra.api.operation  # noqa: F401 (the module, not the decorator)

    from conntune.pyinfra_api import SSH_POLL_SECONDS

    paramiko.Transport._active_check_timeout = SSH_POLL_SECONDS
    sys.modules["pyinfra.api.operation"].get_operation_order_from_stack = _operation_order


if __name__ == "__main__":
    patch()
    from pyinfra_cli.main import main

    sys.argv[0] = "pyinfra"
    main()
