"""AgentLost (issue 10): the agent's state directory is wiped while a job runs (the VM was
reinstalled, or a person removed it). The agent that comes back has no record of the job, so
nobody knows whether or how the script ran: the job goes Stuck AgentLost (never Failed or
Succeeded on a guess), with a Warning Event and an operator log line, and a person settles it.
A stop of such a job finds nothing to kill and fences the key: that proves nothing runs under the
key now, not that the script never ran, so the job stays Stuck AgentLost (not Stopped "never
started")."""

from __future__ import annotations

import shutil

import pytest

from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def agent_lost_mid_job(scenario: Scenario) -> tuple[NamespaceVM, str]:
    """A run of work -> after whose ``work`` runs when the agent's state is wiped (and its
    processes killed); the run and its VM."""
    vm = scenario.vm()
    run = scenario.run_long_work(vm, "lost")

    # The agent's processes first (a live supervisor writes into the job's directory), then its
    # journal, job records and log.
    assert vm.kill_agent(("serve", "supervise")), "no agent process found"
    shutil.rmtree(vm.home / ".jobnet" / "state")
    return vm, run


def test_agent_state_wiped_while_a_job_runs_is_stuck_agent_lost_then_annotate_failed(scenario: Scenario) -> None:
    vm, run = agent_lost_mid_job(scenario)
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


def test_a_stop_of_a_job_the_agent_lost_keeps_it_stuck_agent_lost_not_never_started(scenario: Scenario) -> None:
    vm, run = agent_lost_mid_job(scenario)
    scenario.wait_job_state(run, "/lost/work", "Stuck", timeout=60)
    scenario.annotate(run, "jobnet.dev/stop", "/")
    scenario.wait_operator_log(r"kill: the agent never saw \S+:/lost/work#1; fenced it", timeout=30)
    scenario.wait_steering_removed(run, ("jobnet.dev/stop",))
    job = scenario.wait_job_state(run, "/lost/work", "Stuck", timeout=30)
    assert job["reason"] == "AgentLost" and "fenced the key" in job["message"], job
    assert "never started" not in job["message"], job
    assert scenario.status(run)["phase"] == "Stuck"
    assert "JobStopped" not in scenario.event_reasons(run)

    scenario.annotate(run, "jobnet.dev/override", "/lost/work=Failed")
    status = scenario.wait_phase(run, "Failed", timeout=30)
    assert status["jobs"]["/lost/after"]["state"] in ("Skipped", "Stopped"), status["jobs"]["/lost/after"]
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "after") == 0
