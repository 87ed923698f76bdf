"""F11: the SSH link is cut before the kill reached the agent; with retries configured the kill
is delivered by a retry once the link is back, and the job is Stopped.

Deterministic order: the link is cut first, then the stop is annotated, so the first kill request
can only go into the void. The link comes back only after the operator has given that request up
and found the agent unreachable on a retry (the old connection is dead, so the lost request can
never arrive late); the agent log shows no kill up to then. The operator's heartbeat deadline is
long so that the Running job does not go Stuck (HeartbeatLost) between the cut and the stop.
"""

from __future__ import annotations

import re

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

RETRY = {"dispatchAttempts": 30, "intervalSeconds": 0.5}


def test_F11_cut_before_kill_retried_after_interval_stopped(scenario: Scenario) -> None:
    vm = scenario.vm()
    scenario.start_operator("--heartbeat-deadline=60")
    run = scenario.run_long_work(vm, "f11", retry=RETRY)

    vm.cut()
    scenario.annotate(run, "jobnet.dev/stop", "/f11/work")

    # The first kill is lost; a retry finds the agent unreachable.
    scenario.wait_event(run, "DeliveryRetried", contains="/f11/work: kill attempt 1", timeout=30)
    scenario.wait_operator_log(r"job=/f11/work .*cannot reach the agent for kill: ", timeout=30)
    assert scenario.job(run, "/f11/work")["state"] == "Stopping", scenario.job(run, "/f11/work")
    assert not re.search(r"/f11/work#1 kill", scenario.agent_log(vm)), "no kill may have reached the agent yet"

    vm.restore()

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    job = status["jobs"]["/f11/work"]
    assert job["state"] == "Stopped" and job["reason"] == "StopRequested", job
    assert status["jobs"]["/f11/after"]["state"] == "Skipped", status["jobs"]["/f11/after"]
    # Exactly one kill reached the agent, and it did the killing.
    kills = re.findall(r"/f11/work#1 (kill .*)", scenario.agent_log(vm))
    assert len(kills) == 1 and kills[0].startswith("kill requested (stop"), kills
    retried = [e for e in scenario.events(run) if e.get("reason") == "DeliveryRetried"]
    assert retried and all("retrying with the same key" in e["message"] for e in retried), retried
    scenario.wait_event(run, "JobStopped", contains="/f11/work")
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "after") == 0
