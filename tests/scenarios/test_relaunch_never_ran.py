"""An attempt that provably never ran is re-launched within the launch retry window.

The agent's crash point ``supervise:before-start`` kills every supervising process after the
job's ``running`` record is durable but before the script is let go: the wrapper runs nothing
and the agent records ``failedToStart`` ``SupervisorLost`` ("never ran"). The operator runs the
job again as the next attempt (Warning Event ``Relaunching``, the operator log says why), with
backoff, and fails it only once ``--launch-retry-window`` after its first try is spent. The
script never ran, and the job's history shows every attempt that did not.
"""

from __future__ import annotations

import pytest

from tests.support.agentenv import set_agent_env
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_a_job_whose_supervisor_dies_before_the_go_line_is_relaunched_until_the_window_is_spent(
    scenario: Scenario,
) -> None:
    vm = scenario.vm()
    set_agent_env(vm, "JOBNET_AGENT_CRASH_AT", "supervise:before-start")
    work = scenario.marker_script(vm, "work")
    scenario.start_operator("--launch-retry-window=4", "--reconnect-backoff-min=0.5", "--reconnect-backoff-max=2")
    run = scenario.run_jobnet("relaunch", scenario.host(vm), [{"name": "work", "script": work}])

    event = scenario.wait_event(run, "Relaunching", contains="/relaunch/work", timeout=30)
    assert event["type"] == "Warning", event
    assert "attempt 1" in event["message"] and "never ran" in event["message"], event
    scenario.wait_operator_log(r"job=/relaunch/work .*Relaunching: .*never ran", timeout=10)

    status = scenario.wait_phase(run, "Failed", timeout=60)
    job = status["jobs"]["/relaunch/work"]
    assert job["state"] == "Failed" and job["reason"] == "SupervisorLost", job
    assert "window of 4s after its first try is spent" in job["message"], job
    earlier = job.get("earlierAttempts") or []
    assert job["attempt"] >= 2 and len(earlier) == job["attempt"] - 1, job
    assert all((e["state"], e["reason"]) == ("Failed", "SupervisorLost") for e in earlier), earlier
    assert scenario.event_reasons(run).count("Relaunching") == job["attempt"] - 1
    assert scenario.script_runs(vm, "work") == 0
