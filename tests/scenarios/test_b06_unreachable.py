"""B06: host address wrong or sshd not running: the job Fails, reason host unreachable."""

from __future__ import annotations

import ipaddress

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_B06_unreachable_host_fails_the_job(scenario: Scenario) -> None:
    vm = scenario.vm()
    down = scenario.vm("sshd down")
    script = scenario.marker_script(vm, "never")
    down.crash()  # every process of that VM is gone, sshd too: connections are refused
    # Nobody has the network address of the VM's own /30: connecting there times out.
    nobody = str(ipaddress.ip_network(vm.subnet).network_address)
    # knownHosts does name the wrong address: the connection itself must fail, not the key check.
    scenario.secret(
        "wrong-address", known_hosts=nobody + " " + vm.known_hosts.split(" ", 1)[1], private_key=vm.client_key
    )
    run = scenario.run_jobnet(
        "b06",
        scenario.host(vm),
        [
            {
                "name": "wrong-address",
                "script": script,
                "host": scenario.host(vm, address=nobody, credentialsSecret="wrong-address"),
            },
            {"name": "sshd-down", "script": script, "host": scenario.host(down)},
        ],
    )

    status = scenario.wait_phase(run, "Failed")

    for name, address in (("wrong-address", nobody), ("sshd-down", down.address)):
        job = status["jobs"][f"/b06/{name}"]
        assert job["state"] == "Failed" and job["reason"] == "HostUnreachable", job
        assert f"cannot reach sshd at {address}:22" in job["message"], job
        event = scenario.wait_event(run, "JobFailed", contains=f"/b06/{name}")
        assert "HostUnreachable" in event["message"] and address in event["message"]
        # Only after the default window of retries (--launch-retry-window, 3 s in the tests).
        retrying = scenario.wait_event(run, "LaunchRetrying", contains=f"/b06/{name}")
        assert "never left" in retrying["message"], retrying
    assert scenario.script_runs(vm, "never") == 0
    assert "Accepted" not in down.read_sshd_log()
    scenario.wait_operator_log(
        rf"job=/b06/sshd-down host={down.user}@{down.address}:22 attempt=1: cannot reach the agent"
    )
