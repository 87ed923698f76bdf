"""G10: the API server flaps (refuses, stalls, recovers, several times) while the operator starts
and while it runs: the operator never exits because of it; it carries on when the API is back,
and every run completes."""

from __future__ import annotations

import re

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

#: kopf gives up on a request after its backoff list (9 attempts by default) and the operator
#: used to exit then; with delays capped this short, the outages below outlast any such list.
RETRY_CAP = "--api-retry-max-delay=0.2"
FLAPS = 3
#: What the operator logs when a request of its own or of kopf's found the API unreachable.
API_FAILURE = re.compile(r"Request attempt #\d+ failed|API server is unreachable|Timeout|timed out")


def wait_for_new_api_failure(scenario: Scenario, what: str) -> None:
    """Until the operator logs a failed API request it had not logged before: it noticed."""
    seen = len(API_FAILURE.findall(scenario.operator_log()))
    wait_until(
        lambda: len(API_FAILURE.findall(scenario.operator_log())) > seen,
        timeout=30,
        what=what,
        describe=scenario.operator_log,
    )


def test_G10_api_flapping_at_start_and_while_running_never_ends_the_operator(scenario: Scenario) -> None:
    vm = scenario.vm()
    first = scenario.marker_script(vm, "first", "sleep 2\n")
    second = scenario.marker_script(vm, "second", "sleep 2\n")
    third = scenario.marker_script(vm, "third")

    with scenario.emulator.outage():
        operator = scenario.start_operator(RETRY_CAP, wait_ready=False)
        scenario.wait_operator_log(r"Request attempt #12\b.*failed", timeout=30)
        assert operator.process is not None and operator.process.poll() is None, operator.log_tail()
    operator.wait_ready()

    run = scenario.run_jobnet(
        "g10",
        scenario.host(vm),
        [
            {"name": "first", "script": first},
            {"name": "second", "script": second, "after": ["first"]},
            {"name": "third", "script": third, "after": ["second"]},
        ],
    )
    # first's script started (its marker), not its Running status, which a loaded run of a 2 s job
    # may never store or show (as D04's 1 s quick was never seen Running in 60 s)
    wait_until(lambda: scenario.script_runs(vm, "first") == 1, timeout=60, what="the script of /g10/first started")
    for flap in range(FLAPS):
        with scenario.emulator.outage():
            wait_for_new_api_failure(scenario, f"the operator to notice outage {flap + 1}")
        with scenario.emulator.stall():
            wait_for_new_api_failure(scenario, f"the operator to notice stall {flap + 1}")
        assert operator.process is not None and operator.process.poll() is None, operator.log_tail()

    status = scenario.wait_phase(run, "Succeeded", timeout=120)
    for name in ("first", "second", "third"):
        job = status["jobs"][f"/g10/{name}"]
        assert job["state"] == "Succeeded" and job["attempt"] == 1, (name, job)
        assert scenario.script_runs(vm, name) == 1
    assert operator.process is not None and operator.process.poll() is None
    assert "escalating" not in scenario.operator_log()
    scenario.wait_event(run, "RunSucceeded", timeout=30)
    assert scenario.event_reasons(run).count("RunSucceeded") == 1
