"""The chaos test's world: a :class:`Scenario` (tests/support/scenario.py) with its VMs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, vm_factory  # noqa: F401 (a pytest fixture)


@pytest.fixture
def scenario(
    emulator: EmulatorServer,
    tmp_path: Path,
    vm_factory: Callable[..., NamespaceVM],  # noqa: F811
) -> Iterator[Scenario]:
    world = Scenario(emulator, tmp_path, vm_factory)
    try:
        yield world
    finally:
        world.close()
