"""Test ordering across tiers: the VM tests (marker ``vm``) run last."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # scripts/test.sh builds the VM images in the background while the other tiers run
    items.sort(key=lambda item: item.get_closest_marker("vm") is not None)
