"""Namespace VMs for tests: the implementation is product code (:mod:`jobnet.devenv.vm`, which
``jobnet dev`` uses too); this module re-exports it and adds the pytest fixtures.

Import the fixtures into a conftest.py to use namespace VMs there::

    from tests.support.vm import vm, vm_factory  # noqa: F401 (pytest fixtures)
"""

from __future__ import annotations

import subprocess
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
from tests.support.netutil import wait_until

#: Connection states that carry nothing written before a cut: TIME-WAIT (closed, only waiting out
#: stray packets) and SYN-SENT (a new connection still being made, its SSH handshake not begun).
_NOTHING_QUEUED = ("TIME-WAIT", "SYN-SENT")


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


def operator_connections(vm: NamespaceVM) -> list[str]:
    """The host's TCP connections to the VM's sshd that the kernel still keeps (``ss`` lines, in
    any state but those of ``_NOTHING_QUEUED``; an orphaned socket, closed by its process but
    still sending, counts): while one exists, bytes written to it before a cut (a launch, a
    kill) may still reach the VM once the link is back."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "all", "dst", f"{vm.address}:{SSH_PORT}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith(_NOTHING_QUEUED)]


def wait_connections_gone(vm: NamespaceVM, timeout: float = 30.0) -> None:
    """Until the host keeps no connection to the VM's sshd (see :func:`operator_connections`):
    after that, nothing queued before a cut can reach the VM when the link comes back."""
    wait_until(
        lambda: not operator_connections(vm),
        timeout=timeout,
        what=f"no TCP connection left to {vm.address}:{SSH_PORT}",
        describe=lambda: "\n".join(operator_connections(vm)),
    )
