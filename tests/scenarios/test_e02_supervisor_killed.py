"""E02: the agent's supervising process is killed (kill -9) while its job runs.

The script goes on and ends unsupervised; the agent records it ``lost`` (the agent log says the
supervisor died mid-run) with the exit code the job's wrapper recorded. Under stuckResolution
Auto that code is known, so the job is resolved from it (an automatic settlement in
``status.overrides`` and a StuckResolved Event); under Manual the job stays Stuck SupervisorLost,
its message says what is now known, and a person settles it with an override to Failed.
"""

from __future__ import annotations

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def kill_supervisor_mid_job(scenario: Scenario, resolution: str) -> tuple[NamespaceVM, str]:
    """The script runs until the test lets it end, after its supervisor was killed (so it ends
    unsupervised whatever the machine's load)."""
    vm = scenario.vm()
    go = vm.home / "e02-go"
    work = scenario.marker_script(vm, "work", f"while [ ! -e {go} ]; do sleep 0.1; done\nexit 0\n")
    after = scenario.marker_script(vm, "after-work")
    run = scenario.run_jobnet(
        "e02",
        scenario.host(vm),
        [
            {"name": "work", "script": work},
            {"name": "after-work", "script": after, "after": ["work"]},
        ],
        stuckResolution=resolution,
    )
    scenario.wait_job_state(run, "/e02/work", "Running", timeout=60)
    wait_until(lambda: scenario.script_runs(vm, "work") == 1, timeout=30, what="the script started on the VM")

    killed = vm.kill_agent(("supervise",))

    assert killed, "no supervising process was found to kill"
    go.touch()
    return vm, run


def test_E02_supervisor_killed_mid_job_auto_resolved_from_the_wrappers_exit_code(scenario: Scenario) -> None:
    vm, run = kill_supervisor_mid_job(scenario, "Auto")
    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    job = status["jobs"]["/e02/work"]
    assert job["state"] == "Succeeded" and job.get("exitCode") == 0, job
    assert "resolved automatically" in job["message"] and "exit code 0" in job["message"], job
    scenario.wait_agent_log(vm, r"/e02/work#1.*supervisor died mid-run")
    [settled] = [o for o in status.get("overrides") or [] if o["path"] == "/e02/work"]
    assert (settled["fromState"], settled["toState"]) == ("Stuck", "Succeeded"), settled
    assert "auto" in settled["by"], settled
    scenario.wait_event(run, "StuckResolved", contains="/e02/work")
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "after-work") == 1


def test_E02_supervisor_killed_mid_job_manual_stuck_then_annotate_failed(scenario: Scenario) -> None:
    vm, run = kill_supervisor_mid_job(scenario, "Manual")
    stuck = scenario.wait_job_state(run, "/e02/work", "Stuck", timeout=60)
    assert stuck["reason"] == "SupervisorLost", stuck
    assert "supervisor died mid-run" in stuck["message"], stuck
    scenario.wait_agent_log(vm, r"/e02/work#1.*supervisor died mid-run")
    event = scenario.wait_event(run, "JobStuck", contains="/e02/work")
    assert "SupervisorLost" in event["message"] and event["type"] == "Warning", event
    assert scenario.status(run)["phase"] == "Stuck"
    assert "job=/e02/work" in scenario.operator_log()
    # Manual: what the wrapper recorded is shown, and a person decides.
    known = scenario.wait_event(run, "StuckOutcomeKnown", contains="/e02/work")
    assert "exit code 0" in known["message"], known
    assert not any(e.get("reason") == "StuckResolved" for e in scenario.events(run))

    scenario.annotate(run, "jobnet.dev/override", "/e02/work=Failed")

    status = scenario.wait_phase(run, "Failed", timeout=30)
    job = status["jobs"]["/e02/work"]
    assert job["state"] == "Failed" and job["reason"] == "Overridden", job
    assert status["jobs"]["/e02/after-work"]["state"] == "Skipped"
    overridden = scenario.wait_event(run, "Overridden", contains="/e02/work")
    assert "Failed" in overridden["message"], overridden
    scenario.wait_steering_removed(run)
    assert scenario.script_runs(vm, "work") == 1
    assert scenario.script_runs(vm, "after-work") == 0
