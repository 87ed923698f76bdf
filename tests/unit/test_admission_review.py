"""AdmissionReview v1 as data (jobnet.core.admission): reading a review, the answer's shape,
the mutating webhook's JSON patch, and the webhook configurations built from the endpoint table."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from jobnet.core.admission import (
    ENDPOINTS,
    ReviewError,
    annotation_patch,
    parse_review,
    review_response,
    webhook_configurations,
)
from jobnet.core.deletion import FINALIZER
from jobnet.kube.webhook import AdmissionWebhooks


def review(operation: str = "CREATE", **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "operation": operation,
            "resource": {"group": "jobnet.dev", "version": "v1alpha1", "resource": "jobruns"},
            "namespace": "ns",
            "userInfo": {"username": "alice"},
            "object": {"metadata": {"name": "r", "namespace": "ns"}},
            **request,
        },
    }


def test_a_review_is_read_with_its_object_requester_and_namespace() -> None:
    read = parse_review(review())
    assert (read.uid, read.plural, read.operation, read.name, read.namespace) == ("u-1", "jobruns", "CREATE", "r", "ns")
    assert read.username == "alice" and read.old is None


def test_a_delete_is_named_after_its_old_object() -> None:
    read = parse_review(review("DELETE", object=None, oldObject={"metadata": {"name": "gone"}}))
    assert (read.name, read.namespace, read.new) == ("gone", "ns", None)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"kind": "AdmissionReview"},
        review(object=None),
        review(userInfo=None),
    ],
    ids=["not-an-object", "no-request", "no-object", "no-userinfo"],
)
def test_what_is_not_a_review_is_refused_as_a_bad_call(payload: Any) -> None:
    with pytest.raises(ReviewError):
        parse_review(payload)


def test_the_answer_echoes_the_uid_and_carries_a_denial_or_a_patch() -> None:
    assert review_response(review()) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u-1", "allowed": True},
    }
    denied = review_response(review(), denial="JobRun 'r' is invalid", code=422)["response"]
    assert denied == {"uid": "u-1", "allowed": False, "status": {"message": "JobRun 'r' is invalid", "code": 422}}
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    patched = review_response(review(), patch=ops)["response"]
    assert patched["patchType"] == "JSONPatch" and json.loads(base64.b64decode(patched["patch"])) == ops


@pytest.mark.parametrize(
    ("annotations", "changes", "expected"),
    [
        (None, {"x/by": "alice"}, [{"op": "add", "path": "/metadata/annotations", "value": {"x/by": "alice"}}]),
        (None, {"x/by": None}, []),
        ({}, {"x/by": "alice"}, [{"op": "add", "path": "/metadata/annotations/x~1by", "value": "alice"}]),
        (
            {"x/by": "eve"},
            {"x/by": "alice"},
            [{"op": "replace", "path": "/metadata/annotations/x~1by", "value": "alice"}],
        ),
        ({"x/by": "alice"}, {"x/by": "alice"}, []),
        ({"x/by": "eve"}, {"x/by": None}, [{"op": "remove", "path": "/metadata/annotations/x~1by"}]),
        ({"a~b": "1"}, {"a~b": None}, [{"op": "remove", "path": "/metadata/annotations/a~0b"}]),
    ],
    ids=["no-annotations", "remove-absent-from-none", "add", "replace", "unchanged", "remove", "tilde"],
)
def test_annotation_changes_become_json_patch_operations(
    annotations: dict[str, str] | None, changes: dict[str, str | None], expected: list[dict[str, Any]]
) -> None:
    body = {"metadata": {} if annotations is None else {"annotations": annotations}}
    assert annotation_patch(body, changes) == expected


def test_the_configurations_point_every_endpoint_at_the_served_url() -> None:
    configurations = webhook_configurations({"url": "https://op:9443/", "caBundle": "Q0E="}, failure_policy="Ignore")
    validating = configurations["validatingwebhookconfigurations"]
    mutating = configurations["mutatingwebhookconfigurations"]
    assert len(validating) + len(mutating) == len(ENDPOINTS)
    urls = {w["name"]: w["clientConfig"]["url"] for w in validating + mutating}
    assert urls["jobruns.validate.jobnet.dev"] == "https://op:9443/validate-jobrun"
    assert urls["jobruns.mutate.jobnet.dev"] == "https://op:9443/mutate-jobrun"
    assert all(w["clientConfig"]["caBundle"] == "Q0E=" and w["failurePolicy"] == "Ignore" for w in validating)
    service = webhook_configurations({"service": {"name": "s", "namespace": "n"}})
    assert service["mutatingwebhookconfigurations"][0]["clientConfig"]["service"]["path"] == "/mutate-jobrun"


def test_a_new_run_gets_the_finalizer_from_the_mutating_webhook_and_an_update_does_not() -> None:
    created = parse_review(review())
    assert AdmissionWebhooks.stamp_jobrun(created) == [
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    ]
    kept = parse_review(review(object={"metadata": {"name": "r", "finalizers": ["x/y"]}}))
    assert AdmissionWebhooks.stamp_jobrun(kept) == [{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]
    updated = parse_review(review("UPDATE", oldObject={"metadata": {"name": "r"}}))
    assert AdmissionWebhooks.stamp_jobrun(updated) == []
