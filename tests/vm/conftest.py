"""Fixtures for tests over real SSH into namespace VMs (see tests/support/vm.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.vm import NamespaceVM, missing_requirements

_SKIP_REASON = missing_requirements()
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.vm)
            if _SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=_SKIP_REASON))


@pytest.fixture
def vm_factory() -> Iterator[Callable[..., NamespaceVM]]:
    """Make namespace VMs that are destroyed when the test ends."""
    made: list[NamespaceVM] = []

    def make(**kwargs: object) -> NamespaceVM:
        vm = NamespaceVM(**kwargs).create()  # type: ignore[arg-type]
        made.append(vm)
        return vm

    yield make
    for vm in reversed(made):
        vm.destroy()


@pytest.fixture
def vm(vm_factory: Callable[..., NamespaceVM]) -> NamespaceVM:
    """A fresh namespace VM of this test's own."""
    return vm_factory()
