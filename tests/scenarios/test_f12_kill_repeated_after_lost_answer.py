"""F12: the link breaks after the kill executed (its answer is lost); with retries configured the
repeated kill is ignored by the agent (already stopped) and the job is Stopped.

Deterministic order: every packet leaving the VM is dropped (``vm.drop("out")``) before the stop
is annotated, so the kill reaches the agent and is carried out, but neither its answer nor the
``killed`` event comes back. The operator gives the request up (short request timeout) and
retries with the same key on the same connection; the test lets the answers through again only
once the operator has sent that retry (its "killing" log line is written in the same synchronous
step that hands the request to the socket), so TCP delivers the repeated kill whatever the
operator learns first. Long heartbeat, dispatch and dead-connection deadlines keep the connection
and the job's state intact while the answers are held back; no SSH keepalives, because an
unanswered keepalive would put TCP into loss recovery, which holds back every later segment.
"""

from __future__ import annotations

import re

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

RETRY = {"dispatchAttempts": 30, "intervalSeconds": 0.5}
ANSWERS_HELD_BACK = (
    "--heartbeat-deadline=60",
    "--dispatch-timeout=60",
    "--agent-request-timeout=2",
    "--ssh-dead-connection-timeout=60",
    "--ssh-keepalive=600",
)


def test_F12_answer_lost_after_kill_repeated_kill_ignored_already_stopped(scenario: Scenario) -> None:
    vm = scenario.vm()
    scenario.start_operator(*ANSWERS_HELD_BACK)
    run = scenario.run_long_work(vm, "f12", followers=(), retry=RETRY)

    def describe() -> str:
        return f"agent log:\n{scenario.agent_log(vm)[-3000:]}\n{scenario.describe(run)}"

    vm.drop("out")
    try:
        scenario.annotate(run, "jobnet.dev/stop", "/f12/work")
        # The kill executed on the VM ...
        wait_until(
            lambda: re.search(r"/f12/work#1 kill requested \(stop", scenario.agent_log(vm)),
            timeout=30,
            what="the kill reached the agent",
            describe=describe,
        )
        wait_until(
            lambda: re.search(r"/f12/work#1 stopped", scenario.agent_log(vm)),
            timeout=30,
            what="the agent killed the job",
            describe=describe,
        )
        # ... and the operator, without an answer, sent it again.
        wait_until(
            lambda: len(re.findall(r"job=/f12/work .*killing \(stop", scenario.operator_log())) >= 2,
            timeout=30,
            what="the operator repeated the kill",
            describe=describe,
        )
        assert scenario.job(run, "/f12/work")["state"] == "Stopping", scenario.job(run, "/f12/work")
    finally:
        vm.undrop("out")

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    job = status["jobs"]["/f12/work"]
    assert job["state"] == "Stopped" and job["reason"] == "StopRequested", job
    wait_until(
        lambda: re.search(r"/f12/work#1 kill ignored: already stopped", scenario.agent_log(vm)),
        timeout=30,
        what="the agent ignored the repeated kill",
        describe=describe,
    )
    assert len(re.findall(r"/f12/work#1 kill requested", scenario.agent_log(vm))) == 1, describe()
    event = scenario.wait_event(run, "JobStopped", contains="/f12/work")
    assert "stopped on request" in event["message"], event
    scenario.wait_event(run, "DeliveryRetried", contains="/f12/work: kill attempt 1")
    scenario.wait_operator_log(r"job=/f12/work .*kill outcome unknown: ")
    assert scenario.script_runs(vm, "work") == 1
