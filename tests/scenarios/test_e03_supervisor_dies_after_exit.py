"""E03: the agent's supervising process dies after its job finished, before it recorded and
reported the result.

The agent's crash point ``supervise:after-exit`` kills the supervisor (SIGKILL) at exactly that
moment; the agent recovers the exit code the job's wrapper wrote ("result recovered") and the
result is never lost: the job Succeeds by itself, or, when the operator could not hear the agent
meanwhile and the JobNet says ``stuckResolution: Manual``, it stays Stuck until a person
annotates it Succeeded. Either way the run Succeeds and nothing runs twice.
"""

from __future__ import annotations

import pytest

from tests.support.agentenv import set_agent_env
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

CRASH_POINT = "supervise:after-exit"
#: The job runs until this file appears in the VM user's home (bounded: 60 s at most).
GATED_BODY = """\
for _ in $(seq 600); do
  [ -e "$HOME/release" ] && exit 0
  sleep 0.1
done
exit 3
"""


def _start(scenario: Scenario, jobnet: str, resolution: str) -> tuple[NamespaceVM, str]:
    vm = scenario.vm()
    set_agent_env(vm, "JOBNET_AGENT_CRASH_AT", CRASH_POINT)
    work = scenario.marker_script(vm, "work", 'echo "work done"\n' + GATED_BODY)
    after = scenario.marker_script(vm, "after-work")
    run = scenario.run_jobnet(
        jobnet,
        scenario.host(vm),
        [
            {"name": "work", "script": work},
            {"name": "after-work", "script": after, "after": ["work"]},
        ],
        stuckResolution=resolution,
    )
    scenario.wait_job_state(run, f"/{jobnet}/work", "Running", timeout=60)
    wait_until(lambda: scenario.script_runs(vm, "work") == 1, timeout=30, what="the script started on the VM")
    return vm, run


def _release_and_wait_for_recovery(scenario: Scenario, vm: NamespaceVM, jobnet: str) -> None:
    vm.put_file("release", "")
    scenario.wait_agent_log(vm, rf"/{jobnet}/work#1.*supervisor died after the job ended: result recovered", timeout=30)


def _assert_run_succeeded_once(scenario: Scenario, vm: NamespaceVM, run: str, jobnet: str) -> dict:
    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    assert status["jobs"][f"/{jobnet}/after-work"]["state"] == "Succeeded"
    assert scenario.script_runs(vm, "work") == 1
    assert scenario.script_runs(vm, "after-work") == 1
    scenario.wait_event(run, "RunSucceeded")
    return status


def test_E03_supervisor_dies_after_exit_result_recovered_run_succeeds(scenario: Scenario) -> None:
    vm, run = _start(scenario, "e03a", "Auto")

    _release_and_wait_for_recovery(scenario, vm, "e03a")

    status = _assert_run_succeeded_once(scenario, vm, run, "e03a")
    job = status["jobs"]["/e03a/work"]
    assert job["state"] == "Succeeded" and job["exitCode"] == 0, job
    assert job.get("outputTail") == "work done\n", job  # the output is part of the result
    assert not any(e.get("reason") == "Overridden" for e in scenario.events(run))


def test_E03_supervisor_dies_after_exit_unheard_stuck_then_annotate_succeeded(scenario: Scenario) -> None:
    vm, run = _start(scenario, "e03m", "Manual")
    vm.drop()  # the operator hears nothing while the job ends and its supervisor dies
    stuck = scenario.wait_job_state(run, "/e03m/work", "Stuck", timeout=60)
    assert stuck["reason"] == "HeartbeatLost", stuck
    scenario.wait_event(run, "JobStuck", contains="/e03m/work")

    _release_and_wait_for_recovery(scenario, vm, "e03m")
    vm.undrop()

    known = scenario.wait_event(run, "StuckOutcomeKnown", contains="/e03m/work", timeout=60)
    assert "exited" in known["message"] and "0" in known["message"], known
    assert scenario.job(run, "/e03m/work")["state"] == "Stuck"
    assert scenario.script_runs(vm, "after-work") == 0
    scenario.annotate(run, "jobnet.dev/override", "/e03m/work=Succeeded")

    status = _assert_run_succeeded_once(scenario, vm, run, "e03m")
    job = status["jobs"]["/e03m/work"]
    assert job["state"] == "Succeeded" and job["reason"] == "Overridden", job
    scenario.wait_event(run, "Overridden", contains="/e03m/work")
