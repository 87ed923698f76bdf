"""Shared fixtures: the Kubernetes API emulator and the real operator running against it.

Both are function-scoped: every test gets its own emulator (own port, own storage, < 0.1 s to
start) and its own operator subprocess (own free ports), so tests are independent and safe
under pytest-xdist. Folders add their own fixtures in their own conftest.py files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobnet.devenv.emulator import PORT_BASE_VARIABLE, PORT_BLOCK_SIZE
from tests.support.emulator import EmulatorServer
from tests.support.operator_proc import OperatorProcess, register_webhooks


def pytest_configure(config: pytest.Config) -> None:
    # Each xdist worker hands out ports from its own block below the kernel's ephemeral range
    # (32768+), so two workers never pick the same port for their servers.
    # Assigned, not defaulted: workers inherit the controller's environment.
    # JOBNET_TEST_PORT_BASE moves the whole range, so that two test sessions can share a machine.
    worker = getattr(config, "workerinput", {}).get("workerid", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    first = int(os.environ.get("JOBNET_TEST_PORT_BASE", "20000"))
    os.environ[PORT_BASE_VARIABLE] = str(first + index * PORT_BLOCK_SIZE)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorServer]:
    """A Kubernetes API emulator on 127.0.0.1 with our CRDs; ``emulator.kubectl(...)`` runs kubectl."""
    with EmulatorServer(tmp_path) as server:
        yield server


@pytest.fixture
def operator(emulator: EmulatorServer, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The real operator (all namespaces), with the chart's ValidatingWebhookConfiguration pointing at it."""
    process = OperatorProcess(emulator, tmp_path)
    register_webhooks(emulator, process.webhook_url)
    process.start()
    try:
        yield process
    finally:
        process.stop()
