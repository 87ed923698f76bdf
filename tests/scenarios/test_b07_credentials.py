"""B07: wrong SSH credentials: the job Fails, reason authentication failed."""

from __future__ import annotations

import io

import paramiko
import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def _unauthorised_key() -> str:
    text = io.StringIO()
    key = paramiko.ECDSAKey.generate()
    key.write_private_key(text)
    return text.getvalue()


def test_B07_wrong_credentials_fail_the_job(scenario: Scenario) -> None:
    vm = scenario.vm()
    script = scenario.marker_script(vm, "never")
    scenario.secret("wrong-key", known_hosts=vm.known_hosts, private_key=_unauthorised_key())
    scenario.secret("wrong-password", known_hosts=vm.known_hosts, password="not-" + vm.password)
    allowed = scenario.marker_script(vm, "allowed")
    # The right credentials connect first: the wrong ones must not ride on that connection.
    run = scenario.run_jobnet(
        "b07",
        scenario.host(vm),
        [
            {"name": "right", "script": allowed},
            {
                "name": "by-key",
                "script": script,
                "after": ["right"],
                "host": scenario.host(vm, credentialsSecret="wrong-key"),
            },
            {
                "name": "by-password",
                "script": script,
                "after": ["right"],
                "host": scenario.host(vm, credentialsSecret="wrong-password"),
            },
        ],
    )

    status = scenario.wait_phase(run, "Failed")

    for name, method in (("by-key", "publickey"), ("by-password", "password")):
        job = status["jobs"][f"/b07/{name}"]
        assert job["state"] == "Failed" and job["reason"] == "AuthenticationFailed", job
        assert f"rejected user '{vm.user}' ({method} tried)" in job["message"], job
        event = scenario.wait_event(run, "JobFailed", contains=f"/b07/{name}")
        assert "AuthenticationFailed" in event["message"]
    assert scenario.script_runs(vm, "never") == 0
    assert status["jobs"]["/b07/right"]["state"] == "Succeeded" and scenario.script_runs(vm, "allowed") == 1
    log = scenario.operator_log()
    assert vm.password not in log and "not-" + vm.password not in log  # secrets never logged
    assert "PRIVATE KEY" not in log
    assert "Failed password" in vm.read_sshd_log() or "Failed publickey" in vm.read_sshd_log()
