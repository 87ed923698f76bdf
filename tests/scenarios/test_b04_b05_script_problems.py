"""B04/B05: the script is missing, or not executable: the job Fails saying exactly that."""

from __future__ import annotations

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_B04_missing_script_fails_saying_so(scenario: Scenario) -> None:
    vm = scenario.vm()
    missing = f"{vm.home}/bin/no-such-script.sh"
    downstream = scenario.marker_script(vm, "after-missing")
    run = scenario.run_jobnet(
        "b04",
        scenario.host(vm),
        [
            {"name": "missing", "script": missing},
            {"name": "next", "script": downstream, "after": ["missing"]},
        ],
    )

    status = scenario.wait_phase(run, "Failed")

    job = status["jobs"]["/b04/missing"]
    assert job["state"] == "Failed" and job["reason"] == "ScriptNotFound", job
    assert missing in job["message"] and "does not exist" in job["message"], job
    assert status["jobs"]["/b04/next"]["state"] == "Skipped"
    assert scenario.script_runs(vm, "after-missing") == 0
    scenario.wait_agent_log(vm, rf"{missing} does not exist")
    event = scenario.wait_event(run, "JobFailed", contains="/b04/missing")
    assert "ScriptNotFound" in event["message"] and missing in event["message"]
    assert event["type"] == "Warning"
    assert "job=/b04/missing" in scenario.operator_log()


def test_B05_script_not_executable_fails_with_permission_denied(scenario: Scenario) -> None:
    vm = scenario.vm()
    script = scenario.marker_script(vm, "not-executable", mode=0o644)
    run = scenario.run_jobnet("b05", scenario.host(vm), [{"name": "noexec", "script": script}])

    status = scenario.wait_phase(run, "Failed")

    job = status["jobs"]["/b05/noexec"]
    assert job["state"] == "Failed" and job["reason"] == "PermissionDenied", job
    assert "not executable" in job["message"] and script in job["message"], job
    assert scenario.script_runs(vm, "not-executable") == 0
    scenario.wait_agent_log(vm, rf"{script} is not executable")
    event = scenario.wait_event(run, "JobFailed", contains="/b05/noexec")
    assert "PermissionDenied" in event["message"]
