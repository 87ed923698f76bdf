"""D01: the link to the VM goes down mid-job and comes back before the job ends: the job Succeeds;
the operator log and the agent log show the disconnect and the reconnect."""

from __future__ import annotations

import re

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

#: Above the cut (about 5 s until the SSH connection is declared dead plus the reconnect), so the
#: job never goes Stuck: this scenario is the blip the product must ride out silently. The job has
#: run longer than this before the cut: the deadline counts from the agent's last heartbeat, not
#: from the job's start.
HEARTBEAT_DEADLINE = 8
BEFORE_CUT_SECONDS = HEARTBEAT_DEADLINE + 2
AFTER_CUT_SECONDS = 12


def test_D01_link_down_mid_job_and_back_before_it_ends_succeeds(scenario: Scenario) -> None:
    vm = scenario.vm()
    half_file, done_file = vm.home / "long.half", vm.home / "long.done"
    long = scenario.marker_script(
        vm, "long", f"sleep {BEFORE_CUT_SECONDS}\ntouch {half_file}\nsleep {AFTER_CUT_SECONDS}\ntouch {done_file}\n"
    )
    after = scenario.marker_script(vm, "after")
    scenario.start_operator(f"--heartbeat-deadline={HEARTBEAT_DEADLINE}")
    run = scenario.run_jobnet(
        "d01",
        scenario.host(vm),
        [
            {"name": "long", "script": long},
            {"name": "after", "script": after, "after": ["long"]},
        ],
    )
    scenario.wait_job_state(run, "/d01/long", "Running", timeout=60)
    scenario.wait_agent_log(vm, r"/d01/long#1 started pid")
    wait_until(half_file.exists, timeout=60, what="the job running longer than the heartbeat deadline")
    log_before_cut = len(scenario.operator_log())

    vm.cut()
    try:
        # The operator notices the dead connection (keepalives unanswered) and keeps trying.
        # (from the cut on: the setup's own lines, such as the install's channel, must not count)
        scenario.wait_connection_given_up(vm, since=log_before_cut)
        scenario.wait_operator_log(
            rf"host={re.escape(vm.user)}@{re.escape(vm.address)}:22 agent unreachable",
            timeout=30,
            since=log_before_cut,
        )
    finally:
        vm.restore()
    assert not done_file.exists(), "the job ended during the cut: the scenario needs a longer job"

    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    job = status["jobs"]["/d01/long"]
    assert job["state"] == "Succeeded" and job["exitCode"] == 0 and job["attempt"] == 1, job
    assert status["jobs"]["/d01/after"]["state"] == "Succeeded"
    assert scenario.script_runs(vm, "long") == 1 and scenario.script_runs(vm, "after") == 1
    # A blip is not an incident: never Stuck, never re-launched.
    reasons = scenario.event_reasons(run)
    assert "JobStuck" not in reasons and "DeliveryRetried" not in reasons, reasons
    after_cut = scenario.operator_log()[log_before_cut:]
    assert re.search(r"agent reachable again", after_cut), after_cut[-3000:]
    assert re.search(r"agent channel to \S+ open", after_cut), after_cut[-3000:]
    agent_log = scenario.agent_log(vm)
    assert len(re.findall(r"client '[^']*' connected", agent_log)) >= 2, agent_log  # the reconnect
    assert re.search(r"/d01/long#1 exited with code 0", agent_log), agent_log
    assert "launch ignored" not in agent_log
