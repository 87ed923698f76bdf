"""The randomized fault test (issue 10): a seeded slice of tests/chaos/harness.py runs in
`make test` (200 faults, a few minutes at most); `make chaos` runs 1,000 with a fresh seed.

A failure prints the seed, the counts and every violation; `make chaos SEED=n` repeats it."""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import ChaosConfig, run_chaos
from tests.conftest import RANDOM_SEED_VARIABLE
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm, pytest.mark.xdist_group("chaos")]

SEED = 20261203
CONFIG = ChaosConfig.from_environment()
#: pytest-timeout's bound: the fault phase's own bound plus the drain, setup and checks.
TIMEOUT = CONFIG.fault_phase_bound_per_fault * CONFIG.faults + CONFIG.drain_bound + 300


@pytest.mark.randomized(seed=SEED)
@pytest.mark.timeout(TIMEOUT)
def test_chaos_seeded_slice_keeps_every_invariant(scenario: Scenario) -> None:
    seed = int(os.environ.get(RANDOM_SEED_VARIABLE) or SEED)
    report = run_chaos(scenario, seed, CONFIG, print)
    assert sum(report.faults.values()) >= CONFIG.faults, report.summary()
    assert not report.violations and not report.malformed and not report.operator_exits, report.summary()
    assert not report.handovers_missed, report.summary()
