"""Namespace VMs for tests: the implementation is product code (:mod:`jobnet.devenv.vm`, which
``jobnet dev`` uses too); this module re-exports it and adds the pytest fixtures.

Import the fixtures into a conftest.py to use namespace VMs there::

    from tests.support.vm import vm, vm_factory  # noqa: F401 (pytest fixtures)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from jobnet.devenv.vm import (  # noqa: F401 (re-exports)
    DATA_ROOT,
    SLOTS_DIR,
    SSH_PORT,
    AddressOverlap,
    NamespaceVM,
    VMError,
    clean_stale,
    ensure_safety_route,
    missing_requirements,
    process_gone,
    slot_subnet,
)


@pytest.fixture
def vm_factory() -> Iterator[Callable[..., NamespaceVM]]:
    """Make namespace VMs that are destroyed when the test ends; skips when VMs cannot run here."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
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
