"""G06: a stop of the whole run arrives in the same round as an operator restart with launches in
flight: nothing launches under the stopped scope; in-flight launches are fenced or killed; the run
ends Stopped.

The operator is killed right after its launch requests left (they may or may not have reached the
agent); the stop is written while it is down (the webhook, ``failurePolicy: Ignore`` here, is not
called: the stop has no stamped identity and is identified by its text). The restarted operator's
first round sees both the launches in flight and the stop."""

from __future__ import annotations

import re

import pytest

from tests.support.operator_proc import register_webhooks
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

JOBS = ("extract", "load")


def test_G06_stop_in_the_restart_round_launches_nothing_and_ends_stopped(scenario: Scenario) -> None:
    vm = scenario.vm()
    scripts = {name: scenario.marker_script(vm, name, "sleep 30\n") for name in JOBS}
    operator = scenario.start_operator()
    register_webhooks(scenario.emulator, operator.webhook_url, failure_policy="Ignore")
    run = scenario.run_jobnet("g06", scenario.host(vm), [{"name": name, "script": scripts[name]} for name in JOBS])
    scenario.wait_operator_log(r"job=/g06/\w+ .*launching", timeout=60)
    operator.kill()  # the launches may or may not have reached the agent
    assert {scenario.job(run, f"/g06/{name}").get("state") for name in JOBS} <= {"Starting", "Running", None}

    scenario.annotate(run, "jobnet.dev/stop", "/")
    assert "jobnet.dev/stop-id" not in scenario.get_run(run)["metadata"]["annotations"]
    log_before_restart = len(operator.log_text())
    operator.start()

    status = scenario.wait_phase(run, "Stopped", timeout=60)

    restarted = operator.log_text()[log_before_restart:]
    assert not re.search(r"job=/g06/\w+ .*launching", restarted), restarted[-3000:]
    agent_log = scenario.agent_log(vm)
    for name in JOBS:
        job = status["jobs"][f"/g06/{name}"]
        assert job["state"] == "Stopped" and job["attempt"] == 1, (name, job)
        assert scenario.script_runs(vm, name) <= 1, name
        key = f"/g06/{name}#1"
        assert len(re.findall(rf"{key} accepted", agent_log)) <= 1, agent_log
        if re.search(rf"{key} accepted", agent_log):
            assert re.search(rf"{key} kill requested", agent_log), agent_log  # it ran: killed
        else:
            assert re.search(rf"{key} fenced", agent_log), agent_log  # never arrived: fenced
    assert status["stopScopes"] == ["/g06"]
    assert status["appliedSteering"]["stop"].startswith("text-")
    scenario.wait_event(run, "RunStopped")
    assert scenario.event_reasons(run).count("StopRequested") == 1
