"""B08: unknown or changed host key: the job Fails without ever connecting, reason host key mismatch."""

from __future__ import annotations

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_B08_host_key_mismatch_fails_without_connecting(scenario: Scenario) -> None:
    vm = scenario.vm()
    other = scenario.vm("another host")
    script = scenario.marker_script(vm, "never")
    # Changed: the VM's address with another VM's key. Unknown: knownHosts names only another host.
    changed = vm.address + " " + other.known_hosts.split(" ", 1)[1]
    scenario.secret("changed-key", known_hosts=changed, private_key=vm.client_key)
    scenario.secret("unknown-host", known_hosts=other.known_hosts, private_key=vm.client_key)
    run = scenario.run_jobnet(
        "b08",
        scenario.host(vm),
        [
            {"name": "changed", "script": script, "host": scenario.host(vm, credentialsSecret="changed-key")},
            {"name": "unknown", "script": script, "host": scenario.host(vm, credentialsSecret="unknown-host")},
        ],
    )

    status = scenario.wait_phase(run, "Failed")

    messages = {"changed": "does not match knownHosts", "unknown": f"no host key for {vm.address} in knownHosts"}
    for name, text in messages.items():
        job = status["jobs"][f"/b08/{name}"]
        assert job["state"] == "Failed" and job["reason"] == "HostKeyMismatch", job
        assert text in job["message"], job
        event = scenario.wait_event(run, "JobFailed", contains=f"/b08/{name}")
        assert "HostKeyMismatch" in event["message"]
    assert scenario.script_runs(vm, "never") == 0
    sshd_log = vm.read_sshd_log()
    assert "Accepted" not in sshd_log, sshd_log  # credentials were never offered
    assert not (vm.home / ".jobnet").exists()  # nothing was installed either
