"""The operator subprocess lives in the product (``jobnet dev`` runs it too); tests import it from
here, with :func:`admission_review` for calling the webhook directly."""

from __future__ import annotations

import uuid
from typing import Any

from jobnet.devenv.operator import (  # noqa: F401 (re-exports)
    WEBHOOK_CONFIGURATION,
    OperatorNotReady,
    OperatorProcess,
    register_webhooks,
    unregister_webhooks,
)


def admission_review(
    operation: str,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None = None,
    namespace: str = "default",
    username: str = "tester",
) -> dict[str, Any]:
    """A real ``admission.k8s.io/v1`` AdmissionReview request for a JobNet or JobRun."""
    subject = obj if obj is not None else old
    assert subject is not None
    kind = subject["kind"]
    plural = {"JobNet": "jobnets", "JobRun": "jobruns"}[kind]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "jobnet.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "jobnet.dev", "version": "v1alpha1", "resource": plural},
            "requestKind": {"group": "jobnet.dev", "version": "v1alpha1", "kind": kind},
            "requestResource": {"group": "jobnet.dev", "version": "v1alpha1", "resource": plural},
            "name": subject["metadata"].get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": username, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }
