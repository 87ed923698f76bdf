"""Safe default retries (issue 10): a launch that provably never left (the VM could not be
reached: connect timed out or was refused) is retried with the same key for the operator's
``--launch-retry-window`` before the job fails HostUnreachable. The VM's link is down while a
run's first launches are due; it comes back a couple of seconds later: every job runs once and
the run Succeeds, with one LaunchRetrying Event per job and no failure."""

from __future__ import annotations

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_launches_due_while_the_vm_link_is_down_run_once_when_it_returns(scenario: Scenario) -> None:
    vm = scenario.vm()
    scripts = {name: scenario.marker_script(vm, name) for name in ("a", "b", "c")}
    scenario.start_operator("--launch-retry-window=30")
    vm.cut()
    run = scenario.run_jobnet(
        "retrywin",
        scenario.host(vm),
        [
            {"name": "a", "script": scripts["a"]},
            {"name": "b", "script": scripts["b"]},
            {"name": "c", "script": scripts["c"], "after": ["a", "b"]},
        ],
    )
    for path in ("/retrywin/a", "/retrywin/b"):
        event = scenario.wait_event(run, "LaunchRetrying", contains=path, timeout=30)
        assert event["type"] == "Warning" and "never left" in event["message"], event
    scenario.wait_operator_log(r"job=/retrywin/a .*cannot reach the agent for launch", timeout=10)
    vm.restore()

    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    assert all(job["attempt"] == 1 for path, job in status["jobs"].items() if path != "/retrywin"), status["jobs"]
    assert all(scenario.script_runs(vm, name) == 1 for name in ("a", "b", "c"))
    reasons = scenario.event_reasons(run)
    assert "JobFailed" not in reasons and "JobStuck" not in reasons, reasons
    assert reasons.count("LaunchRetrying") == 2, reasons
