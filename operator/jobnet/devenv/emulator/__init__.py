"""A Kubernetes API server emulator (tests and ``jobnet dev``): kmock's ``KubernetesEmulator`` with its gaps closed.

kmock 0.8 gives us the bundled discovery data of a real cluster and the rendering of the
discovery documents. What it lacks for running a real kopf operator and real ``kubectl``
honestly is added here (each gap has a test in ``tests/emulator/``):

* objects get ``uid``, ``creationTimestamp``, ``generation`` (bumped on spec changes only) and a
  ``resourceVersion`` that increases on every write; ``generateName`` works;
* merge patches (RFC 7386), JSON patches (RFC 6902, ``test`` ops honoured: a failed test is
  HTTP 422 as kopf expects) and optimistic concurrency (409 on a stale ``resourceVersion``);
* a real ``/status`` subresource: writes to the main resource ignore ``.status``, writes to
  ``/status`` change only ``.status``;
* lists carry ``kind``/``apiVersion``/``metadata.resourceVersion``; watches honour
  ``?resourceVersion=`` (replay from a bounded event log, ``410 Gone`` when too old), subscribe
  atomically with their snapshot (no lost events), honour ``timeoutSeconds`` and are sent as
  ``application/json`` so that ``kubectl get -w`` accepts them;
* every request is served in O(objects of that resource), never O(request history): the
  request-recording DSL of kmock is bypassed entirely;
* CustomResourceDefinitions are real: creating one registers its resource for discovery
  (short names, categories, status subresource), objects are validated against its schema
  (types, required, enums, lengths, bounds) before admission, unknown fields are rejected
  (``fieldValidation=Strict``, as kubectl sends) or pruned like a structural schema does,
  and ``kubectl get`` receives server-side Tables with the CRD's printer columns;
* admission webhooks are real: the stored ``MutatingWebhookConfiguration`` and
  ``ValidatingWebhookConfiguration`` objects are honoured (rules, ``failurePolicy``,
  ``timeoutSeconds``) by POSTing ``admission.k8s.io/v1`` AdmissionReviews, in a real API
  server's order: the mutating webhooks (each one's JSONPatch applied before the next is
  called), the schema again on a mutated object, then the validating webhooks; denials read
  like a real API server's;
* authentication and RBAC authorization (``authorization.py``): a request is made by the
  emulator's admin (its kubeconfig's token, or no credentials at all, as on the loopback-only
  insecure port old API servers had), by the holder of a token issued for a ServiceAccount
  (``kubectl create token``) or a user (:meth:`ApiEmulator.issue_token`), or by whom it
  impersonates (``kubectl --as=alice --as-group=ops``), which needs the ``impersonate`` verb;
  every request is then authorized against the stored Roles, ClusterRoles (aggregated ones
  filled in as the aggregation controller does) and bindings, ``system:masters`` allowed
  everything; a denial is a real API server's 403; ``kubectl auth can-i`` / ``whoami`` work
  (SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview, SelfSubjectReview);
  what non-admins were allowed to do is recorded (:attr:`ApiEmulator.access_log`);
* deletion as the API server and its garbage collector do it (``deletion.py``): finalizers hold
  a deleted object marked (``deletionTimestamp``; no new finalizers) until the last one goes;
  dependents named by ``ownerReferences`` follow their owner by ``propagationPolicy``
  (Background by default, Foreground waiting for blocking dependents, Orphan);
* the size limits of a real cluster (3 MiB requests, 1.5 MiB objects, 256 KiB annotations),
  server-side dry runs, and enough OpenAPI v3 for kubectl's field validation and ``explain``;
* the API can be made unreachable for a while (:meth:`EmulatorServer.outage`: connections
  refused, open watches ended) or hung (:meth:`EmulatorServer.stall`: requests never answered).

The emulator runs in a background thread with its own event loop so that synchronous tests,
``kubectl`` and operator subprocesses can all talk to it over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime
import itertools
import json
import os
import pathlib
import random
import re
import secrets
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import yaml
from kmock import KubernetesEmulator, ResourceInfo, resource
from kmock._internal import rendering
from multidict import MultiMapping

from jobnet.devenv.emulator import deletion, protobuf
from jobnet.devenv.emulator.authorization import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    PRIVILEGED_GROUP,
    RBAC_GROUP,
    UNAUTHENTICATED_GROUP,
    RbacPolicy,
    Request,
    UserInfo,
    aggregated_rules,
    authorize,
    forbidden_message,
    impersonated_user,
    service_account_of,
    service_account_user,
)
from jobnet.devenv.emulator.bootstrap import BOOTSTRAP_OBJECTS
from jobnet.devenv.emulator.tls import loopback_certificate

REPO_ROOT = pathlib.Path(__file__).resolve().parents[4]  # a source checkout
#: Our CRDs and kopf's peering CRDs (shipped with the chart), as a cluster would have them.
CRD_DIRS = (REPO_ROOT / "crds", REPO_ROOT / "charts" / "jobnet-operator" / "crds")
#: What a real API server accepts as metadata.name of most objects (a DNS-1123 subdomain).
OBJECT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

ResourceKey = tuple[str, str, str]  # group, version, plural
ObjectKey = tuple[ResourceKey, str | None, str]  # resource, namespace (None if cluster-scoped), name
Body = dict[str, Any]

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the same as Kubernetes' (no vowels)
DEFAULT_WATCH_TIMEOUT = 1800.0
REQUEST_SIZE_LIMIT = 3 * 1024 * 1024  # the API server's limit on a request body
OBJECT_SIZE_LIMIT = 1_572_864  # etcd's default request limit (1.5 MiB)
ANNOTATIONS_LIMIT = 262_144  # total size of an object's annotations (256 KiB)
WEBHOOK_TIMEOUT_DEFAULT = 10.0
SERVICE_ACCOUNT_TOKEN_SECONDS = 3600  # a TokenRequest's default lifetime
SERVICE_ACCOUNT_TOKEN_MIN_SECONDS = 600  # the shortest one a real API server issues

CLUSTER_ROLES: ResourceKey = (RBAC_GROUP, "v1", "clusterroles")
RBAC_RESOURCES: frozenset[ResourceKey] = frozenset(
    (RBAC_GROUP, "v1", plural) for plural in ("roles", "clusterroles", "rolebindings", "clusterrolebindings")
)
BINDINGS: frozenset[ResourceKey] = frozenset(
    (RBAC_GROUP, "v1", plural) for plural in ("rolebindings", "clusterrolebindings")
)
SERVICE_ACCOUNTS: ResourceKey = ("", "v1", "serviceaccounts")
#: Create-only resources that are answered, never stored.
REVIEWS: frozenset[ResourceKey] = frozenset(
    {
        ("authentication.k8s.io", "v1", "selfsubjectreviews"),
        ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "v1", "selfsubjectrulesreviews"),
        ("authorization.k8s.io", "v1", "subjectaccessreviews"),
        ("authorization.k8s.io", "v1", "localsubjectaccessreviews"),
    }
)
HTTP_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

# Server-side Table columns of built-in resources that tests look at with kubectl.
BUILTIN_COLUMNS: dict[ResourceKey, list[dict[str, Any]]] = {
    ("", "v1", "events"): [
        {"name": "Last Seen", "type": "date", "jsonPath": ".lastTimestamp"},
        {"name": "Type", "type": "string", "jsonPath": ".type"},
        {"name": "Reason", "type": "string", "jsonPath": ".reason"},
        {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
        {"name": "Message", "type": "string", "jsonPath": ".message"},
    ],
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


class ApiError(Exception):
    """A Kubernetes ``Status`` failure reply."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Body:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
            "details": self.details,
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rkey(res: resource) -> ResourceKey:
    return (res.group or "", res.version or "", res.plural or "")


def _human_duration(seconds: float) -> str:
    """Like Kubernetes' ``duration.HumanDuration`` (what the Age column shows)."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def _json_path(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPaths of printer columns and field selectors: ``.a.b[0].c``."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.lstrip(".")):
        if part.startswith("["):
            index = int(part[1:-1])
            obj = obj[index] if isinstance(obj, list) and index < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


# --- selectors ---------------------------------------------------------------------------


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in _split_selector(selector):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (labels.get(key) in values) != (op == "in"):
                return False
        elif m := re.fullmatch(r"(\S+?)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = m.groups()
            if (labels.get(key) == value) != (op != "!="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: Body) -> bool:
    for term in _split_selector(selector):
        m = re.fullmatch(r"(\S+?)\s*(==|=|!=)\s*(\S*)", term)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        actual = _json_path(obj, path)
        if (str(actual if actual is not None else "") == value) != (op != "!="):
            return False
    return True


# --- patches -----------------------------------------------------------------------------


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than ``copy.deepcopy``)."""
    return json.loads(json.dumps(obj))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk_to_parent(doc: Any, tokens: list[str], path: str) -> Any:
    for token in tokens[:-1]:
        if isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        elif isinstance(doc, dict) and token in doc:
            doc = doc[token]
        else:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: path {path!r} does not exist",
            )
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch, including ``test`` (a failed test is HTTP 422, as kopf expects)."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = clone(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        tokens = _pointer(path)
        if kind == "test":
            actual = _json_path_pointer(doc, tokens)
            if actual != op.get("value"):
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: testing value {path} failed",
                )
            continue
        if kind in ("move", "copy"):
            source = _json_path_pointer(doc, _pointer(op["from"]))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": path, "value": source}])
            continue
        if not tokens:
            if kind in ("add", "replace"):
                doc = clone(op["value"])
                continue
            raise ApiError(422, "Invalid", f"cannot {kind} the whole document")
        parent = _walk_to_parent(doc, tokens, path)
        last = tokens[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
            if index < 0 or index > len(parent) or (kind != "add" and index >= len(parent)):
                raise ApiError(422, "Invalid", f"the server rejected our request: index {path!r} out of range")
            if kind == "add":
                parent.insert(index, clone(op["value"]))
            elif kind == "remove":
                del parent[index]
            elif kind == "replace":
                parent[index] = clone(op["value"])
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch operation {kind!r}")
        elif isinstance(parent, dict):
            if kind in ("remove", "replace") and last not in parent:
                raise ApiError(422, "Invalid", f"the server rejected our request: path {path!r} does not exist")
            if kind in ("add", "replace"):
                parent[last] = clone(op["value"])
            elif kind == "remove":
                del parent[last]
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch operation {kind!r}")
        else:
            raise ApiError(422, "Invalid", f"the server rejected our request: path {path!r} does not exist")
    return doc


def _json_path_pointer(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        elif isinstance(doc, dict):
            doc = doc.get(token)
        else:
            return None
    return doc


# --- structural schemas --------------------------------------------------------------------

# The schema functions below take ``before``: the same place in the stored object a write
# starts from. A patched object shares every unchanged subtree with it (merge patches copy only
# what they change), and what is identical was checked when it was stored: it is skipped, so a
# small status patch of a big JobRun costs O(change), not O(object).


def _child(before: Any, key: str) -> Any:
    return before.get(key) if isinstance(before, dict) else None


def _item(before: Any, index: int) -> Any:
    return before[index] if isinstance(before, list) and index < len(before) else None


def unknown_fields(obj: Any, schema: Mapping[str, Any] | None, path: str = "", before: Any = None) -> list[str]:
    """The paths of fields a structural schema does not declare (what the API server prunes)."""
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields") or (before is not None and obj is before):
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        properties = schema.get("properties")
        if not path and properties is not None:  # a CRD's schema never declares these itself
            properties = {**properties, "apiVersion": {}, "kind": {}, "metadata": {}}
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{path}.{key}", _child(before, key))
            elif isinstance(additional, dict):
                found += unknown_fields(value, additional, f"{path}.{key}", _child(before, key))
            elif properties is not None or additional is False:
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]", _item(before, index))
    return found


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def schema_errors(obj: Any, schema: Mapping[str, Any] | None, path: str = "", before: Any = None) -> list[str]:
    """What a real API server's OpenAPI validation of a custom resource says about ``obj``
    (types, required, enum, lengths, bounds, item counts, patterns), in its wording."""
    if not schema or obj is None and schema.get("nullable") or (before is not None and obj is before):
        return []
    where = path.lstrip(".") or "<root>"
    expected = schema.get("type")
    python_type = _JSON_TYPES.get(expected or "")
    if python_type is not None and (
        not isinstance(obj, python_type) or isinstance(obj, bool) and expected != "boolean"
    ):
        return [
            f"{where}: Invalid value: {json.dumps(type(obj).__name__)}: "
            f"{where} in body must be of type {expected}: {json.dumps(obj)[:80]}"
        ]
    errors = []
    if "enum" in schema and obj not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(f"{where}: Unsupported value: {json.dumps(obj)}: supported values: {supported}")
    if isinstance(obj, str):
        if len(obj) < schema.get("minLength", 0):
            errors.append(
                f"{where}: Invalid value: {json.dumps(obj)}: "
                f"{where} in body should be at least {schema['minLength']} chars long"
            )
        if "maxLength" in schema and len(obj) > schema["maxLength"]:
            errors.append(f"{where}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not re.search(schema["pattern"], obj):
            errors.append(
                f"{where}: Invalid value: {json.dumps(obj)}: {where} in body should match '{schema['pattern']}'"
            )
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema and obj < schema["minimum"]:
            errors.append(
                f"{where}: Invalid value: {obj}: {where} in body should be greater than or equal to {schema['minimum']}"
            )
        if "maximum" in schema and obj > schema["maximum"]:
            errors.append(
                f"{where}: Invalid value: {obj}: {where} in body should be less than or equal to {schema['maximum']}"
            )
    if isinstance(obj, list):
        if len(obj) < schema.get("minItems", 0):
            errors.append(
                f"{where}: Invalid value: {len(obj)}: {where} in body should have at least {schema['minItems']} items"
            )
        if "maxItems" in schema and len(obj) > schema["maxItems"]:
            errors.append(f"{where}: Too many: {len(obj)}: must have at most {schema['maxItems']} items")
        for index, item in enumerate(obj):
            errors += schema_errors(item, schema.get("items"), f"{path}[{index}]", _item(before, index))
    if isinstance(obj, dict):
        for key in schema.get("required", []):
            if key not in obj:
                errors.append(f"{path.lstrip('.') + '.' if path else ''}{key}: Required value")
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in properties:
                errors += schema_errors(value, properties[key], f"{path}.{key}", _child(before, key))
            elif isinstance(additional, dict):
                errors += schema_errors(value, additional, f"{path}.{key}", _child(before, key))
    return errors


def prune(obj: Any, schema: Mapping[str, Any] | None, root: bool = True, before: Any = None) -> Any:
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields") or (before is not None and obj is before):
        return obj
    if isinstance(obj, dict):
        properties = schema.get("properties")
        if root and properties is not None:
            properties = {**properties, "apiVersion": {}, "kind": {}, "metadata": {}}
        additional = schema.get("additionalProperties")
        result = {}
        for key, value in obj.items():
            if properties is not None and key in properties:
                result[key] = prune(value, properties[key], False, _child(before, key))
            elif isinstance(additional, dict):
                result[key] = prune(value, additional, False, _child(before, key))
            elif properties is None and additional is not False:
                result[key] = value
        return result
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], False, _item(before, index)) for index, item in enumerate(obj)]
    return obj


@dataclass(frozen=True)
class ApiPath:
    group: str
    version: str | None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """Split ``/api/v1/namespaces/NS/PLURAL/NAME/SUB`` (kmock's parser fails on ``/api/v1/namespaces``)."""
    parts = [p for p in path.strip("/").split("/") if p]
    version: str | None
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    rest += [None] * (3 - len(rest))  # type: ignore[list-item]
    return ApiPath(group, version, rest[0], namespace, rest[1], rest[2])


def request_attributes(method: str, path: str, target: ApiPath | None, query: Mapping[str, str]) -> Request:
    """What a request asks for, as the API server's RequestInfoFactory resolves it."""
    if target is None or target.plural is None:  # discovery, /version, /openapi...: non-resource URLs
        return Request(method.lower(), path=path, resource_request=False)
    verb = HTTP_VERBS.get(method, method.lower())
    name = target.name or ""
    if method == "GET" and query.get("watch") in ("true", "1"):
        verb = "watch"
    elif method == "GET" and not name:
        verb = "list"
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    if verb in ("list", "watch") and not name:  # a list of one object may be allowed by resourceNames
        selected = re.fullmatch(r"metadata\.name==?([^,]+)", query.get("fieldSelector", ""))
        name = selected.group(1) if selected else ""
    namespace = target.namespace or (name if target.group == "" and target.plural == "namespaces" else "")
    return Request(verb, target.group, target.plural, target.subresource or "", namespace, name)


# --- the emulator ----------------------------------------------------------------------------


@dataclass(eq=False)
class Watcher:
    resource: ResourceKey
    namespace: str | None
    name: str | None
    label_selector: str
    field_selector: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    def wants(self, obj: Body) -> bool:
        meta = obj.get("metadata", {})
        return (
            (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and (not self.label_selector or label_selector_matches(self.label_selector, meta.get("labels") or {}))
            and (not self.field_selector or field_selector_matches(self.field_selector, obj))
        )


@dataclass
class CrdExtras:
    """What a CRD adds beyond discovery: its schema and printer columns."""

    schema: Mapping[str, Any] | None
    columns: list[dict[str, Any]]


@attrs.define(kw_only=True)
class ApiEmulator(KubernetesEmulator):
    """The request handler: an in-memory Kubernetes API server (see the module docstring)."""

    history_limit: int = 10_000  # watch events kept per resource for ?resourceVersion= replays
    history_bytes: int = 64 * 1024 * 1024  # and at most this many bytes of them
    webhook_timeout_cap: float = 10.0  # tests keep admission timeouts short
    user: str = "kubernetes-admin"
    admin_token: str = "emulator-test-token"  # the bearer token of the admin's kubeconfig

    #: What identities other than ``system:masters`` were allowed to do (username, request):
    #: what a role must grant, to compare with what it does grant.
    access_log: set[tuple[str, Request]] = attrs.field(factory=set, init=False)
    #: What identities were refused (username, request): a missing grant.
    denial_log: set[tuple[str, Request]] = attrs.field(factory=set, init=False)

    _store: dict[ObjectKey, Body] = attrs.field(factory=dict, init=False)
    _by_resource: dict[ResourceKey, set[ObjectKey]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False
    )
    _revision: int = attrs.field(default=1, init=False)
    # Watch events as sent (one JSON line each), kept for ?resourceVersion= replays. Serialised
    # once: big objects (a JobRun status near the etcd limit) are neither copied per watcher nor
    # kept alive as dicts, and the log's memory is bounded in bytes as well as in count.
    _log: dict[ResourceKey, collections.deque[tuple[int, bytes]]] = attrs.field(factory=dict, init=False)
    _log_bytes: dict[ResourceKey, int] = attrs.field(factory=lambda: collections.defaultdict(int), init=False)
    _log_floor: dict[ResourceKey, int] = attrs.field(factory=dict, init=False)
    _watchers: dict[ResourceKey, set[Watcher]] = attrs.field(factory=lambda: collections.defaultdict(set), init=False)
    _crds: dict[ResourceKey, CrdExtras] = attrs.field(factory=dict, init=False)
    _write_lock: asyncio.Lock | None = attrs.field(default=None, init=False)
    _open: asyncio.Event | None = attrs.field(default=None, init=False)  # cleared while stalled
    _http: aiohttp.ClientSession | None = attrs.field(default=None, init=False)
    _unavailable: dict[str, int] = attrs.field(factory=dict, init=False)  # path: 503 answers left
    # bearer token -> (identity, expiry or None)
    _tokens: dict[str, tuple[UserInfo, datetime.datetime | None]] = attrs.field(factory=dict, init=False)
    _policy: RbacPolicy | None = attrs.field(default=None, init=False)  # rebuilt after RBAC writes
    # the garbage collector's graph: uid -> object, owner uid -> dependents
    _uids: dict[str, ObjectKey] = attrs.field(factory=dict, init=False)
    _dependents: dict[str, set[ObjectKey]] = attrs.field(factory=lambda: collections.defaultdict(set), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        for obj in BOOTSTRAP_OBJECTS:
            self.put_object(obj)

    # -- the HTTP entry point (replaces kmock's DSL, which scans the whole request history) --

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self._open is not None:
            await self._open.wait()
        try:
            try:
                body = await raw.read()
            except aiohttp.web.HTTPRequestEntityTooLarge:
                raise ApiError(
                    413, "RequestEntityTooLarge", f"Request entity too large: limit is {REQUEST_SIZE_LIMIT}"
                ) from None
            return await self._dispatch(raw, body)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # an emulator bug: say so clearly instead of hanging the client
            return aiohttp.web.json_response(
                ApiError(500, "InternalError", f"emulator error: {e!r}").status(), status=500
            )

    async def _dispatch(self, raw: aiohttp.web.BaseRequest, body: bytes) -> aiohttp.web.StreamResponse:
        path = raw.path
        if self._unavailable.get(path, 0) > 0:
            self._unavailable[path] -= 1
            raise ApiError(503, "ServiceUnavailable", f"the server is currently unable to handle the request ({path})")
        user = self._impersonate(self.authenticate(raw.headers, secure=raw.secure), raw.headers)
        target = parse_api_path(path)
        query = dict(raw.query)
        self._authorize(user, request_attributes(raw.method.upper(), path, target, query))
        if path in ("/", "/version", "/api", "/apis"):
            return await self._serve_plain(path)
        if path.startswith("/openapi/v3"):
            return aiohttp.web.json_response(self._openapi_v3(path.removeprefix("/openapi/v3").strip("/")))
        if target is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if target.plural is None:
            return aiohttp.web.json_response(await self._discover(target.group, target.version))
        res = resource(target.group, target.version, target.plural)
        if res not in self.resources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        info = self.resources[res]
        rkey = _rkey(res)
        namespace = target.namespace if info.namespaced else None
        if not info.namespaced and target.namespace is not None:
            raise ApiError(404, "NotFound", f"{target.plural} is cluster-scoped: {path}")
        name, subresource = target.name, target.subresource
        token_request = rkey == SERVICE_ACCOUNTS and subresource == "token" and raw.method.upper() == "POST"
        if (
            subresource is not None
            and not token_request
            and (subresource != "status" or "status" not in info.subresources)
        ):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        data: Any = None
        if "protobuf" in raw.content_type and body:  # kubectl create / auth, for built-in kinds
            try:
                data = protobuf.decode_object(body)
            except protobuf.ProtobufError as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from None
        elif "cbor" in raw.content_type:
            raise ApiError(415, "UnsupportedMediaType", f"the emulator speaks JSON only, not {raw.content_type}")
        elif body:
            try:
                data = yaml.safe_load(body) if "yaml" in raw.content_type else json.loads(body)
            except ValueError as e:
                raise ApiError(
                    400, "BadRequest", f"the request body is not valid JSON ({raw.content_type}): {e}"
                ) from None
        method = raw.method.upper()
        requester = user.review()
        if token_request:
            assert namespace is not None and name is not None  # serviceaccounts are namespaced
            return aiohttp.web.json_response(self._token_request(namespace, name, data or {}), status=201)
        if rkey in REVIEWS:
            if method != "POST" or name is not None:
                raise ApiError(405, "MethodNotAllowed", f"{rkey[2]} can only be created")
            return aiohttp.web.json_response(self._review(rkey, namespace, data or {}, user), status=201)
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._serve_watch_stream(raw, rkey, namespace, name, query)
        if method == "GET" and name is None:
            return self._reply(raw, rkey, self.list_body(rkey, namespace, query), listing=True)
        if method == "GET":
            return self._reply(raw, rkey, self._get_or_404(rkey, namespace, name))
        async with self._lock_writes():
            if method == "POST" and name is None:
                return aiohttp.web.json_response(
                    await self._create(rkey, namespace, data, query, requester), status=201
                )
            if method in ("PUT", "PATCH") and name is not None:
                return aiohttp.web.json_response(
                    await self._update(
                        rkey,
                        namespace,
                        name,
                        data,
                        query,
                        subresource,
                        raw.content_type,
                        requester,
                        replace=method == "PUT",
                    )
                )
            if method == "DELETE" and name is not None:
                return aiohttp.web.json_response(
                    await self._delete(rkey, namespace, name, data or {}, query, requester)
                )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported by the emulator for {path}")

    # -- authentication and authorization --

    @property
    def admin(self) -> UserInfo:
        return UserInfo(self.user, (PRIVILEGED_GROUP, AUTHENTICATED_GROUP))

    def issue_token(self, user: UserInfo, lifetime: datetime.timedelta | None = None) -> str:
        """A bearer token that authenticates as ``user`` (for a test's or a person's kubeconfig)."""
        token = secrets.token_urlsafe(32)
        expiry = datetime.datetime.now(datetime.UTC) + lifetime if lifetime is not None else None
        self._tokens[token] = (user, expiry)
        return token

    def authenticate(self, headers: MultiMapping[str], *, secure: bool) -> UserInfo:
        """Who makes a request: the holder of its bearer token; without credentials, the admin on
        the plain-HTTP port (like the old loopback-only insecure port) and ``system:anonymous``
        on the secure one."""
        credentials = headers.get("Authorization", "")
        if not credentials:
            return self.admin if not secure else UserInfo(ANONYMOUS_USER, (UNAUTHENTICATED_GROUP,))
        scheme, _, token = credentials.partition(" ")
        if scheme.lower() == "bearer":
            if token == self.admin_token:
                return self.admin
            user, expiry = self._tokens.get(token, (None, None))
            if user is not None and (expiry is None or expiry > datetime.datetime.now(datetime.UTC)):
                if self._token_holder_exists(user):
                    return user
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _token_holder_exists(self, user: UserInfo) -> bool:
        """A ServiceAccount's token is valid only while that very ServiceAccount exists."""
        account = service_account_of(user.username)
        if account is None:
            return True
        stored = self._store.get((SERVICE_ACCOUNTS, account[0], account[1]))
        return stored is not None and stored["metadata"]["uid"] == user.uid

    def _impersonate(self, actor: UserInfo, headers: MultiMapping[str]) -> UserInfo:
        """Whom the request acts as (``kubectl --as/--as-group``): allowed by the ``impersonate`` verb."""
        username = headers.get("Impersonate-User", "")
        groups = headers.getall("Impersonate-Group", [])
        uid = headers.get("Impersonate-Uid", "")
        if not username:
            if groups or uid:
                raise ApiError(
                    500,
                    "InternalError",
                    "Internal error occurred: requested impersonation without impersonating a user",
                )
            return actor
        account = service_account_of(username)
        checks = [
            Request("impersonate", "", "serviceaccounts", namespace=account[0], name=account[1])
            if account is not None
            else Request("impersonate", "", "users", name=username),
            *(Request("impersonate", "", "groups", name=group) for group in groups),
            *([Request("impersonate", "authentication.k8s.io", "uids", name=uid)] if uid else []),
        ]
        for check in checks:
            self._authorize(actor, check)
        return impersonated_user(username, groups, uid)

    def _rbac(self) -> RbacPolicy:
        if self._policy is None:
            self._policy = RbacPolicy.of(obj for rkey in RBAC_RESOURCES for obj in self._objects_of(rkey, None))
        return self._policy

    def _authorize(self, user: UserInfo, request: Request) -> None:
        decision = authorize(user, request, self._rbac())
        if not decision.allowed:
            self.denial_log.add((user.username, request))
            details = {"name": request.name, "group": request.api_group, "kind": request.resource}
            raise ApiError(
                403,
                "Forbidden",
                forbidden_message(user, request, decision.reason),
                {key: value for key, value in details.items() if value} if request.resource_request else {},
            )
        if PRIVILEGED_GROUP not in user.groups:
            self.access_log.add((user.username, request))

    def _rbac_changed(self, rkey: ResourceKey) -> None:
        self._policy = None
        if rkey == CLUSTER_ROLES:  # what the aggregation controller does
            roles = self._objects_of(CLUSTER_ROLES, None)
            for role in roles:
                rules = aggregated_rules(role, roles)
                if rules is not None and rules != (role.get("rules") or []):
                    updated = clone(role)
                    updated["rules"] = rules
                    self._commit(CLUSTER_ROLES, None, role["metadata"]["name"], updated, "MODIFIED")
                    return  # that commit aggregated again, with this role's new rules

    def _token_request(self, namespace: str, name: str, data: Body) -> Body:
        """``kubectl create token NAME``: a token of the ServiceAccount, valid while it exists."""
        account = self._get_or_404(SERVICE_ACCOUNTS, namespace, name)
        spec = data.get("spec") or {}
        seconds = max(
            int(spec.get("expirationSeconds") or SERVICE_ACCOUNT_TOKEN_SECONDS), SERVICE_ACCOUNT_TOKEN_MIN_SECONDS
        )
        lifetime = datetime.timedelta(seconds=seconds)
        token = self.issue_token(service_account_user(namespace, name, account["metadata"]["uid"]), lifetime)
        expiry = datetime.datetime.now(datetime.UTC) + lifetime
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {
                **spec,
                "audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                "expirationSeconds": seconds,
            },
            "status": {"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }

    def _review(self, rkey: ResourceKey, namespace: str | None, data: Body, user: UserInfo) -> Body:
        """Answer a SelfSubjectReview, a (Self/Local)SubjectAccessReview or a SelfSubjectRulesReview."""
        info = self.resources[resource(*rkey)]
        group, version, plural = rkey
        reply = {**data, "apiVersion": f"{group}/{version}", "kind": info.kind}
        reply["metadata"] = {**(data.get("metadata") or {}), "creationTimestamp": None}
        spec = data.get("spec") or {}
        if plural == "selfsubjectreviews":
            return {**reply, "status": {"userInfo": user.review()}}
        if plural == "selfsubjectrulesreviews":
            return {**reply, "status": self._rules_review(user, spec.get("namespace") or "")}
        subject = user
        if plural != "selfsubjectaccessreviews":
            if not spec.get("user") and not spec.get("groups"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind}.{group} "" is invalid: spec.user: Invalid value: "": '
                    "at least one of user or group must be specified",
                )
            subject = UserInfo(spec.get("user") or "", tuple(spec.get("groups") or ()), spec.get("uid") or "")
        resource_attributes: Body | None = spec.get("resourceAttributes")
        non_resource: Body = spec.get("nonResourceAttributes") or {}
        if (resource_attributes is None) == (not non_resource):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind}.{group} "" is invalid: spec.resourceAttributes: Invalid value: "null": '
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        if resource_attributes is not None:
            request = Request(
                resource_attributes.get("verb") or "",
                resource_attributes.get("group") or "",
                resource_attributes.get("resource") or "",
                resource_attributes.get("subresource") or "",
                namespace or ""
                if plural == "localsubjectaccessreviews"
                else resource_attributes.get("namespace") or "",
                resource_attributes.get("name") or "",
            )
        else:
            request = Request(
                non_resource.get("verb") or "", path=non_resource.get("path") or "", resource_request=False
            )
        decision = authorize(subject, request, self._rbac())
        return {
            **reply,
            "status": {"allowed": decision.allowed, **({"reason": decision.reason} if decision.reason else {})},
        }

    def _rules_review(self, user: UserInfo, namespace: str) -> Body:
        """What ``kubectl auth can-i --list`` shows: every rule that applies in the namespace."""
        if PRIVILEGED_GROUP in user.groups:
            rules = [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]
            errors: list[str] = []
        else:
            grants, errors = self._rbac().grants(user, namespace)
            rules = [grant.rule for grant in grants]
        return {
            "resourceRules": [rule for rule in rules if "nonResourceURLs" not in rule],
            "nonResourceRules": [rule for rule in rules if "nonResourceURLs" in rule],
            "incomplete": bool(errors),
            **({"evaluationError": ", ".join(errors)} if errors else {}),
        }

    @contextlib.asynccontextmanager
    async def _lock_writes(self) -> Any:
        # Writes are serialised across admission calls, like etcd's guaranteed updates would be.
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            yield

    # -- discovery --

    def _get_resources(self) -> list[resource]:
        return [res for res in self.resources if isinstance(res, resource)]

    async def _serve_plain(self, path: str) -> aiohttp.web.StreamResponse:
        request = rendering.Request(url=path)
        if path == "/version":
            return aiohttp.web.json_response(await self._serve_server_version(request))
        if path == "/api":
            return aiohttp.web.json_response(await self._serve_api(request))
        if path == "/apis":
            return aiohttp.web.json_response(await self._serve_apis(request))
        return aiohttp.web.json_response(await self._serve_root(request))

    def _openapi_v3(self, group_version: str) -> Body:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself.

        kubectl then sends ``fieldValidation=Strict`` instead of downloading full schemas."""
        if not group_version:
            gvs = {f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}" for r in self.resources}
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}"} for gv in sorted(gvs)}}
        parts = group_version.split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2] if len(parts) > 2 else "")
        paths = {}
        for res in self.resources:
            if res.group != group or res.version != version:
                continue
            info = self.resources[res]
            scope = "/namespaces/{namespace}" if info.namespaced else ""
            paths[f"/{group_version}{scope}/{res.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": info.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {group_version}")
        schemas = {  # the CRDs' own schemas, for `kubectl explain`
            f"{'.'.join(reversed(group.split('.')))}.{version}.{self.resources[res].kind}": {
                **extras.schema,
                "x-kubernetes-group-version-kind": [
                    {"group": group, "version": version, "kind": self.resources[res].kind}
                ],
            }
            for res in self.resources
            if res.group == group and res.version == version
            for extras in [self._crds.get(_rkey(res))]
            if extras is not None and extras.schema is not None
        }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (emulated)", "version": "unversioned"},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    async def _discover(self, group: str, version: str | None) -> Body:
        request = rendering.Request(resource=resource(group=group, version=version))
        if version is None:
            if not any(res.group == group for res in self.resources):
                raise ApiError(404, "NotFound", f"the server could not find the requested resource (/apis/{group})")
            return dict(await self._serve_group(request))  # type: ignore[arg-type]  # kmock types it as any payload
        doc: Body = dict(await self._serve_version(request))  # type: ignore[arg-type]
        if not doc["resources"] and group:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource (/apis/{group}/{version})"
            )
        doc["groupVersion"] = f"{group}/{version}" if group else version  # kmock says "/v1"
        for entry in doc["resources"]:
            if "/" in entry["name"]:  # kmock gives subresources the short names of their parent
                entry.update(verbs=["get", "patch", "update"], shortNames=[], categories=[])
            else:
                entry["verbs"] = sorted(entry["verbs"])
        return doc

    # -- direct access for tests (bypasses admission, like writing to etcd) --

    def put_object(self, obj: Body) -> Body:
        """Create or replace an object without admission (test setup)."""
        rkey, namespace, name = self._key_of(obj)
        obj = clone(obj)
        old = self._store.get((rkey, namespace, name))
        meta = obj.setdefault("metadata", {})
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta.setdefault("generation", 1)
        else:
            for keep in ("uid", "creationTimestamp", "generation"):
                meta[keep] = old["metadata"][keep]
        return self._commit(rkey, namespace, name, obj, "ADDED" if old is None else "MODIFIED")

    def remove_object(self, api_version: str, kind_plural: str, namespace: str | None, name: str) -> None:
        """Delete an object at once, ignoring finalizers and admission (test setup)."""
        rkey = _rkey(resource(api_version, kind_plural))
        key = (rkey, namespace, name)
        if key not in self._store:
            raise KeyError(key)
        self._drop(key, self._store[key])

    def get_object(self, api_version: str, plural: str, namespace: str | None, name: str) -> Body | None:
        obj = self._store.get((_rkey(resource(api_version, plural)), namespace, name))
        return clone(obj) if obj is not None else None

    def list_objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[Body]:
        items: list[Body] = clone(self.list_body(_rkey(resource(api_version, plural)), namespace, {})["items"])
        return items

    def _key_of(self, obj: Body) -> ObjectKey:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for res in self.resources:
            info = self.resources[res]
            if res.group == group and res.version == version and info.kind == kind:
                meta = obj.get("metadata", {})
                return _rkey(res), meta.get("namespace") if info.namespaced else None, meta["name"]
        raise ApiError(404, "NotFound", f"no resource for {api_version} {kind}")

    # -- storage internals --

    def _bump(self, obj: Body) -> Body:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        return obj

    def _commit(self, rkey: ResourceKey, namespace: str | None, name: str, obj: Body, event: str) -> Body:
        self._bump(obj)
        key = (rkey, namespace, name)
        self._index_owners(key, self._store.get(key), obj)
        self._store[key] = obj
        self._by_resource[rkey].add(key)
        if rkey == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(obj)
        self._emit(rkey, event, obj)
        if rkey in RBAC_RESOURCES:
            self._rbac_changed(rkey)
        return obj  # stored as is: callers serialise it, never change it

    def _drop(self, key: ObjectKey, obj: Body) -> Body:
        """Remove a stored object; ``obj`` (the stored one or its final version) is sent as DELETED.
        Then the garbage collector: dependents follow (background), a waiting owner may go."""
        rkey = key[0]
        self._by_resource[rkey].discard(key)
        self._index_owners(key, self._store.pop(key), None)
        self._emit(rkey, "DELETED", self._bump(obj))
        if rkey in RBAC_RESOURCES:
            self._rbac_changed(rkey)
        for owner in deletion.owner_uids(obj):
            if owner in self._uids:
                self._release_foreground(self._uids[owner])
        for dependent in sorted(self._dependents.pop(obj["metadata"].get("uid", ""), ())):
            self._collect(dependent)
        return obj

    # -- deletion and garbage collection (see deletion.py) --

    def _index_owners(self, key: ObjectKey, old: Body | None, new: Body | None) -> None:
        if old is not None:
            self._uids.pop(old["metadata"].get("uid", ""), None)
            for owner in deletion.owner_uids(old):
                self._dependents[owner].discard(key)
        if new is not None:
            self._uids[new["metadata"]["uid"]] = key
            for owner in deletion.owner_uids(new):
                self._dependents[owner].add(key)

    def _delete_stored(self, key: ObjectKey, policy: str) -> Body:
        """Delete a stored object: mark it if finalizers hold it (the garbage collector's own for
        Foreground and Orphan included), else remove it."""
        old = self._store[key]
        if old["metadata"].get("deletionTimestamp"):
            return old
        finalizers = list(old["metadata"].get("finalizers") or [])
        collector = deletion.GC_FINALIZERS.get(policy)
        if collector is not None and collector not in finalizers:
            finalizers.append(collector)
        if not finalizers:
            return self._drop(key, old)
        marked: Body = clone(old)
        marked["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0, finalizers=finalizers)
        self._commit(*key, marked, "MODIFIED")
        if policy == deletion.ORPHAN:
            for dependent in sorted(self._dependents.get(marked["metadata"]["uid"], ())):
                self._drop_owner_references(dependent, {marked["metadata"]["uid"]})
            self._remove_finalizer(key, deletion.GC_FINALIZERS[deletion.ORPHAN])
        elif policy == deletion.FOREGROUND:
            for dependent in sorted(self._dependents.get(marked["metadata"]["uid"], ())):
                if dependent in self._store:
                    self._delete_stored(dependent, deletion.FOREGROUND)
            if key in self._store:
                self._release_foreground(key)
        return self._store.get(key, marked)

    def _release_foreground(self, key: ObjectKey) -> None:
        """A foreground deletion ends when no dependent that blocks its owner is left."""
        owner = self._store.get(key)
        finalizer = deletion.GC_FINALIZERS[deletion.FOREGROUND]
        if owner is None or finalizer not in (owner["metadata"].get("finalizers") or []):
            return
        uid = owner["metadata"]["uid"]
        if not any(deletion.blocks_owner(self._store[d], uid) for d in self._dependents.get(uid, ())):
            self._remove_finalizer(key, finalizer)

    def _remove_finalizer(self, key: ObjectKey, finalizer: str) -> None:
        updated = clone(self._store[key])
        updated["metadata"]["finalizers"] = [f for f in updated["metadata"]["finalizers"] if f != finalizer]
        if not updated["metadata"]["finalizers"]:
            del updated["metadata"]["finalizers"]
            self._drop(key, updated)
        else:
            self._commit(*key, updated, "MODIFIED")

    def _drop_owner_references(self, key: ObjectKey, owners: set[str]) -> None:
        updated = clone(self._store[key])
        references = [r for r in deletion.owner_references(updated) if r.get("uid") not in owners]
        if references:
            updated["metadata"]["ownerReferences"] = references
        else:
            del updated["metadata"]["ownerReferences"]
        self._commit(*key, updated, "MODIFIED")

    def _collect(self, key: ObjectKey) -> None:
        """The garbage collector on a dependent whose owner went: deleted when none of its owners
        is left, else only the references to the missing owners are removed."""
        dependent = self._store.get(key)
        if dependent is None:
            return
        owners = deletion.owner_uids(dependent)
        missing = {owner for owner in owners if owner not in self._uids}
        if missing == owners:
            self._delete_stored(key, deletion.BACKGROUND)
        elif missing:
            self._drop_owner_references(key, missing)

    def _emit(self, rkey: ResourceKey, event_type: str, obj: Body) -> None:
        line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
        log = self._log.setdefault(rkey, collections.deque())
        log.append((self._revision, line))
        self._log_bytes[rkey] += len(line)
        while len(log) > self.history_limit or (len(log) > 1 and self._log_bytes[rkey] > self.history_bytes):
            revision, dropped = log.popleft()
            self._log_floor[rkey] = revision
            self._log_bytes[rkey] -= len(dropped)
        for watcher in list(self._watchers.get(rkey, ())):
            if watcher.wants(obj):
                watcher.queue.put_nowait(line)

    def _objects_of(self, rkey: ResourceKey, namespace: str | None) -> list[Body]:
        keys = sorted(k for k in self._by_resource.get(rkey, ()) if namespace is None or k[1] == namespace)
        return [self._store[k] for k in keys]

    def list_body(self, rkey: ResourceKey, namespace: str | None, query: Mapping[str, str]) -> Body:
        info = self.resources[resource(*rkey)]
        items = [
            obj
            for obj in self._objects_of(rkey, namespace)
            if Watcher(rkey, None, None, query.get("labelSelector", ""), query.get("fieldSelector", "")).wants(obj)
        ]
        group, version, _ = rkey
        return {
            "apiVersion": f"{group}/{version}" if group else version,
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._revision), "continue": ""},
            "items": items,
        }

    def _get_or_404(self, rkey: ResourceKey, namespace: str | None, name: str | None) -> Body:
        obj = self._store.get((rkey, namespace, name or ""))
        if obj is None:
            group = f".{rkey[0]}" if rkey[0] else ""
            raise ApiError(
                404,
                "NotFound",
                f'{rkey[2]}{group} "{name}" not found',
                {"name": name, "group": rkey[0], "kind": rkey[2]},
            )
        return obj  # the stored object: read it, never change it

    # -- writes --

    def _kind_label(self, rkey: ResourceKey) -> str:
        return f"{rkey[2]}.{rkey[0]}" if rkey[0] else rkey[2]

    def _check_limits(self, rkey: ResourceKey, obj: Body) -> None:
        """The size limits of a real cluster: 256 KiB of annotations, 1.5 MiB per object in etcd."""
        annotations = obj.get("metadata", {}).get("annotations") or {}
        annotation_bytes = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
        if annotation_bytes > ANNOTATIONS_LIMIT:
            raise ApiError(
                422,
                "Invalid",
                f'{self._kind_label(rkey)} "{obj["metadata"].get("name")}" is invalid: '
                f"metadata.annotations: Too long: must have at most {ANNOTATIONS_LIMIT} bytes",
            )
        if len(json.dumps(obj, separators=(",", ":"))) > OBJECT_SIZE_LIMIT:
            raise ApiError(500, "InternalError", "etcdserver: request is too large")

    def _check_schema(self, rkey: ResourceKey, obj: Body, query: Mapping[str, str], before: Body | None = None) -> Body:
        extras = self._crds.get(rkey)
        if extras is None or extras.schema is None:
            return obj
        unknown = unknown_fields(obj, extras.schema, before=before)
        if unknown and query.get("fieldValidation") == "Strict":
            info = self.resources[resource(*rkey)]
            details = ", ".join(f'unknown field "{p.lstrip(".")}"' for p in unknown)
            raise ApiError(
                400,
                "BadRequest",
                f'{info.kind} in version "{rkey[1]}" cannot be handled as a {info.kind}: '
                f"strict decoding error: {details}",
            )
        obj = prune(obj, extras.schema, before=before)
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        required = [key for key in extras.schema.get("required", []) if key not in ("apiVersion", "kind", "metadata")]
        errors = schema_errors(body, {**extras.schema, "required": required}, before=before)
        if errors:
            info = self.resources[resource(*rkey)]
            listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise ApiError(
                422, "Invalid", f'{info.kind}.{rkey[0]} "{obj["metadata"].get("name", "")}" is invalid: {listed}'
            )
        return obj

    def _has_status(self, rkey: ResourceKey) -> bool:
        return "status" in self.resources[resource(*rkey)].subresources

    async def _create(
        self, rkey: ResourceKey, namespace: str | None, data: Any, query: Mapping[str, str], requester: Body
    ) -> Body:
        info = self.resources[resource(*rkey)]
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        obj = data  # freshly parsed from the request: ours to change
        group, version, plural = rkey
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        obj.setdefault("kind", info.kind)
        if obj["kind"] != info.kind:
            raise ApiError(400, "BadRequest", f"the kind {obj['kind']!r} does not match the resource {plural}")
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if namespace is None:
                raise ApiError(404, "NotFound", f"{plural} is namespaced: create it in a namespace")
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            if (("", "v1", "namespaces"), None, namespace) not in self._store:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                )
            meta["name"] = meta["generateName"] + "".join(random.choices(GENERATE_NAME_ALPHABET, k=5))
        name = meta["name"]
        if len(name) > 253 or not OBJECT_NAME_RE.match(name):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
                "subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
                "and end with an alphanumeric character",
            )
        key = (rkey, namespace if info.namespaced else None, name)
        if key in self._store:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{self._kind_label(rkey)} "{name}" already exists',
                {"name": name, "group": group, "kind": plural},
            )
        obj = self._check_schema(rkey, obj, query)
        if self._has_status(rkey):
            obj.pop("status", None)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        self._check_limits(rkey, obj)
        obj = await self._admit(rkey, "CREATE", obj, None, query, requester)
        if query.get("dryRun") == "All":
            return obj  # validated and admitted, never stored
        return self._commit(rkey, key[1], name, obj, "ADDED")

    async def _update(
        self,
        rkey: ResourceKey,
        namespace: str | None,
        name: str | None,
        data: Any,
        query: Mapping[str, str],
        subresource: str | None,
        content_type: str,
        requester: Body,
        *,
        replace: bool,
    ) -> Body:
        info = self.resources[resource(*rkey)]
        key = (rkey, namespace if info.namespaced else None, name or "")
        old = self._get_or_404(rkey, key[1], name)
        if replace:
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "the request body must be a JSON object")
            wanted_version = (data.get("metadata") or {}).get("resourceVersion")
            if not wanted_version and rkey in self._crds:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                    "must be specified for an update",
                )
            new = data
        else:
            wanted_version = (data.get("metadata") or {}).get("resourceVersion") if isinstance(data, dict) else None
            if content_type == "application/json-patch+json":
                new = json_patch(old, data)
            elif content_type == "application/merge-patch+json" or (
                content_type == "application/strategic-merge-patch+json" and rkey not in self._crds
            ):
                new = merge_patch(old, data)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({content_type}) - "
                    "accepted media types include: application/json-patch+json, application/merge-patch+json",
                )
        if wanted_version and wanted_version != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {self._kind_label(rkey)} "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": rkey[0], "kind": rkey[2]},
            )
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        if rkey in BINDINGS and new.get("roleRef") != old.get("roleRef"):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind}.{RBAC_GROUP} "{name}" is invalid: roleRef: Invalid value: '
                f"{json.dumps(new.get('roleRef'))}: cannot change roleRef",
            )
        if self._has_status(rkey):
            if subresource == "status":
                # Only .status changes through /status; everything else stays as stored.
                new = (
                    dict(old, status=new.get("status"))
                    if new.get("status") is not None
                    else {k: v for k, v in old.items() if k != "status"}
                )
            elif "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        new = clone(self._check_schema(rkey, new, query, before=old))  # then detached from the stored object
        meta = new.setdefault("metadata", {})
        if old["metadata"].get("deletionTimestamp") and (added := deletion.added_finalizers(old, new)):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added '
                f"if the object is being deleted, found new finalizers {json.dumps(added)}",
            )
        preserved = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
        for keep in (*preserved, "name", "namespace"):
            if keep in old["metadata"]:
                meta[keep] = old["metadata"][keep]
            else:
                meta.pop(keep, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write does not bump the resourceVersion, as on a real server
        self._check_limits(rkey, new)
        new = await self._admit(rkey, "UPDATE", new, old, query, requester, subresource)
        if self._spec_of(new) != self._spec_of(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new == old:
            return old  # a mutating webhook undid the change
        if query.get("dryRun") == "All":
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._drop(key, new)
        return self._commit(rkey, key[1], key[2], new, "MODIFIED")

    @staticmethod
    def _spec_of(obj: Body) -> Body:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    async def _delete(
        self,
        rkey: ResourceKey,
        namespace: str | None,
        name: str | None,
        options: Body,
        query: Mapping[str, str],
        requester: Body,
    ) -> Body:
        info = self.resources[resource(*rkey)]
        key = (rkey, namespace if info.namespaced else None, name or "")
        old = self._get_or_404(rkey, key[1], name)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            if preconditions.get(field_name) and preconditions[field_name] != old["metadata"].get(field_name):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {self._kind_label(rkey)} "{name}": '
                    f"Precondition failed: {field_name}",
                )
        try:
            policy = deletion.propagation_policy(options, query)
        except deletion.InvalidPolicy as e:
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: {e}') from None
        if old["metadata"].get("deletionTimestamp"):
            return old
        dry_run = query.get("dryRun") == "All" or "All" in (options.get("dryRun") or [])
        await self._validate(rkey, "DELETE", None, old, {"dryRun": "All"} if dry_run else {}, requester)
        if dry_run:
            return old
        return self._delete_stored(key, policy)

    # -- CRDs --

    def _register_crd(self, crd: Body) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            res = resource(spec["group"], version["name"], names["plural"])
            self.resources[res] = ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                subresources={"status"} if "status" in (version.get("subresources") or {}) else set(),
            )
            columns = version.get("additionalPrinterColumns")
            self._crds[_rkey(res)] = CrdExtras(
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                columns=list(columns) if columns is not None else [AGE_COLUMN],
            )

    def load_crds(self, directories: tuple[pathlib.Path, ...] = CRD_DIRS) -> int:
        """Register every CustomResourceDefinition found in ``*.yaml`` of ``directories``."""
        paths = sorted(p for directory in directories for p in directory.glob("*.yaml"))
        return self.load_crd_texts(path.read_text() for path in paths)

    def load_crd_texts(self, texts: Iterable[str]) -> int:
        """Register every CustomResourceDefinition in the YAML ``texts``; returns how many."""
        count = 0
        for text in texts:
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.put_object(doc)
                    count += 1
        return count

    # -- admission --

    async def _admit(
        self,
        rkey: ResourceKey,
        operation: str,
        new: Body,
        old: Body | None,
        query: Mapping[str, str],
        requester: Body,
        subresource: str | None = None,
    ) -> Body:
        """Admit a create or update as a real API server does; returns the object to store."""
        admitted = new
        for webhook in self._webhooks("mutatingwebhookconfigurations", rkey, operation, subresource):
            result = await self._call_webhook(webhook, rkey, operation, admitted, old, query, subresource, requester)
            if result.get("patch"):
                admitted = self._apply_admission_patch(webhook, result, admitted)
        if admitted != new:
            admitted = self._check_schema(rkey, admitted, query, before=old)
            self._check_limits(rkey, admitted)
        await self._validate(rkey, operation, admitted, old, query, requester, subresource)
        return admitted

    async def _validate(
        self,
        rkey: ResourceKey,
        operation: str,
        new: Body | None,
        old: Body | None,
        query: Mapping[str, str],
        requester: Body,
        subresource: str | None = None,
    ) -> None:
        for webhook in self._webhooks("validatingwebhookconfigurations", rkey, operation, subresource):
            await self._call_webhook(webhook, rkey, operation, new, old, query, subresource, requester)

    def _webhooks(self, kind_plural: str, rkey: ResourceKey, operation: str, subresource: str | None) -> Iterator[Body]:
        for config in self._objects_of(("admissionregistration.k8s.io", "v1", kind_plural), None):
            for webhook in config.get("webhooks") or []:
                if self._webhook_applies(webhook, rkey, operation, subresource):
                    yield webhook

    @staticmethod
    def _apply_admission_patch(webhook: Body, result: Body, obj: Body) -> Body:
        name = webhook.get("name", "")
        try:
            if result.get("patchType") != "JSONPatch":
                raise ValueError(f"unsupported patchType {result.get('patchType')!r}")
            patched: Body = json_patch(obj, json.loads(base64.b64decode(result["patch"])))
            return patched
        except (ApiError, ValueError) as e:
            detail = e.message if isinstance(e, ApiError) else str(e)
            raise ApiError(
                500,
                "InternalError",
                f'Internal error occurred: admission webhook "{name}" returned an invalid patch: {detail}',
            ) from None

    @staticmethod
    def _webhook_applies(webhook: Body, rkey: ResourceKey, operation: str, subresource: str | None) -> bool:
        group, version, plural = rkey
        wanted = f"{plural}/{subresource}" if subresource else plural
        for rule in webhook.get("rules") or []:
            if (
                (set(rule.get("apiGroups", [])) & {group, "*"})
                and (set(rule.get("apiVersions", [])) & {version, "*"})
                and (set(rule.get("operations", [])) & {operation, "*"})
                and (set(rule.get("resources", [])) & {wanted, "*", f"*/{subresource}" if subresource else "*"})
            ):
                return True
        return False

    async def _call_webhook(
        self,
        webhook: Body,
        rkey: ResourceKey,
        operation: str,
        new: Body | None,
        old: Body | None,
        query: Mapping[str, str],
        subresource: str | None,
        requester: Body,
    ) -> Body:
        """The webhook's AdmissionReview response (a denial or a failed call raises)."""
        name = webhook.get("name", "")
        url = (webhook.get("clientConfig") or {}).get("url")
        info = self.resources[resource(*rkey)]
        subject = new if new is not None else old
        assert subject is not None
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": rkey[0], "version": rkey[1], "kind": info.kind},
                "resource": {"group": rkey[0], "version": rkey[1], "resource": rkey[2]},
                "requestKind": {"group": rkey[0], "version": rkey[1], "kind": info.kind},
                "requestResource": {"group": rkey[0], "version": rkey[1], "resource": rkey[2]},
                **({"subResource": subresource} if subresource else {}),
                "name": subject["metadata"].get("name", ""),
                **({"namespace": subject["metadata"]["namespace"]} if subject["metadata"].get("namespace") else {}),
                "operation": operation,
                "userInfo": requester,
                "object": new,
                "oldObject": old,
                "dryRun": query.get("dryRun") == "All",
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.capitalize()}Options"},
            },
        }
        timeout = min(float(webhook.get("timeoutSeconds") or WEBHOOK_TIMEOUT_DEFAULT), self.webhook_timeout_cap)
        ssl_context: ssl.SSLContext | bool = False
        ca_bundle = (webhook.get("clientConfig") or {}).get("caBundle")
        if url and url.startswith("https://"):
            ssl_context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode() if ca_bundle else None)
        try:
            if not url:
                raise ValueError("the webhook has no clientConfig.url (services are not emulated)")
            if self._http is None:
                self._http = aiohttp.ClientSession()
            async with self._http.post(
                url, json=review, ssl=ssl_context, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as reply:
                if reply.status != 200:
                    raise ValueError(f"the server responded with HTTP {reply.status}")
                result = (await reply.json()).get("response") or {}
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as e:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return {"allowed": True}
            reason = "context deadline exceeded" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
            raise ApiError(
                500,
                "InternalError",
                f'Internal error occurred: failed calling webhook "{name}": failed to call webhook: '
                f'Post "{url}": {reason}',
            ) from None
        if result.get("allowed"):
            return result
        status = result.get("status") or {}
        code = int(status.get("code") or 0)
        code = code if code >= 400 else 400
        explanation = status.get("message") or status.get("reason") or ""
        message = (
            f'admission webhook "{name}" denied the request: {explanation}'
            if explanation
            else f'admission webhook "{name}" denied the request without explanation'
        )
        raise ApiError(code, status.get("reason") or "", message)

    # -- replies: JSON objects or server-side Tables --

    def _reply(
        self, raw: aiohttp.web.BaseRequest, rkey: ResourceKey, body: Body, listing: bool = False
    ) -> aiohttp.web.StreamResponse:
        if "as=Table" in raw.headers.get("Accept", ""):
            items = body["items"] if listing else [body]
            return aiohttp.web.json_response(self._table(rkey, items, body["metadata"].get("resourceVersion", "")))
        return aiohttp.web.json_response(body)

    def _columns(self, rkey: ResourceKey) -> list[dict[str, Any]]:
        extras = self._crds.get(rkey)
        return extras.columns if extras is not None else BUILTIN_COLUMNS.get(rkey, [AGE_COLUMN])

    def _table(self, rkey: ResourceKey, items: list[Body], revision: str) -> Body:
        columns = self._columns(rkey)
        now = datetime.datetime.now(datetime.UTC)
        definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        definitions += [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in columns
        ]
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in columns:
                value = _json_path(obj, column["jsonPath"])
                if column.get("type") == "date" and isinstance(value, str):
                    when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                    value = _human_duration((now - when).total_seconds())
                cells.append(value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": revision},
            "columnDefinitions": definitions,
            "rows": rows,
        }

    # -- watches --

    async def _serve_watch_stream(
        self,
        raw: aiohttp.web.BaseRequest,
        rkey: ResourceKey,
        namespace: str | None,
        name: str | None,
        query: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        as_table = "as=Table" in raw.headers.get("Accept", "")
        watcher = Watcher(rkey, namespace, name, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        since = query.get("resourceVersion", "")
        # The snapshot/replay and the subscription happen with no await in between: no lost events.
        backlog: list[bytes]
        if since in ("", "0"):
            backlog = [
                json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n"
                for obj in self._objects_of(rkey, namespace)
                if watcher.wants(obj)
            ]
        elif not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")
        elif int(since) < self._log_floor.get(rkey, 0):
            expired = ApiError(410, "Expired", f"too old resource version: {since} ({self._log_floor[rkey]})")
            backlog = [json.dumps({"type": "ERROR", "object": expired.status()}).encode() + b"\n"]
        else:
            backlog = [
                line
                for revision, line in self._log.get(rkey, ())
                if revision > int(since) and watcher.wants(json.loads(line)["object"])
            ]
        self._watchers[rkey].add(watcher)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
            deadline = asyncio.get_running_loop().time() + timeout
            for replayed in backlog:
                await response.write(self._encode_event(rkey, replayed, as_table))
                if replayed.startswith(b'{"type": "ERROR"'):
                    return response
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    event: bytes | None = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:  # the server is going away
                    break
                await response.write(self._encode_event(rkey, event, as_table))
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._watchers[rkey].discard(watcher)
        return response

    def _encode_event(self, rkey: ResourceKey, line: bytes, as_table: bool) -> bytes:
        if not as_table:
            return line
        event = json.loads(line)
        if event["type"] == "ERROR":
            return line
        table = self._table(rkey, [event["object"]], event["object"]["metadata"].get("resourceVersion", ""))
        return json.dumps({"type": event["type"], "object": table}).encode() + b"\n"

    def set_stalled(self, stalled: bool) -> None:
        """While stalled, requests are accepted but not answered (a hung API server)."""
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        if stalled:
            self._open.clear()
        else:
            self._open.set()

    def fail_next(self, path: str, count: int) -> None:
        """Answer the next ``count`` requests for ``path`` 503 (an overloaded API server)."""
        self._unavailable[path] = count

    def close_watches(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(None)

    async def aclose(self) -> None:
        self.close_watches()
        if self._http is not None:
            await self._http.close()


# --- the server in a background thread ---------------------------------------------------------

#: Environment variable naming the first port of a block this process hands out in turn (see
#: :func:`free_port`); parallel test workers each get their own block.
PORT_BASE_VARIABLE = "JOBNET_PORT_BASE"
PORT_BLOCK_SIZE = 500
_next_port_offset = itertools.count()


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, for a server that binds it a moment later.

    A port the kernel picks (bind to 0, close) can be handed to another process before ours
    binds it, and kopf's webhook server binds with SO_REUSEPORT, so two servers could silently
    share a port. With ``JOBNET_PORT_BASE`` set (a block below the kernel's ephemeral range, one
    per parallel worker), ports are handed out in turn from that block instead, so no other
    process of ours can be given the same one.
    """
    base = os.environ.get(PORT_BASE_VARIABLE)
    if not base:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(PORT_BLOCK_SIZE):
        port = int(base) + next(_next_port_offset) % PORT_BLOCK_SIZE
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}..{int(base) + PORT_BLOCK_SIZE - 1} ({PORT_BASE_VARIABLE})")


@dataclass
class KubectlResult:
    rc: int
    stdout: str
    stderr: str


class EmulatorServer:
    """The emulator served over real HTTP on 127.0.0.1 from a background thread.

    Use as a context manager. Python helpers run their work on the emulator's loop,
    so tests never race with requests being served.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        load_crds: bool = True,
        history_limit: int = 10_000,
        kubeconfig: pathlib.Path | None = None,
    ) -> None:
        self.workdir = workdir
        #: written on start: the emulator's address, for kubectl and the operator.
        self.kubeconfig = kubeconfig or workdir / "kubeconfig.yaml"
        self.port = 0  # plain HTTP: no credentials needed, you are the admin
        self.secure_port = 0  # HTTPS: a bearer token says who you are, none makes you system:anonymous
        self.certificate = loopback_certificate()
        self.api = ApiEmulator(history_limit=history_limit)
        self._load_crds = load_crds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="k8s-emulator", daemon=True)
        self._http_server: aiohttp.web.Server | None = None
        self._listeners: list[asyncio.AbstractServer] = []

    # -- lifecycle --

    def __enter__(self) -> EmulatorServer:
        self._thread.start()
        if self._load_crds:
            self.call(self.api.load_crds)
        self._run(self._listen())
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_dict()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop_listening())
        self._run(self.api.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _listen(self) -> None:
        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
            # A real API server reads request bodies of up to 3 MiB (aiohttp's default is 1 MiB).
            return aiohttp.web.BaseRequest(
                message, payload, protocol, writer, task, self._loop, client_max_size=REQUEST_SIZE_LIMIT
            )

        self._http_server = aiohttp.web.Server(self.api, request_factory=make_request)
        plain = await self._loop.create_server(self._http_server, "127.0.0.1", self.port or 0, reuse_address=True)
        secure = await self._loop.create_server(
            self._http_server,
            "127.0.0.1",
            self.secure_port or 0,
            reuse_address=True,
            ssl=self.certificate.server_context(),
        )
        self._listeners = [plain, secure]
        self.port = plain.sockets[0].getsockname()[1]
        self.secure_port = secure.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._listeners:
            for listener in self._listeners:
                listener.close()
            self.api.close_watches()
            assert self._http_server is not None
            await self._http_server.shutdown(timeout=0.5)
            for connection in list(self._http_server.connections):
                connection.force_close()
            for listener in self._listeners:
                await listener.wait_closed()
            self._listeners = []

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Make the API unreachable (connections closed, connects refused) inside the block."""
        self._run(self._stop_listening())
        try:
            yield
        finally:
            self._run(self._listen())

    def fail_next(self, path: str, count: int) -> None:
        """The next ``count`` requests for ``path`` are answered 503 ServiceUnavailable."""
        self.call(self.api.fail_next, path, count)

    @contextlib.contextmanager
    def stall(self) -> Iterator[None]:
        """Accept connections but answer nothing inside the block (clients run into their timeouts)."""
        self.call(self.api.set_stalled, True)
        try:
            yield
        finally:
            self.call(self.api.set_stalled, False)

    def _run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a synchronous emulator method on the emulator's loop."""

        async def _call() -> Any:
            return fn(*args, **kwargs)

        return self._run(_call())

    # -- access --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secure_url(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    def kubeconfig_dict(self, namespace: str = "default", token: str | None = None) -> Body:
        """A kubeconfig for the emulator: the admin's (plain HTTP), or that of the holder of
        ``token`` (HTTPS: clients send tokens only over TLS)."""
        cluster: Body = {"server": self.url}
        if token is not None:
            authority = base64.b64encode(self.certificate.certificate_pem).decode()
            cluster = {"server": self.secure_url, "certificate-authority-data": authority}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "preferences": {},
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "tester", "user": {"token": token or self.api.admin_token}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
            ],
        }

    def write_kubeconfig(self, path: pathlib.Path, token: str, namespace: str = "default") -> pathlib.Path:
        """Write a kubeconfig that authenticates with ``token`` (see :meth:`issue_token`)."""
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(namespace, token)))
        path.chmod(0o600)
        return path

    def issue_token(self, username: str, groups: Iterable[str] = ()) -> str:
        """A bearer token of the user ``username`` in ``groups`` (and ``system:authenticated``)."""
        user = UserInfo(username, (*groups, AUTHENTICATED_GROUP))
        token: str = self.call(self.api.issue_token, user)
        return token

    def access_log(self) -> set[tuple[str, Request]]:
        """What identities other than ``system:masters`` were allowed to do so far."""
        log: set[tuple[str, Request]] = self.call(lambda: set(self.api.access_log))
        return log

    def denial_log(self) -> set[tuple[str, Request]]:
        """What identities were refused so far."""
        log: set[tuple[str, Request]] = self.call(lambda: set(self.api.denial_log))
        return log

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 30.0, kubeconfig: pathlib.Path | None = None
    ) -> KubectlResult:
        """Run the real kubectl against the emulator (as the admin, or with another ``kubeconfig``)."""
        completed = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", "--request-timeout=20s", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(self.workdir)},
        )
        return KubectlResult(completed.returncode, completed.stdout, completed.stderr)

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Body | None:
        found: Body | None = self.call(self.api.get_object, api_version, plural, namespace, name)
        return found

    def list_objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[Body]:
        found: list[Body] = self.call(self.api.list_objects, api_version, plural, namespace)
        return found

    def put(self, obj: Body) -> Body:
        """Create or replace an object directly in storage (no admission)."""
        stored: Body = self.call(self.api.put_object, obj)
        return stored

    def remove(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        """Delete an object directly in storage (no admission, no finalizers)."""
        self.call(self.api.remove_object, api_version, plural, namespace, name)

    def create_namespace(self, name: str) -> Body:
        return self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def events_for(self, namespace: str, name: str) -> list[Body]:
        return [
            e for e in self.list_objects("v1", "events", namespace) if e.get("involvedObject", {}).get("name") == name
        ]
