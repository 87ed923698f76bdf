"""B07 (transient): the API server cannot answer the read of the credentials Secret for a
while. Nothing was sent to the VM, so the job must not fail AuthenticationFailed: the read is
retried and the job runs once, Succeeded."""

from __future__ import annotations

import pytest

from tests.support.scenario import NAMESPACE, Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_B07_a_secret_read_failing_for_a_while_is_retried_and_the_job_succeeds(scenario: Scenario) -> None:
    vm = scenario.vm()
    script = scenario.marker_script(vm, "once")
    secret = scenario.secret_name(vm)
    # The operator reads the Secret when it first connects to the VM: the first reads get 503
    # (for about 1.5s of backoff). One dispatch attempt: the wait must not use it up.
    scenario.emulator.fail_next(f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}", 6)
    run = scenario.run_jobnet(
        "b07t", scenario.host(vm), [{"name": "job", "script": script}], retry={"dispatchAttempts": 1}
    )

    status = scenario.wait_phase(run, "Succeeded")

    job = status["jobs"]["/b07t/job"]
    assert job["state"] == "Succeeded" and job["attempt"] == 1, job
    assert scenario.script_runs(vm, "once") == 1
    scenario.wait_operator_log(rf"cannot read credentials Secret {NAMESPACE}/{secret}: .*HTTP 503.*; retrying")
    assert "JobFailed" not in [event["reason"] for event in scenario.events(run)]
