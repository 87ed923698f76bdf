"""Fixtures of the scenario tests: ``scenario`` (tests/support/scenario.py) with real VMs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, missing_requirements


@pytest.fixture
def scenario(emulator: EmulatorServer, tmp_path: Path) -> Iterator[Scenario]:
    """The real operator against the emulator, plus namespace VMs made with ``scenario.vm()``."""
    reason = missing_requirements()
    if reason:
        pytest.skip(f"scenario tests need namespace VMs: {reason}")
    made: list[NamespaceVM] = []

    def make_vm(**kwargs: object) -> NamespaceVM:
        vm = NamespaceVM(**kwargs).create()  # type: ignore[arg-type]
        made.append(vm)
        return vm

    world = Scenario(emulator, tmp_path, make_vm)
    try:
        yield world
    finally:
        world.close()
        for vm in reversed(made):
            vm.destroy()
