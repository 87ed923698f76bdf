"""G06 (issue 10): a launch that reaches the agent only after the stop's kill did is refused.

The agent holds the launch on its way (pause point ``serve:launch-before-claim``, released by a
file): it has left the operator but the agent has not taken it yet. The operator is killed, the
run is stopped while it is down, and the restarted operator kills the job by its key: the agent
answers "no such job", so the operator fences the key, and the job is Stopped (never started).
Then the held launch goes on: the agent refuses it (the key is fenced) and the script never runs.
"""

from __future__ import annotations

import re

import pytest

from tests.support.agentenv import set_agent_env
from tests.support.netutil import wait_until
from tests.support.operator_proc import register_webhooks
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

HOLD = "hold-launch"


def test_G06_a_launch_arriving_after_the_stops_kill_is_refused_and_never_runs(scenario: Scenario) -> None:
    vm = scenario.vm()
    # Every agent process on the VM holds a launch before taking it until ~/hold-launch exists.
    set_agent_env(vm, "JOBNET_AGENT_PAUSE_AT", f"serve:launch-before-claim=@{vm.home / HOLD}")
    target = scenario.marker_script(vm, "target")
    downstream = scenario.marker_script(vm, "downstream")
    operator = scenario.start_operator()
    register_webhooks(scenario.emulator, operator.webhook_url, failure_policy="Ignore")
    run = scenario.run_jobnet(
        "g06l",
        scenario.host(vm),
        [{"name": "target", "script": target}, {"name": "downstream", "script": downstream, "after": ["target"]}],
    )
    reached = vm.home / f"{HOLD}.reached"
    wait_until(reached.exists, timeout=60, what="the launch reached the agent, which holds it")
    operator.kill()  # the launch is on its way: the agent has it, but has not taken it
    assert scenario.job(run, "/g06l/target")["state"] == "Starting"
    scenario.annotate(run, "jobnet.dev/stop", "/")
    log_before_restart = len(operator.log_text())
    operator.start()

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    job = status["jobs"]["/g06l/target"]
    assert (job["state"], job.get("reason"), job["attempt"]) == ("Stopped", "StopRequested", 1), job
    assert "never started" in job.get("message", ""), job
    restarted = operator.log_text()[log_before_restart:]
    assert re.search(r"job=/g06l/target .*the agent never saw \S+; fenced it", restarted), restarted[-3000:]
    assert "JobFailed" not in scenario.event_reasons(run)

    vm.put_file(HOLD, "")  # the late launch goes on
    scenario.wait_agent_log(vm, r"/g06l/target#1.*launch ignored: key was fenced", timeout=30)
    assert not re.search(r"/g06l/target#1 accepted", scenario.agent_log(vm)), scenario.agent_log(vm)[-3000:]
    assert scenario.script_runs(vm, "target") == 0 and scenario.script_runs(vm, "downstream") == 0
    assert scenario.status(run)["jobs"]["/g06l/target"]["state"] == "Stopped"
