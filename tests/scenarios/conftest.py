"""Fixtures of the scenario tests: ``scenario`` (tests/support/scenario.py) with real VMs.

The console's and the chaos tests' conftests import both fixtures from here (``scenario`` uses
``vm_factory``)."""

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
    """The real operator against the emulator, plus namespace VMs made with ``scenario.vm()``
    (destroyed after the world is closed; the test is skipped where VMs cannot run)."""
    world = Scenario(emulator, tmp_path, vm_factory)
    try:
        yield world
    finally:
        world.close()
