"""AgentLost (issue 10): the agent's state directory is wiped while a job runs (the VM was
reinstalled, or a person removed it). The agent that comes back has no record of the job, so
nobody knows whether or how the script ran: the job goes Stuck AgentLost (never Failed or
Succeeded on a guess), with a Warning Event and an operator log line, and a person settles it."""

from __future__ import annotations

import shutil

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_agent_state_wiped_while_a_job_runs_is_stuck_agent_lost_then_annotate_failed(scenario: Scenario) -> None:
    vm = scenario.vm()
    run = scenario.run_long_work(vm, "lost")

    shutil.rmtree(vm.home / ".jobnet" / "state")  # the agent's journal, job records and log
    assert vm.kill_agent(("serve", "supervise")), "no agent process found"

    stuck = scenario.wait_job_state(run, "/lost/work", "Stuck", timeout=60)
    assert stuck["reason"] == "AgentLost", stuck
    assert "has no record of this job" in stuck["message"], stuck
    event = scenario.wait_event(run, "JobStuck", contains="AgentLost")
    assert event["type"] == "Warning" and "/lost/work" in event["message"], event
    scenario.wait_operator_log(r"host=\S+ the agent has no record of \S+:/lost/work#1")
    assert scenario.status(run)["phase"] == "Stuck"

    scenario.annotate(run, "jobnet.dev/override", "/lost/work=Failed")
    status = scenario.wait_phase(run, "Failed", timeout=30)
    assert status["jobs"]["/lost/after"]["state"] == "Skipped"
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "after") == 0
