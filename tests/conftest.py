"""Shared fixtures: the Kubernetes API emulator and the real operator running against it.

Both are function-scoped: every test gets its own emulator (own port, own storage, < 0.1 s to
start) and its own operator subprocess (own free ports), so tests are independent and safe
under pytest-xdist. Folders add their own fixtures in their own conftest.py files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.operator_proc import OperatorProcess, register_webhooks


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
