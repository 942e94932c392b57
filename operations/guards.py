"""Operations that stop a host before any change: no root, or refused settings."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, operation


def _require_root(state, host, uid: int) -> bool:
    logger.error(
        f"{host.print_prefix}conntune: connected as uid {uid} without root: conntune needs root "
        "to change sysctls, /etc and qdiscs (set _sudo: True in the host data, or use --sudo); "
        "nothing was changed on this host"
    )
    return False


@operation(is_idempotent=False)
def require_root(uid: int | None) -> Generator[FunctionCommand, None, None]:
    """
    Fail the host before any change when the connection has no root (no sudo).

    + uid: the uid the host reading ran as

    **Example:**

    .. code:: python

        require_root(name="Check privileges", uid=facts.uid)
    """
    if uid == 0 or uid is None:
        host.noop("running as root")
        return
    yield FunctionCommand(_require_root, (uid,), {})


def _refuse(state, host, errors: list[str]) -> bool:
    for error in errors:
        logger.error(f"{host.print_prefix}conntune refused: {error}")
    logger.error(f"{host.print_prefix}nothing was changed on this host")
    return False


@operation(is_idempotent=False)
def refuse(errors: list[str]) -> Generator[FunctionCommand, None, None]:
    """
    Fail this host, changing nothing, because its settings or facts were refused.

    + errors: the reasons, each naming the setting

    **Example:**

    .. code:: python

        refuse(name="Refuse invalid settings", errors=["cake_bandwidth: 'fast' is not a rate"])
    """
    yield FunctionCommand(_refuse, (errors,), {})
