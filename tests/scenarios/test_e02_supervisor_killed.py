"""E02: the agent's supervising process is killed (kill -9) while its job runs.

The script goes on and ends unsupervised; nobody can vouch for how it ended, so the agent records
it ``lost`` and the job goes Stuck SupervisorLost, even with stuckResolution Auto. The agent log
says the supervisor died mid-run; a person settles the job with an override to Failed.
"""

from __future__ import annotations

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_E02_supervisor_killed_mid_job_stuck_then_annotate_failed(scenario: Scenario) -> None:
    vm = scenario.vm()
    work = scenario.marker_script(vm, "work", "sleep 3\nexit 0\n")
    after = scenario.marker_script(vm, "after-work")
    run = scenario.run_jobnet(
        "e02",
        scenario.host(vm),
        [
            {"name": "work", "script": work},
            {"name": "after-work", "script": after, "after": ["work"]},
        ],
        stuckResolution="Auto",
    )
    scenario.wait_job_state(run, "/e02/work", "Running", timeout=60)
    wait_until(lambda: scenario.script_runs(vm, "work") == 1, timeout=30, what="the script started on the VM")

    killed = vm.kill_agent(("supervise",))

    assert killed, "no supervising process was found to kill"
    stuck = scenario.wait_job_state(run, "/e02/work", "Stuck", timeout=60)
    assert stuck["reason"] == "SupervisorLost", stuck
    assert "supervisor died mid-run" in stuck["message"], stuck
    scenario.wait_agent_log(vm, r"/e02/work#1.*supervisor died mid-run")
    event = scenario.wait_event(run, "JobStuck", contains="/e02/work")
    assert "SupervisorLost" in event["message"] and event["type"] == "Warning", event
    assert scenario.status(run)["phase"] == "Stuck"
    assert "job=/e02/work" in scenario.operator_log()
    # An unsupervised end proves nothing, whatever the exit code: Auto does not resolve it.
    assert not any(e.get("reason") == "StuckResolved" for e in scenario.events(run))

    scenario.annotate(run, "jobnet.dev/override", "/e02/work=Failed")

    status = scenario.wait_phase(run, "Failed", timeout=30)
    job = status["jobs"]["/e02/work"]
    assert job["state"] == "Failed" and job["reason"] == "Overridden", job
    assert status["jobs"]["/e02/after-work"]["state"] == "Skipped"
    overridden = scenario.wait_event(run, "Overridden", contains="/e02/work")
    assert "Failed" in overridden["message"], overridden
    assert "jobnet.dev/override" not in (scenario.get_run(run)["metadata"].get("annotations") or {})
    assert scenario.script_runs(vm, "work") == 1
    assert scenario.script_runs(vm, "after-work") == 0
