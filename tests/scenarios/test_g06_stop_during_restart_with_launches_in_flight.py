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

from tests.scenarios.test_c01_c05_dispatch_cut import start_cut_run
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


def test_G06_stop_in_the_restart_round_fences_a_launch_that_never_arrived(scenario: Scenario) -> None:
    """As above, with the launch cut on its way (C01's fault) when the operator is killed: the
    restarted operator does not re-send it under the stopped scope; it sends the kill, which the
    agent answers "no such job", so it fences the key (a launch arriving late is refused) and the
    job is Stopped without ever running. (The old connection is gone before the link returns.)"""
    cut = start_cut_run(scenario, "g06f")
    operator = scenario.operator
    assert operator is not None
    register_webhooks(scenario.emulator, operator.webhook_url, failure_policy="Ignore")
    target = cut.path("target")
    scenario.wait_job_state(cut.run, cut.path("warmup"), "Succeeded", timeout=60)  # the channel is open
    scenario.wait_job_state(cut.run, cut.path("gate"), "Running", timeout=60)
    cut.net.cut()
    cut.ctl.put_file("go", "", 0o644)  # gate ends: target is launched over the cut link
    scenario.wait_operator_log(rf"job={target} .*launching", timeout=30)
    operator.kill()  # the launch is in flight: it left, and never arrives
    assert scenario.job(cut.run, target)["state"] == "Starting"
    try:
        scenario.annotate(cut.run, "jobnet.dev/stop", "/")
        cut.wait_old_connection_gone()
    finally:
        cut.net.restore()
    log_before_restart = len(operator.log_text())
    operator.start()

    status = scenario.wait_phase(cut.run, "Stopped", timeout=60)

    assert status["jobs"][target]["state"] == "Stopped" and status["jobs"][target]["attempt"] == 1
    assert status["jobs"][target].get("reason") == "StopRequested", status["jobs"][target]
    restarted = operator.log_text()[log_before_restart:]
    assert not re.search(r"job=/g06f/\w+ .*launching", restarted), restarted[-3000:]
    assert re.search(rf"job={target} .*killing \(stop", restarted), restarted[-3000:]
    assert re.search(rf"job={target} .*the agent never saw \S+; fenced it", restarted), restarted[-3000:]
    lines = cut.agent_lines("target")
    assert any("fenced: never launched here" in line for line in lines), lines
    assert not any("accepted" in line for line in lines), lines
    assert scenario.script_runs(cut.net, "target") == 0 and scenario.script_runs(cut.net, "downstream") == 0
