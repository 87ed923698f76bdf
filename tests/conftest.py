"""Shared fixtures: the Kubernetes API emulator and the real operator running against it.

Both are function-scoped: every test gets its own emulator (own port, own storage, < 0.1 s to
start) and its own operator subprocess (own free ports), so tests are independent and safe
under pytest-xdist. Folders add their own fixtures in their own conftest.py files.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from jobnet.devenv.emulator import PORT_BASE_VARIABLE, PORT_BLOCK_SIZE
from tests.support.emulator import EmulatorServer
from tests.support.operator_proc import OperatorProcess, register_webhooks

#: The environment variable that picks the hypothesis profile: `make test` sets ``ci``, `make
#: explore` sets ``explore``. Unset, a run is derandomized like ``ci``.
HYPOTHESIS_PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
# ci: every run draws the same examples (derandomized, no example database carried between runs),
# so a red build is the code's doing, never the dice's. explore: fresh draws from the run's seed.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_VARIABLE, "ci"))


#: `make explore` sets it to its seed: the ``randomized`` tests' ``rng`` draws from it instead of
#: the seed each test names.
RANDOM_SEED_VARIABLE = "JOBNET_RANDOM_SEED"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """The random source of a test marked ``@pytest.mark.randomized(seed=N)``: seeded with N, the
    same draws every run; under `make explore`, seeded with its seed (printed) instead."""
    marker = request.node.get_closest_marker("randomized")
    assert marker is not None and isinstance(marker.kwargs.get("seed"), int), "mark it randomized(seed=N)"
    explored = os.environ.get(RANDOM_SEED_VARIABLE)
    return random.Random(int(explored) if explored else marker.kwargs["seed"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The property tests are marked `property` for `make explore` (-m property), found by
    # hypothesis' own flag on a @given test rather than a decorator each test could forget.
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)


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
