"""D02/D03: the link stays down past the heartbeat deadline and the job ends meanwhile (exit 0 /
non-zero). The agent keeps the result; the job is Stuck HeartbeatLost while the truth is unknown;
when the link returns the result is collected automatically (``stuckResolution: Auto``) or, with
``Manual``, a person settles it by annotation once the agent's answer is shown. Exactly once."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.scenario import Scenario
from tests.support.stuck import after_the_cut, cut_until_stuck

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def _cut_until_stuck_and_ended(scenario: Scenario, jobnet: str, exit_code: int, resolution: str) -> tuple[Any, str]:
    """Run ``work`` (exits ``exit_code`` after a while) then ``next``; cut the link while ``work``
    runs and keep it down until ``work`` is Stuck HeartbeatLost and has ended on the VM; then
    restore the link. Returns the VM and the run's name."""

    def while_cut(vm: Any, run: str, path: str, stuck: dict[str, Any]) -> None:
        assert vm.address in stuck["message"], stuck
        event = scenario.wait_event(run, "JobStuck", contains=path)
        assert "HeartbeatLost" in event["message"] and event["type"] == "Warning", event
        scenario.wait_operator_log(rf"run=default/{run} job={re.escape(path)} .*JobStuck", timeout=15)
        # The job ended while nobody could hear it: the agent has the result in its journal.
        scenario.wait_agent_log(vm, rf"{re.escape(path)}#1 exited with code {exit_code}", timeout=30)
        assert scenario.job(run, path)["state"] == "Stuck"  # still unknown to the operator
        assert scenario.script_runs(vm, "next") == 0

    # The job outlives the moment of the cut but ends well before the link returns.
    body = after_the_cut(f"echo work output\nexit {exit_code}\n")
    vm, run, _ = cut_until_stuck(scenario, jobnet, body, resolution, while_cut)
    return vm, run


@pytest.mark.parametrize("exit_code", [0, 3], ids=["D02-exit0", "D03-exit3"])
def test_D02_D03_link_down_past_retries_result_collected_automatically(scenario: Scenario, exit_code: int) -> None:
    jobnet = "d02" if exit_code == 0 else "d03"
    path = f"/{jobnet}/work"
    vm, run = _cut_until_stuck_and_ended(scenario, jobnet, exit_code, "Auto")

    event = scenario.wait_event(run, "StuckResolved", contains=path, timeout=60)
    assert f"exited with code {exit_code}" in event["message"], event
    status = scenario.wait_phase(run, "Succeeded" if exit_code == 0 else "Failed", timeout=60)

    job = status["jobs"][path]
    assert job["exitCode"] == exit_code and job["attempt"] == 1, job
    assert job["state"] == ("Succeeded" if exit_code == 0 else "Failed"), job
    assert "resolved automatically" in job["message"], job
    assert job["outputTail"] == "work output\n"  # the output was collected with the result
    settled = [entry for entry in status.get("overrides") or [] if entry["path"] == path]
    assert settled and settled[-1]["fromState"] == "Stuck" and "(auto)" in settled[-1]["by"], status.get("overrides")
    if exit_code == 0:
        assert status["jobs"][f"/{jobnet}/next"]["state"] == "Succeeded"
        assert scenario.script_runs(vm, "next") == 1
    else:
        assert status["jobs"][f"/{jobnet}/next"]["state"] == "Skipped"
        assert scenario.script_runs(vm, "next") == 0
    assert scenario.script_runs(vm, "work") == 1
    assert "launch ignored" not in scenario.agent_log(vm)


@pytest.mark.parametrize("exit_code", [0, 3], ids=["D02-exit0", "D03-exit3"])
def test_D02_D03_link_down_past_retries_settled_by_annotation(scenario: Scenario, exit_code: int) -> None:
    jobnet = "d02m" if exit_code == 0 else "d03m"
    path = f"/{jobnet}/work"
    vm, run = _cut_until_stuck_and_ended(scenario, jobnet, exit_code, "Manual")

    # The agent's answer is shown to the person, but the job waits for them (Manual).
    event = scenario.wait_event(run, "StuckOutcomeKnown", contains=path, timeout=60)
    assert f"exited with code {exit_code}" in event["message"], event
    waiting = scenario.job(run, path)
    assert waiting["state"] == "Stuck" and f"exited with code {exit_code}" in waiting["message"], waiting
    target = "Succeeded" if exit_code == 0 else "Failed"
    scenario.annotate(run, "jobnet.dev/override", f"{path}={target}")

    status = scenario.wait_phase(run, target, timeout=60)

    assert status["jobs"][path]["state"] == target, status["jobs"][path]
    scenario.wait_event(run, "Overridden", contains=path)
    settled = [entry for entry in status.get("overrides") or [] if entry["path"] == path]
    assert settled and settled[-1]["fromState"] == "Stuck" and settled[-1]["toState"] == target, status.get("overrides")
    assert "(auto)" not in (settled[-1].get("by") or "")  # a person, not the resolver
    scenario.wait_steering_removed(run)
    expected_next = ("Succeeded", 1) if exit_code == 0 else ("Skipped", 0)
    assert (status["jobs"][f"/{jobnet}/next"]["state"], scenario.script_runs(vm, "next")) == expected_next
    assert scenario.script_runs(vm, "work") == 1
