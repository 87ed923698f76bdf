"""B07 (Secret formats): a ``kubernetes.io/ssh-auth`` Secret (``ssh-privatekey``) works like our
own keys, and a malformed Secret (a binary value, an unreadable key) fails the job
``AuthenticationFailed`` with the Secret and the key named, never its content, never Stuck."""

from __future__ import annotations

import base64

import pytest

from tests.support.scenario import NAMESPACE, Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

BINARY = b"\xff\xfe\x00binary-secret-bytes"


def put_secret(scenario: Scenario, name: str, secret_type: str, data: dict[str, bytes]) -> None:
    scenario.emulator.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret_type,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
    )


def test_B07_ssh_auth_secret_runs_and_malformed_secrets_fail_naming_the_key(scenario: Scenario) -> None:
    vm = scenario.vm()
    key, known_hosts = vm.client_key.encode(), vm.known_hosts.encode()
    put_secret(scenario, "standard", "kubernetes.io/ssh-auth", {"ssh-privatekey": key, "knownHosts": known_hosts})
    put_secret(scenario, "binary", "Opaque", {"privateKey": BINARY, "knownHosts": known_hosts})
    put_secret(
        scenario,
        "not-a-key",
        "kubernetes.io/ssh-auth",
        {"ssh-privatekey": b"binary-secret-bytes\n", "knownHosts": known_hosts},
    )
    ok = scenario.marker_script(vm, "ok")
    never = scenario.marker_script(vm, "never")
    run = scenario.run_jobnet(
        "b07s",
        scenario.host(vm, credentialsSecret="standard"),
        [
            {"name": "standard", "script": ok},
            {"name": "binary", "script": never, "host": scenario.host(vm, credentialsSecret="binary")},
            {"name": "not-a-key", "script": never, "host": scenario.host(vm, credentialsSecret="not-a-key")},
        ],
    )

    status = scenario.wait_phase(run, "Failed", timeout=60)

    assert status["jobs"]["/b07s/standard"]["state"] == "Succeeded" and scenario.script_runs(vm, "ok") == 1
    for job, named in (
        ("binary", "key 'privateKey' is not UTF-8 text"),
        ("not-a-key", "key 'ssh-privatekey' is not a readable"),
    ):
        entry = status["jobs"][f"/b07s/{job}"]
        assert entry["state"] == "Failed" and entry["reason"] == "AuthenticationFailed", entry
        assert f"credentials Secret {NAMESPACE}/{job} is not usable: {named}" in entry["message"], entry
        event = scenario.wait_event(run, "JobFailed", contains=f"/b07s/{job}")
        # Which replica said it: the pod name the chart passes as POD_ID.
        assert event["reportingComponent"] == "jobnet-operator" and event["reportingInstance"].startswith("operator-")
    assert scenario.script_runs(vm, "never") == 0
    everything = scenario.operator_log() + str(scenario.events(run)) + str(status)
    assert "binary-secret-bytes" not in everything and "PRIVATE KEY" not in everything
