"""Pure Kubernetes API helpers: errors, paths and request attributes, names, selectors, patches.

No I/O and no storage: what the emulator's store, admission and server share.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kmock import resource

from jobnet.devenv.emulator.authorization import Request

ResourceKey = tuple[str, str, str]  # group, version, plural
ObjectKey = tuple[ResourceKey, str | None, str]  # resource, namespace (None if cluster-scoped), name
Body = dict[str, Any]

#: What a real API server accepts as metadata.name of most objects (a DNS-1123 subdomain).
OBJECT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the same as Kubernetes' (no vowels)
GENERATED_NAME_BASE_MAX = 58  # Kubernetes' maxGeneratedNameLength: 63 minus the 5 random characters
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply (kubectl apply --server-side)
HTTP_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


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


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
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


def json_path_value(obj: Any, path: str) -> Any:
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
        actual = json_path_value(obj, path)
        if (str(actual if actual is not None else "") == value) != (op != "!="):
            return False
    return True


# --- patches -----------------------------------------------------------------------------


@functools.cache
def resource_of(group: str, version: str, plural: str) -> resource:
    """kmock's ``resource`` of a resource key, made once: its constructor's protocol checks cost
    more than the rest of a lookup, and every request looks its resource up several times."""
    return resource(group, version, plural)


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than ``copy.deepcopy``)."""
    return json.loads(json.dumps(obj))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch) if isinstance(patch, list) else patch  # strings and numbers are immutable
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
    plural, name, subresource = [*rest, None, None, None][:3]
    return ApiPath(group, version, plural, namespace, name, subresource)


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


def kind_label(rkey: ResourceKey) -> str:
    """How error messages name a resource: ``jobruns.jobnet.dev``, ``configmaps``."""
    return f"{rkey[2]}.{rkey[0]}" if rkey[0] else rkey[2]
