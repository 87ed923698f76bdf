"""The emulator authenticates and authorizes like a real API server, seen through real kubectl."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from tests.emulator.test_emulator import JOBRUNS, call
from tests.support.emulator import EmulatorServer, grant
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job

pytestmark = pytest.mark.emulator

READ_RUNS = {"apiGroups": ["jobnet.dev"], "resources": ["jobruns"], "verbs": ["get", "list", "watch"]}


def as_user(emulator: EmulatorServer, tmp_path: Path, username: str, *groups: str) -> Path:
    """A kubeconfig that authenticates as ``username`` (a token the emulator issued)."""
    return emulator.write_kubeconfig(tmp_path / f"{username}.kubeconfig", emulator.issue_token(username, groups))


def test_a_reader_reads_runs_but_every_change_is_refused_with_the_servers_message(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    assert kubectl_apply(emulator, jobnet("nightly", script_job("a")), jobrun("nightly", name="nightly-1")).rc == 0
    grant(emulator, "run-reader", [READ_RUNS], users=["carol"])
    carol = as_user(emulator, tmp_path, "carol")
    before = emulator.get("jobnet.dev/v1alpha1", "jobruns", "default", "nightly-1")

    listed = emulator.kubectl("get", "jobruns", "-o", "name", kubeconfig=carol)
    assert listed.rc == 0 and listed.stdout.split() == ["jobrun.jobnet.dev/nightly-1"], listed.stderr
    refused = emulator.kubectl("annotate", "jobrun", "nightly-1", "jobnet.dev/stop=/", kubeconfig=carol)
    assert refused.rc == 1
    assert refused.stderr.strip() == (
        'Error from server (Forbidden): jobruns.jobnet.dev "nightly-1" is forbidden: User "carol" cannot patch '
        'resource "jobruns" in API group "jobnet.dev" in the namespace "default"'
    )
    deleted = emulator.kubectl("delete", "jobrun", "nightly-1", kubeconfig=carol)
    assert deleted.rc == 1 and 'cannot delete resource "jobruns"' in deleted.stderr
    nets = emulator.kubectl("get", "jobnets", kubeconfig=carol)
    assert nets.rc == 1 and 'cannot list resource "jobnets" in API group "jobnet.dev"' in nets.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobruns", "default", "nightly-1") == before  # nothing changed


def test_the_denial_is_a_forbidden_status_object(emulator: EmulatorServer) -> None:
    token = emulator.issue_token("dave")
    status, body = call(emulator, "GET", JOBRUNS, headers={"Authorization": f"Bearer {token}"})
    assert status == 403
    assert body == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": 403,
        "reason": "Forbidden",
        "message": 'jobruns.jobnet.dev is forbidden: User "dave" cannot list resource "jobruns" in API group '
        '"jobnet.dev" in the namespace "default"',
        "details": {"group": "jobnet.dev", "kind": "jobruns"},
    }


def test_an_unknown_token_is_unauthorized(emulator: EmulatorServer, tmp_path: Path) -> None:
    stranger = emulator.write_kubeconfig(tmp_path / "stranger", "not-a-token-the-emulator-issued")
    result = emulator.kubectl("get", "jobruns", kubeconfig=stranger)
    assert result.rc == 1 and "You must be logged in to the server" in result.stderr, result.stderr
    status, body = call(emulator, "GET", "/version", headers={"Authorization": "Bearer nope"})
    assert status == 401 and body["reason"] == "Unauthorized"


def test_impersonation_needs_the_impersonate_verb(emulator: EmulatorServer, tmp_path: Path) -> None:
    grant(emulator, "run-reader", [READ_RUNS], users=["alice"])
    token = emulator.issue_token("bob")
    bob = emulator.write_kubeconfig(tmp_path / "bob", token)

    assert emulator.kubectl("--as=alice", "get", "jobruns", kubeconfig=bob).rc == 1
    status, body = call(
        emulator, "GET", JOBRUNS, headers={"Authorization": f"Bearer {token}", "Impersonate-User": "alice"}
    )
    assert (status, body["message"]) == (
        403,
        'users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" '
        "at the cluster scope",
    )

    impersonate_alice = {
        "apiGroups": [""],
        "resources": ["users"],
        "verbs": ["impersonate"],
        "resourceNames": ["alice"],
    }
    grant(emulator, "be-alice", [impersonate_alice], users=["bob"], namespace=None)
    assert emulator.kubectl("--as=alice", "get", "jobruns", kubeconfig=bob).rc == 0
    assert emulator.kubectl("--as=alice", "--as-group=system:masters", "get", "jobruns", kubeconfig=bob).rc == 1
    assert emulator.kubectl("--as=carol", "get", "jobruns", kubeconfig=bob).rc == 1
    # the admin may impersonate anyone; the impersonated identity is then what is authorized
    admin_as_alice = emulator.kubectl("--as=alice", "get", "jobnets")
    assert admin_as_alice.rc == 1 and 'User "alice" cannot list resource "jobnets"' in admin_as_alice.stderr


def test_a_service_account_token_authenticates_while_the_account_exists(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    # kubectl's imperative commands send these built-in kinds as protobuf
    assert emulator.kubectl("create", "namespace", "batch").rc == 0
    assert emulator.kubectl("create", "serviceaccount", "runner", "-n", "batch").rc == 0
    issued = emulator.kubectl("create", "token", "runner", "-n", "batch", "--duration=10m")
    assert issued.rc == 0, issued.stderr
    runner = emulator.write_kubeconfig(tmp_path / "runner", issued.stdout.strip(), namespace="batch")

    whoami = emulator.kubectl("auth", "whoami", "-o", "json", kubeconfig=runner)
    assert whoami.rc == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"] == {
        "username": "system:serviceaccount:batch:runner",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:batch", "system:authenticated"],
        "uid": emulator.get("v1", "serviceaccounts", "batch", "runner")["metadata"]["uid"],  # type: ignore[index]
    }
    assert emulator.kubectl("get", "jobruns", kubeconfig=runner).rc == 1
    binding = emulator.kubectl(
        "create",
        "rolebinding",
        "runner-view",
        "-n",
        "batch",
        "--clusterrole=run-reader",
        "--serviceaccount=batch:runner",
    )
    assert binding.rc == 0, binding.stderr
    missing_role = emulator.kubectl("get", "jobruns", kubeconfig=runner)
    assert 'RBAC: clusterrole.rbac.authorization.k8s.io "run-reader" not found' in missing_role.stderr
    grant(emulator, "run-reader", [READ_RUNS], namespace=None)
    assert emulator.kubectl("get", "jobruns", kubeconfig=runner).rc == 0
    elsewhere = emulator.kubectl("get", "jobruns", "-n", "default", kubeconfig=runner)
    assert elsewhere.rc == 1 and 'in the namespace "default"' in elsewhere.stderr

    assert emulator.kubectl("delete", "serviceaccount", "runner", "-n", "batch").rc == 0
    assert emulator.kubectl("create", "serviceaccount", "runner", "-n", "batch").rc == 0  # same name, new account
    revoked = emulator.kubectl("get", "jobruns", kubeconfig=runner)
    assert revoked.rc == 1 and "You must be logged in to the server" in revoked.stderr


def test_kubectl_auth_can_i(emulator: EmulatorServer, tmp_path: Path) -> None:
    grant(emulator, "run-reader", [READ_RUNS], users=["carol"])
    status_writer = {"apiGroups": ["jobnet.dev"], "resources": ["jobruns/status"], "verbs": ["patch"]}
    grant(emulator, "status-writer", [status_writer], users=["carol"])
    carol = as_user(emulator, tmp_path, "carol")

    def can_i(*args: str) -> str:
        return emulator.kubectl("auth", "can-i", *args, kubeconfig=carol).stdout.strip()

    assert can_i("get", "jobruns") == "yes"
    assert can_i("patch", "jobruns") == "no"
    assert can_i("patch", "jobruns", "--subresource=status") == "yes"
    assert can_i("get", "jobruns", "-n", "etl") == "no"
    assert can_i("get", "/version") == "yes"  # discovery and the version: every authenticated user
    listed = emulator.kubectl("auth", "can-i", "--list", kubeconfig=carol)
    assert listed.rc == 0 and "jobruns.jobnet.dev" in listed.stdout and "jobruns.jobnet.dev/status" in listed.stdout
    # the admin asks about someone else
    assert emulator.kubectl("auth", "can-i", "get", "jobruns", "--as=carol").stdout.strip() == "yes"
    assert emulator.kubectl("auth", "can-i", "delete", "jobruns", "--as=carol").stdout.strip() == "no"


def test_aggregated_cluster_roles_collect_labelled_roles(emulator: EmulatorServer, tmp_path: Path) -> None:
    labelled = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "jobnet-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [READ_RUNS],
    }
    assert kubectl_apply(emulator, labelled).rc == 0
    view = json.loads(emulator.kubectl("get", "clusterrole", "view", "-o", "json").stdout)
    assert READ_RUNS in view["rules"]
    edit = json.loads(emulator.kubectl("get", "clusterrole", "edit", "-o", "json").stdout)
    assert READ_RUNS in edit["rules"]  # view aggregates into edit, as on a real cluster
    assert emulator.kubectl("create", "rolebinding", "erin-view", "--clusterrole=view", "--user=erin").rc == 0
    erin = as_user(emulator, tmp_path, "erin")
    assert emulator.kubectl("get", "jobruns", kubeconfig=erin).rc == 0
    assert emulator.kubectl("get", "configmaps", kubeconfig=erin).rc == 0  # the built-in part of view

    assert emulator.kubectl("delete", "clusterrole", "jobnet-view").rc == 0
    view = json.loads(emulator.kubectl("get", "clusterrole", "view", "-o", "json").stdout)
    assert READ_RUNS not in view["rules"]
    assert emulator.kubectl("get", "jobruns", kubeconfig=erin).rc == 1


def test_resource_names_and_a_field_selector_on_the_name(emulator: EmulatorServer, tmp_path: Path) -> None:
    for name in ("vm1-ssh", "vm2-ssh"):
        assert emulator.kubectl("create", "secret", "generic", name, "--from-literal=key=value").rc == 0
    stored = emulator.get("v1", "secrets", "default", "vm1-ssh")
    assert stored is not None and stored["data"] == {"key": "dmFsdWU="}  # decoded from protobuf
    one_secret = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"], "resourceNames": ["vm1-ssh"]}
    grant(emulator, "one-secret", [one_secret], users=["frank"])
    frank = as_user(emulator, tmp_path, "frank")

    assert emulator.kubectl("get", "secret", "vm1-ssh", kubeconfig=frank).rc == 0
    other = emulator.kubectl("get", "secret", "vm2-ssh", kubeconfig=frank)
    assert other.rc == 1 and 'secrets "vm2-ssh" is forbidden' in other.stderr
    assert emulator.kubectl("get", "secrets", kubeconfig=frank).rc == 1
    assert emulator.kubectl("get", "secrets", "--field-selector=metadata.name=vm1-ssh", kubeconfig=frank).rc == 0


def test_a_bindings_role_ref_cannot_change(emulator: EmulatorServer) -> None:
    assert emulator.kubectl("create", "rolebinding", "b", "--clusterrole=view", "--user=erin").rc == 0
    patch = json.dumps({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}})
    result = emulator.kubectl("patch", "rolebinding", "b", "--type=merge", "-p", patch)
    assert result.rc == 1 and "cannot change roleRef" in result.stderr, result.stderr


def test_what_non_admins_were_allowed_to_do_is_recorded(emulator: EmulatorServer, tmp_path: Path) -> None:
    grant(emulator, "run-reader", [READ_RUNS], users=["carol"])
    assert emulator.kubectl("get", "jobruns", kubeconfig=as_user(emulator, tmp_path, "carol")).rc == 0
    assert emulator.kubectl("get", "jobnets").rc == 0  # the admin: not recorded
    resource_requests = {
        (user, request.verb, request.api_group, request.resource)
        for user, request in emulator.access_log()
        if request.resource_request
    }
    assert resource_requests == {("carol", "list", "jobnet.dev", "jobruns")}


def test_protobuf_of_other_kinds_is_refused_clearly(emulator: EmulatorServer) -> None:
    def field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
        return bytes([number << 3 | 2, len(payload)]) + payload

    deployment = b"k8s\x00" + field(1, field(1, b"apps/v1") + field(2, b"Deployment")) + field(2, b"")
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            body=deployment,
            headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
        )
        reply = connection.getresponse()
        status, body = reply.status, json.loads(reply.read())
    finally:
        connection.close()
    assert status == 415
    assert "protobuf only for what kubectl create and kubectl auth send, not for Deployment" in body["message"]
