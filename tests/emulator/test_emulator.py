"""The API emulator behaves like a real API server where kmock 0.8 did not (one test per gap)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.emulator import EmulatorServer, grant
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until

JOBNETS = "/apis/jobnet.dev/v1alpha1/namespaces/default/jobnets"
JOBRUNS = "/apis/jobnet.dev/v1alpha1/namespaces/default/jobruns"


def call(
    emulator: EmulatorServer,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": content_type, **(headers or {})})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        connection.close()


def merge_patch(emulator: EmulatorServer, path: str, body: Any) -> tuple[int, Any]:
    """A JSON merge patch (what kubectl annotate and the operator's status writes send)."""
    return call(emulator, "PATCH", path, body, "application/merge-patch+json")


def watch(emulator: EmulatorServer, path: str, count: int, timeout: float = 5.0) -> tuple[str, list[dict[str, Any]]]:
    """Read ``count`` events of a watch (server-side timeout bounds the wait); return content type and events."""
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=timeout + 5)
    separator = "&" if "?" in path else "?"
    connection.request("GET", f"{path}{separator}watch=true&timeoutSeconds={timeout}")
    reply = connection.getresponse()
    events = []
    try:
        while len(events) < count:
            line = reply.readline()
            if not line:
                break
            events.append(json.loads(line))
    finally:
        connection.close()
    return reply.getheader("Content-Type", ""), events


def create_jobnet(emulator: EmulatorServer, name: str) -> dict[str, Any]:
    status, body = call(emulator, "POST", JOBNETS, jobnet(name, script_job("a")))
    assert status == 201, body
    return body


def test_objects_get_uid_timestamps_generation_and_increasing_resource_versions(emulator: EmulatorServer) -> None:
    created = create_jobnet(emulator, "one")
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    first = int(meta["resourceVersion"])

    _, annotated = merge_patch(emulator, f"{JOBNETS}/one", {"metadata": {"annotations": {"a": "b"}}})
    assert int(annotated["metadata"]["resourceVersion"]) > first
    assert annotated["metadata"]["generation"] == 1  # metadata changes keep the generation

    _, respecced = merge_patch(emulator, f"{JOBNETS}/one", {"spec": {"timeoutSeconds": 5}})
    assert respecced["metadata"]["generation"] == 2
    assert int(respecced["metadata"]["resourceVersion"]) > int(annotated["metadata"]["resourceVersion"])
    assert respecced["metadata"]["uid"] == meta["uid"]


def test_generate_name(emulator: EmulatorServer) -> None:
    status, body = call(
        emulator, "POST", JOBNETS, {**jobnet("x", script_job("a")), "metadata": {"generateName": "nightly-"}}
    )
    assert status == 201
    assert body["metadata"]["name"].startswith("nightly-") and len(body["metadata"]["name"]) == len("nightly-") + 5


def test_json_patch_test_op_is_honoured_like_kopfs_finalizer_patch(emulator: EmulatorServer) -> None:
    version = create_jobnet(emulator, "one")["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["jobnet.dev/test"]},
    ]

    status, body = call(emulator, "PATCH", f"{JOBNETS}/one", ops, "application/json-patch+json")
    assert status == 200 and body["metadata"]["finalizers"] == ["jobnet.dev/test"]

    status, body = call(emulator, "PATCH", f"{JOBNETS}/one", ops, "application/json-patch+json")  # stale now
    assert status == 422 and body["kind"] == "Status"


def test_a_status_patch_with_a_stale_resource_version_conflicts(emulator: EmulatorServer) -> None:
    """What a run's loop relies on (kube/versioned.py): a status write conditional on the version
    it decided from is refused once anything (here an annotation) changed the object."""
    version = create_jobnet(emulator, "one")["metadata"]["resourceVersion"]
    status, body = merge_patch(
        emulator, f"{JOBNETS}/one/status", {"metadata": {"resourceVersion": version}, "status": {"valid": True}}
    )
    assert status == 200 and body["status"]["valid"] is True
    current = body["metadata"]["resourceVersion"]
    merge_patch(emulator, f"{JOBNETS}/one", {"metadata": {"annotations": {"a": "1"}}})

    status, body = merge_patch(
        emulator, f"{JOBNETS}/one/status", {"metadata": {"resourceVersion": current}, "status": {"valid": False}}
    )
    assert status == 409 and body["reason"] == "Conflict"
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "one")["status"]["valid"] is True


def test_held_watch_events_are_released_late_in_order(emulator: EmulatorServer) -> None:
    create_jobnet(emulator, "one")
    held = emulator.hold_watch_events("jobnets", "one")
    for value in ("1", "2"):
        merge_patch(emulator, f"{JOBNETS}/one", {"metadata": {"labels": {"v": value}}})
    held.stop_capturing()
    assert [obj["metadata"]["labels"]["v"] for obj in held.held] == ["1", "2"]
    assert held.release() == 2 and held.held == []


def test_merge_patch_removes_null_fields_and_merges_maps(emulator: EmulatorServer) -> None:
    create_jobnet(emulator, "one")
    merge_patch(emulator, f"{JOBNETS}/one", {"metadata": {"labels": {"a": "1", "b": "2"}}})
    _, body = merge_patch(emulator, f"{JOBNETS}/one", {"metadata": {"labels": {"a": None, "c": "3"}}})
    assert body["metadata"]["labels"] == {"b": "2", "c": "3"}


def test_optimistic_concurrency_conflicts_on_stale_resource_version(emulator: EmulatorServer) -> None:
    stale = create_jobnet(emulator, "one")
    merge_patch(emulator, f"{JOBNETS}/one", {"spec": {"timeoutSeconds": 5}})

    status, body = call(emulator, "PUT", f"{JOBNETS}/one", stale)
    assert status == 409 and body["reason"] == "Conflict"
    status, _ = merge_patch(
        emulator,
        f"{JOBNETS}/one",
        {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "spec": {"timeoutSeconds": 7}},
    )
    assert status == 409
    status, _ = call(
        emulator, "PUT", f"{JOBNETS}/one", {**stale, "metadata": {**stale["metadata"], "resourceVersion": ""}}
    )
    assert status == 422  # custom resources need a resourceVersion to be replaced


def test_status_is_a_real_subresource(emulator: EmulatorServer) -> None:
    status, created = call(emulator, "POST", JOBRUNS, {**jobrun("x", name="r"), "status": {"phase": "Succeeded"}})
    assert status == 201 and "status" not in created  # status is dropped on create

    _, body = merge_patch(emulator, f"{JOBRUNS}/r", {"status": {"phase": "Failed"}})
    assert "status" not in body  # the main resource ignores .status

    _, body = merge_patch(
        emulator, f"{JOBRUNS}/r/status", {"status": {"phase": "Running"}, "spec": {"jobNetRef": "other"}}
    )
    assert body["status"] == {"phase": "Running"}
    assert body["spec"]["jobNetRef"] == "x"  # /status changes nothing but .status
    assert body["metadata"]["generation"] == 1


def test_list_has_kind_api_version_and_resource_version(emulator: EmulatorServer) -> None:
    create_jobnet(emulator, "one")
    _, body = call(emulator, "GET", JOBNETS)
    assert body["kind"] == "JobNetList" and body["apiVersion"] == "jobnet.dev/v1alpha1"
    assert int(body["metadata"]["resourceVersion"]) >= int(body["items"][0]["metadata"]["resourceVersion"])
    assert body["items"][0]["kind"] == "JobNet"


def test_core_discovery_reports_group_version_v1(emulator: EmulatorServer) -> None:
    _, body = call(emulator, "GET", "/api/v1")
    assert body["groupVersion"] == "v1"
    assert {"events", "secrets", "namespaces"} <= {r["name"] for r in body["resources"]}


def test_crds_are_discoverable_with_short_names_category_and_status(emulator: EmulatorServer) -> None:
    _, body = call(emulator, "GET", "/apis/jobnet.dev/v1alpha1")
    resources = {r["name"]: r for r in body["resources"]}
    assert resources["jobnets"]["shortNames"] == ["jn"] and resources["jobruns"]["shortNames"] == ["jr"]
    assert resources["jobnets"]["categories"] == ["jobnet"] and resources["jobruns"]["kind"] == "JobRun"
    assert {"jobnets/status", "jobruns/status"} <= set(resources)


def test_watch_from_resource_version_replays_only_newer_events_and_loses_none(emulator: EmulatorServer) -> None:
    create_jobnet(emulator, "old")
    _, listing = call(emulator, "GET", JOBNETS)
    create_jobnet(emulator, "between-list-and-watch")

    content_type, events = watch(emulator, f"{JOBNETS}?resourceVersion={listing['metadata']['resourceVersion']}", 1)
    assert content_type.startswith("application/json")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "between-list-and-watch")]

    _, everything = watch(emulator, JOBNETS, 2)  # no resourceVersion: the current state first
    assert sorted(e["object"]["metadata"]["name"] for e in everything) == ["between-list-and-watch", "old"]


def test_watch_streams_live_events_and_ends_at_timeout_seconds(emulator: EmulatorServer) -> None:
    version = create_jobnet(emulator, "one")["metadata"]["resourceVersion"]
    writer = threading.Timer(0.3, lambda: call(emulator, "DELETE", f"{JOBNETS}/one"))
    writer.start()
    _, events = watch(emulator, f"{JOBNETS}?resourceVersion={version}", 5, timeout=2)
    writer.join()
    assert [e["type"] for e in events] == ["DELETED"]  # and the stream ended by itself (timeoutSeconds)


def test_watch_from_a_compacted_resource_version_gets_410_gone(tmp_path: Path) -> None:
    with EmulatorServer(tmp_path, history_limit=3) as emulator:
        first = create_jobnet(emulator, "a")["metadata"]["resourceVersion"]
        for name in "bcde":
            create_jobnet(emulator, name)
        _, events = watch(emulator, f"{JOBNETS}?resourceVersion={first}", 1)
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_finalizers_delay_deletion_until_removed(emulator: EmulatorServer) -> None:
    call(
        emulator,
        "POST",
        JOBNETS,
        {**jobnet("one", script_job("a")), "metadata": {"name": "one", "finalizers": ["jobnet.dev/x"]}},
    )
    status, body = call(emulator, "DELETE", f"{JOBNETS}/one")
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "one") is not None

    merge_patch(emulator, f"{JOBNETS}/one", {"metadata": {"finalizers": None}})
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "one") is None


def test_unknown_fields_are_rejected_when_strict_and_pruned_otherwise(emulator: EmulatorServer) -> None:
    typo = jobnet("typo", {**script_job("b"), "aftr": ["a"]})
    status, body = call(emulator, "POST", f"{JOBNETS}?fieldValidation=Strict", typo)
    assert status == 400 and 'unknown field "spec.jobs[0].aftr"' in body["message"]

    status, body = call(emulator, "POST", JOBNETS, typo)
    assert status == 201 and "aftr" not in body["spec"]["jobs"][0]


def test_server_side_dry_run_admits_but_stores_nothing(emulator: EmulatorServer) -> None:
    result = kubectl_apply(emulator, jobnet("dry", script_job("a")), verb="apply")
    assert result.rc == 0
    result = emulator.kubectl("delete", "jn", "dry", "--dry-run=server")
    assert result.rc == 0 and "server dry run" in result.stdout
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "dry") is not None
    result = emulator.kubectl(
        "apply", "-f", "-", "--dry-run=server", input=yaml.safe_dump(jobnet("wet", script_job("a")))
    )
    assert result.rc == 0 and "server dry run" in result.stdout
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "wet") is None


def test_size_limits_of_a_real_cluster(emulator: EmulatorServer) -> None:
    call(emulator, "POST", JOBRUNS, jobrun("x", name="r"))
    status, body = merge_patch(emulator, f"{JOBRUNS}/r/status", {"status": {"message": "x" * 1_600_000}})
    assert status == 500 and body["message"] == "etcdserver: request is too large"
    status, body = merge_patch(emulator, f"{JOBRUNS}/r", {"metadata": {"annotations": {"big": "x" * 300_000}}})
    assert status == 422 and "metadata.annotations: Too long" in body["message"]


def test_events_secrets_and_leases_are_stored(emulator: EmulatorServer) -> None:
    for path, body in [
        (
            "/api/v1/namespaces/default/events",
            {
                "metadata": {"generateName": "x."},
                "involvedObject": {"name": "r"},
                "reason": "R",
                "message": "m",
                "type": "Normal",
            },
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            {"metadata": {"name": "e"}, "reason": "R", "eventTime": None},
        ),
        ("/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "data": {"k": "dg=="}}),
        ("/apis/coordination.k8s.io/v1/namespaces/default/leases", {"metadata": {"name": "l"}, "spec": {}}),
    ]:
        status, created = call(emulator, "POST", path, body)
        assert status == 201, created
    assert [e["reason"] for e in emulator.events_for("default", "r")] == ["R"]


def test_objects_need_an_existing_namespace(emulator: EmulatorServer) -> None:
    status, body = call(
        emulator, "POST", JOBNETS.replace("default", "nowhere"), jobnet("one", script_job("a"), namespace="nowhere")
    )
    assert status == 404 and 'namespaces "nowhere" not found' in body["message"]


class _Webhook(http.server.BaseHTTPRequestHandler):
    """A stand-in admission webhook: denies objects named ``bad``."""

    reviews: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        review = self.read_review()
        subject = review["request"]["object"] or review["request"]["oldObject"]
        allowed = subject["metadata"]["name"] != "bad"
        self.answer(
            {
                "uid": review["request"]["uid"],
                "allowed": allowed,
                **({} if allowed else {"status": {"code": 422, "message": "bad is bad"}}),
            }
        )

    def read_review(self) -> dict[str, Any]:
        review: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).reviews.append(review)
        return review

    def answer(self, response: dict[str, Any]) -> None:
        payload = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[_Webhook]) -> Iterator[str]:
    """A webhook server on a free loopback port, its reviews (shared by both handlers) cleared."""
    _Webhook.reviews = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def webhook_url() -> Iterator[str]:
    with _serving(_Webhook) as url:
        yield f"{url}/check"


def _configure_webhook(emulator: EmulatorServer, url: str, policy: str) -> None:
    emulator.put(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "test"},
            "webhooks": [
                {
                    "name": "check.example.dev",
                    "failurePolicy": policy,
                    "timeoutSeconds": 2,
                    "clientConfig": {"url": url},
                    "rules": [
                        {
                            "apiGroups": ["jobnet.dev"],
                            "apiVersions": ["*"],
                            "resources": ["jobnets"],
                            "operations": ["CREATE", "DELETE"],
                        }
                    ],
                }
            ],
        }
    )


def test_admission_webhooks_are_called_and_deny_like_a_real_api_server(
    emulator: EmulatorServer, webhook_url: str
) -> None:
    _configure_webhook(emulator, webhook_url, "Fail")

    assert kubectl_apply(emulator, jobnet("good", script_job("a"))).rc == 0
    result = kubectl_apply(emulator, jobnet("bad", script_job("a")))
    assert result.rc == 1
    assert 'admission webhook "check.example.dev" denied the request: bad is bad' in result.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "bad") is None
    assert emulator.kubectl("delete", "jn", "good").rc == 0

    request = _Webhook.reviews[0]["request"]
    assert request["operation"] == "CREATE" and request["resource"]["resource"] == "jobnets"
    assert request["object"]["metadata"]["uid"] and request["oldObject"] is None
    assert _Webhook.reviews[-1]["request"]["operation"] == "DELETE"
    assert _Webhook.reviews[-1]["request"]["oldObject"]["metadata"]["name"] == "good"


def test_unreachable_webhook_fails_or_is_ignored_per_failure_policy(emulator: EmulatorServer) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/check"
    _configure_webhook(emulator, url, "Fail")
    result = kubectl_apply(emulator, jobnet("one", script_job("a")))
    assert result.rc == 1 and 'failed calling webhook "check.example.dev"' in result.stderr

    _configure_webhook(emulator, url, "Ignore")
    assert kubectl_apply(emulator, jobnet("one", script_job("a"))).rc == 0


def test_kubectl_get_shows_printer_columns_and_categories(emulator: EmulatorServer) -> None:
    assert kubectl_apply(emulator, jobrun("nightly", name="nightly-1")).rc == 0
    merge_patch(emulator, f"{JOBRUNS}/nightly-1/status", {"status": {"phase": "Running", "progress": "3/7"}})

    result = emulator.kubectl("get", "jobruns")
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "JOBNET", "PHASE", "PROGRESS", "STARTED", "COMPLETED", "AGE"]
    assert row.split()[:4] == ["nightly-1", "nightly", "Running", "3/7"]

    assert kubectl_apply(emulator, jobnet("nightly", script_job("a"))).rc == 0
    result = emulator.kubectl("get", "jobnet")  # the category: JobNets and JobRuns
    assert "jobnet.jobnet.dev/nightly" in result.stdout and "jobrun.jobnet.dev/nightly-1" in result.stdout


def test_kubectl_get_watch_prints_changes(emulator: EmulatorServer) -> None:
    assert kubectl_apply(emulator, jobrun("nightly", name="nightly-1")).rc == 0
    process = subprocess.Popen(
        ["kubectl", f"--kubeconfig={emulator.kubeconfig}", "get", "jr", "-w", "--no-headers"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(emulator.workdir)},
    )
    deadline = threading.Timer(15, process.kill)  # bounds the blocking reads below
    deadline.start()
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the current state
        assert first.split()[0] == "nightly-1"
        merge_patch(emulator, f"{JOBRUNS}/nightly-1/status", {"status": {"phase": "Running"}})
        second = process.stdout.readline()
        assert second.split()[:3] == ["nightly-1", "nightly", "Running"]
    finally:
        deadline.cancel()
        process.kill()
        process.wait(5)


def test_outage_refuses_connections_and_ends_watches_then_recovers(emulator: EmulatorServer) -> None:
    create_jobnet(emulator, "one")
    watched: list[Any] = []
    watcher = threading.Thread(target=lambda: watched.append(watch(emulator, JOBNETS, 5, timeout=30)))
    watcher.start()
    wait_until(lambda: any(emulator.api.store.watchers.values()), timeout=5, what="the watch being open")
    with emulator.outage():
        watcher.join(10)
        assert not watcher.is_alive()  # the open watch was ended by the outage, long before its timeout
        assert [e["object"]["metadata"]["name"] for e in watched[0][1]] == ["one"]
        with pytest.raises(ConnectionRefusedError):
            call(emulator, "GET", JOBNETS)
        assert emulator.kubectl("get", "jn").rc != 0
    status, body = call(emulator, "GET", JOBNETS)
    assert status == 200 and [i["metadata"]["name"] for i in body["items"]] == ["one"]


def test_kubectl_explain_shows_the_crd_schema(emulator: EmulatorServer) -> None:
    result = emulator.kubectl("explain", "jobrun.spec")
    assert result.rc == 0, result.stderr
    assert "jobNetRef" in result.stdout and "Name of the root JobNet to run" in result.stdout


def test_stall_accepts_requests_but_answers_only_afterwards(emulator: EmulatorServer) -> None:
    create_jobnet(emulator, "one")
    with emulator.stall():
        connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=0.5)
        connection.request("GET", JOBNETS)  # connecting works: the server is up but hung
        with pytest.raises(TimeoutError):
            connection.getresponse()
        connection.close()
    status, body = call(emulator, "GET", JOBNETS)
    assert status == 200 and len(body["items"]) == 1


def test_custom_resources_are_validated_against_their_schema_before_admission(emulator: EmulatorServer) -> None:
    bad = jobnet("bad", {"name": "", "script": "/x.sh"}, timeoutSeconds="soon")
    bad["spec"]["stuckResolution"] = "Sometimes"
    status, body = call(emulator, "POST", JOBNETS, bad)
    assert status == 422 and body["reason"] == "Invalid"
    message = body["message"]
    assert message.startswith('JobNet.jobnet.dev "bad" is invalid: [')
    assert "spec.timeoutSeconds in body must be of type integer" in message
    assert 'spec.stuckResolution: Unsupported value: "Sometimes": supported values: "Auto", "Manual"' in message
    assert "spec.jobs[0].name in body should be at least 1 chars long" in message

    status, body = call(emulator, "POST", JOBRUNS, {**jobrun("x", name="r"), "spec": {}})
    assert status == 422 and "spec.jobNetRef: Required value" in body["message"]


class _MutatingWebhook(_Webhook):
    """A stand-in mutating webhook at ``/mutate`` (stamps ``example.dev/by`` with the requester;
    for an object named ``breaks-schema`` it sets ``spec.jobs`` to a string), validating at any
    other path like :class:`_Webhook`."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path != "/mutate":
            super().do_POST()
            return
        request = self.read_review()["request"]
        ops: list[dict[str, Any]] = [
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/example.dev~1by", "value": request["userInfo"]["username"]},
        ]
        if request["object"]["metadata"]["name"] == "breaks-schema":
            ops.append({"op": "replace", "path": "/spec/jobs", "value": "not a list"})
        self.answer(
            {
                "uid": request["uid"],
                "allowed": True,
                "patchType": "JSONPatch",
                "patch": base64.b64encode(json.dumps(ops).encode()).decode(),
            }
        )


@pytest.fixture
def mutating_webhook_url() -> Iterator[str]:
    with _serving(_MutatingWebhook) as url:
        yield url


def test_mutating_webhooks_patch_before_schema_and_validating_webhooks(
    emulator: EmulatorServer, mutating_webhook_url: str
) -> None:
    rules = [
        {
            "apiGroups": ["jobnet.dev"],
            "apiVersions": ["*"],
            "resources": ["jobnets"],
            "operations": ["CREATE", "UPDATE"],
        }
    ]
    emulator.put(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "stamp"},
            "webhooks": [
                {
                    "name": "stamp.example.dev",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 2,
                    "clientConfig": {"url": f"{mutating_webhook_url}/mutate"},
                    "rules": rules,
                }
            ],
        }
    )
    _configure_webhook(emulator, f"{mutating_webhook_url}/check", "Fail")

    assert kubectl_apply(emulator, jobnet("stamped", script_job("a"))).rc == 0
    stored = emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "stamped")
    assert stored is not None and stored["metadata"]["annotations"]["example.dev/by"] == "kubernetes-admin"
    mutation, validation = _Webhook.reviews[-2:]
    assert mutation["request"]["userInfo"]["groups"] == ["system:masters", "system:authenticated"]
    assert validation["request"]["object"]["metadata"]["annotations"]["example.dev/by"] == "kubernetes-admin"

    result = kubectl_apply(emulator, jobnet("breaks-schema", script_job("a")))
    assert result.rc == 1 and "spec.jobs" in result.stderr, result.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "breaks-schema") is None

    grant(
        emulator,
        "labeller",
        [{"apiGroups": ["jobnet.dev"], "resources": ["jobnets"], "verbs": ["get", "patch"]}],
        groups=["ops"],
    )
    result = emulator.kubectl(
        "--as=alice", "--as-group=ops", "--as-group=oncall", "label", "jn", "stamped", "tier=gold"
    )
    assert result.rc == 0, result.stderr
    stored = emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "stamped")
    assert stored is not None and stored["metadata"]["annotations"]["example.dev/by"] == "alice"
    assert stored["metadata"]["labels"] == {"tier": "gold"}
    request = _Webhook.reviews[-1]["request"]
    assert (
        request["operation"] == "UPDATE"
        and request["oldObject"]["metadata"]["annotations"]["example.dev/by"] == "kubernetes-admin"
    )
    assert request["userInfo"] == {"username": "alice", "groups": ["ops", "oncall", "system:authenticated"]}


def test_a_webhook_patch_that_does_not_apply_is_an_internal_error(emulator: EmulatorServer) -> None:
    class BadPatch(_Webhook):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            patch = base64.b64encode(json.dumps([{"op": "remove", "path": "/no/such/field"}]).encode()).decode()
            payload = json.dumps(
                {
                    "response": {
                        "uid": review["request"]["uid"],
                        "allowed": True,
                        "patchType": "JSONPatch",
                        "patch": patch,
                    }
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BadPatch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        emulator.put(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "broken"},
                "webhooks": [
                    {
                        "name": "broken.example.dev",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 2,
                        "clientConfig": {"url": f"http://127.0.0.1:{server.server_address[1]}/"},
                        "rules": [
                            {
                                "apiGroups": ["jobnet.dev"],
                                "apiVersions": ["*"],
                                "resources": ["jobnets"],
                                "operations": ["CREATE"],
                            }
                        ],
                    }
                ],
            }
        )
        status, body = call(emulator, "POST", JOBNETS, jobnet("one", script_job("a")))
        assert (
            status == 500 and 'admission webhook "broken.example.dev" returned an invalid patch' in body["message"]
        ), body
    finally:
        server.shutdown()
        thread.join(5)
