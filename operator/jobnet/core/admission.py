"""AdmissionReview v1 as data: what a review asks, the answer to it, and the operator's webhook
endpoints (their URL paths, the kinds and operations they judge).

The operator serves its webhooks from a plain aiohttp handler (``jobnet.kube.webhook``); this
module is its pure part: reading an ``admission.k8s.io/v1`` AdmissionReview request, building
the response (allowed, or a denial with a message and an HTTP code; a mutating webhook's
changes as a base64 JSON patch), and the endpoint table the Helm chart, ``jobnet dev`` and
``--webhook-configuration`` configure the API server with.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobnet.core.models import API_GROUP, API_VERSION

#: The API server sends the request's AdmissionReview in this version and wants its answer in it.
ADMISSION_REVIEW_API_VERSION = "admission.k8s.io/v1"


@dataclass(frozen=True)
class Endpoint:
    """One webhook: its URL path, the kind (plural) and operations it judges, and whether it mutates."""

    path: str
    plural: str
    operations: tuple[str, ...]
    mutating: bool = False

    @property
    def name(self) -> str:
        """The webhook's name in the configurations, e.g. ``jobruns.validate.jobnet.dev``."""
        return f"{self.plural}.{'mutate' if self.mutating else 'validate'}.{API_GROUP}"


#: The kinds (plural -> kind) of the two webhook configurations.
CONFIGURATION_KINDS = {
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
}

#: Every webhook the operator serves (the Helm chart's configurations use the same paths).
ENDPOINTS = (
    Endpoint("/validate-jobnet", "jobnets", ("CREATE", "UPDATE", "DELETE")),
    Endpoint("/validate-jobrun", "jobruns", ("CREATE", "UPDATE")),
    Endpoint("/validate-jobschedule", "jobschedules", ("CREATE", "UPDATE")),
    Endpoint("/validate-jobcalendar", "jobcalendars", ("CREATE", "UPDATE", "DELETE")),
    Endpoint("/mutate-jobrun", "jobruns", ("CREATE", "UPDATE"), mutating=True),
)


class ReviewError(ValueError):
    """The webhook call itself is malformed (answered with HTTP 400, not with a denial)."""


@dataclass(frozen=True)
class Review:
    """What one AdmissionReview asks: ``new`` is absent for a DELETE, ``old`` for a CREATE."""

    uid: str
    plural: str
    operation: str
    name: str
    namespace: str
    new: Mapping[str, Any] | None
    old: Mapping[str, Any] | None
    username: str | None


def parse_review(payload: Any) -> Review:
    """The review in an AdmissionReview request; :class:`ReviewError` when it is not one."""
    request = payload.get("request") if isinstance(payload, dict) else None
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request")
    new, old = request.get("object"), request.get("oldObject")
    body = new if new is not None else old
    if not isinstance(body, dict):
        raise ReviewError("the AdmissionReview has neither an object nor an old object")
    userinfo = request.get("userInfo")
    if not isinstance(userinfo, dict):
        raise ReviewError("the AdmissionReview has no userInfo")
    meta = body.get("metadata") or {}
    return Review(
        uid=str(request.get("uid", "")),
        plural=str((request.get("resource") or {}).get("resource", "")),
        operation=str(request.get("operation", "")),
        name=str(meta.get("name") or request.get("name") or ""),
        namespace=str(meta.get("namespace") or request.get("namespace") or "default"),
        new=new,
        old=old,
        username=userinfo.get("username"),
    )


def review_response(
    payload: Mapping[str, Any],
    *,
    denial: str | None = None,
    code: int = 0,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The AdmissionReview answering ``payload``: allowed unless ``denial`` (its message, with
    HTTP ``code``); ``patch`` (JSON patch operations) changes the admitted object."""
    request = payload.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": denial is None}
    if denial is not None:
        response["status"] = {"message": denial, "code": code}
    if patch:
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode("ascii")
        response["patchType"] = "JSONPatch"
    return {
        "apiVersion": payload.get("apiVersion", ADMISSION_REVIEW_API_VERSION),
        "kind": payload.get("kind", "AdmissionReview"),
        "response": response,
    }


def annotation_patch(body: Mapping[str, Any] | None, changes: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """JSON patch operations that make ``body``'s annotations take ``changes`` (key -> value,
    None = remove); a change that is already true is left out."""
    annotations = ((body or {}).get("metadata") or {}).get("annotations")
    if annotations is None:
        added = {key: value for key, value in changes.items() if value is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": added}] if added else []
    operations: list[dict[str, Any]] = []
    for key, value in changes.items():
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        if value is None:
            if key in annotations:
                operations.append({"op": "remove", "path": path})
        elif key not in annotations:
            operations.append({"op": "add", "path": path, "value": value})
        elif annotations[key] != value:
            operations.append({"op": "replace", "path": path, "value": value})
    return operations


def webhook_configurations(
    client_config: Mapping[str, Any], failure_policy: str = "Fail"
) -> dict[str, list[dict[str, Any]]]:
    """The ``webhooks`` of the Validating- and MutatingWebhookConfiguration (by plural) that send
    every endpoint's reviews to ``client_config`` (a URL or a Service, plus its ``caBundle``)."""
    configurations: dict[str, list[dict[str, Any]]] = {plural: [] for plural in CONFIGURATION_KINDS}
    for endpoint in ENDPOINTS:
        config = dict(client_config)
        if "url" in config:
            config["url"] = str(config["url"]).rstrip("/") + endpoint.path
        if "service" in config:
            config["service"] = {**config["service"], "path": endpoint.path}
        webhook: dict[str, Any] = {
            "name": endpoint.name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "rules": [
                {
                    "apiGroups": [API_GROUP],
                    "apiVersions": [API_VERSION],
                    "resources": [endpoint.plural],
                    "operations": list(endpoint.operations),
                    "scope": "Namespaced",
                }
            ],
            "clientConfig": config,
        }
        kind = "mutatingwebhookconfigurations" if endpoint.mutating else "validatingwebhookconfigurations"
        configurations[kind].append(webhook)
    return configurations
