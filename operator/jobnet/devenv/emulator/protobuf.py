"""Just enough of Kubernetes' protobuf encoding to read what kubectl sends as protobuf.

kubectl's typed requests for built-in kinds (``kubectl auth can-i``/``whoami``, ``kubectl create
token|namespace|serviceaccount|secret|configmap|role|clusterrole|rolebinding|clusterrolebinding``)
are POSTed as ``application/vnd.kubernetes.protobuf`` (accepting JSON back). The emulator
otherwise speaks JSON only: these kinds are decoded here into their JSON form, with the field
numbers of ``k8s.io/api/*/generated.proto``; anything else is refused (415).
"""

from __future__ import annotations

import base64
from typing import Any

Body = dict[str, Any]
#: field number -> (JSON name, kind): "string", "strings", "bytes", "int", "bool", a nested
#: schema (a message), ("messages", schema) (repeated), ("map", "string" | "bytes")
Schema = dict[int, tuple[str, Any]]

MAGIC = b"k8s\x00"
UNKNOWN: Schema = {1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}), 2: ("raw", "bytes")}
OBJECT_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    11: ("labels", ("map", "string")),
    12: ("annotations", ("map", "string")),
}
RESOURCE_ATTRIBUTES: Schema = {
    1: ("namespace", "string"),
    2: ("verb", "string"),
    3: ("group", "string"),
    4: ("version", "string"),
    5: ("resource", "string"),
    6: ("subresource", "string"),
    7: ("name", "string"),
}
NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "string"), 2: ("verb", "string")}
ACCESS_SPEC: Schema = {
    1: ("resourceAttributes", RESOURCE_ATTRIBUTES),
    2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES),
    3: ("user", "string"),
    4: ("groups", "strings"),
    6: ("uid", "string"),
}
POLICY_RULE: Schema = {
    1: ("verbs", "strings"),
    2: ("apiGroups", "strings"),
    3: ("resources", "strings"),
    4: ("resourceNames", "strings"),
    5: ("nonResourceURLs", "strings"),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", ("map", "string")),
    2: ("matchExpressions", ("messages", {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "strings")})),
}
SUBJECT: Schema = {1: ("kind", "string"), 2: ("apiGroup", "string"), 3: ("name", "string"), 4: ("namespace", "string")}
ROLE_REF: Schema = {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")}
BINDING: Schema = {1: ("metadata", OBJECT_META), 2: ("subjects", ("messages", SUBJECT)), 3: ("roleRef", ROLE_REF)}
ROLE: Schema = {1: ("metadata", OBJECT_META), 2: ("rules", ("messages", POLICY_RULE))}
KINDS: dict[str, Schema] = {
    "SelfSubjectAccessReview": {2: ("spec", ACCESS_SPEC)},
    "SubjectAccessReview": {2: ("spec", ACCESS_SPEC)},
    "LocalSubjectAccessReview": {1: ("metadata", OBJECT_META), 2: ("spec", ACCESS_SPEC)},
    "SelfSubjectRulesReview": {2: ("spec", {1: ("namespace", "string")})},
    "SelfSubjectReview": {},
    "TokenRequest": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("audiences", "strings"), 4: ("expirationSeconds", "int")}),
    },
    "Namespace": {1: ("metadata", OBJECT_META)},
    "ServiceAccount": {1: ("metadata", OBJECT_META)},
    "Secret": {
        1: ("metadata", OBJECT_META),
        2: ("data", ("map", "bytes")),
        3: ("type", "string"),
        4: ("stringData", ("map", "string")),
    },
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", ("map", "string")), 3: ("binaryData", ("map", "bytes"))},
    "Role": ROLE,
    "ClusterRole": {
        **ROLE,
        3: ("aggregationRule", {1: ("clusterRoleSelectors", ("messages", LABEL_SELECTOR))}),
    },
    "RoleBinding": BINDING,
    "ClusterRoleBinding": BINDING,
}
MAP_ENTRY: dict[str, Schema] = {
    "string": {1: ("key", "string"), 2: ("value", "string")},
    "bytes": {1: ("key", "string"), 2: ("value", "bytes")},
}


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ProtobufError("truncated or overlong varint")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message: varints as int, the rest as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, position = _varint(data, position)
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ProtobufError("a field runs past the end of the message")
            value, position = data[position : position + length], position + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, position = data[position : position + size], position + size
        else:
            raise ProtobufError(f"unsupported wire type {wire_type}")
        fields.append((number, value))
    return fields


def decode(data: bytes, schema: Schema) -> Body:
    """The fields of ``schema`` in one protobuf message, as JSON; other fields are skipped."""
    found: Body = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind in ("int", "bool"):
            if not isinstance(value, int):
                raise ProtobufError(f"{name}: expected a varint")
            found[name] = bool(value) if kind == "bool" else value
            continue
        if not isinstance(value, bytes):
            raise ProtobufError(f"{name}: expected a length-delimited field")
        if kind == "strings":
            found.setdefault(name, []).append(value.decode())
        elif kind == "string":
            if value:  # generated marshallers write empty strings that JSON would omit
                found[name] = value.decode()
        elif kind == "bytes":
            found[name] = value
        elif isinstance(kind, tuple) and kind[0] == "messages":
            found.setdefault(name, []).append(decode(value, kind[1]))
        elif isinstance(kind, tuple) and kind[0] == "map":
            entry = decode(value, MAP_ENTRY[kind[1]])
            item = entry.get("value", b"" if kind[1] == "bytes" else "")
            found.setdefault(name, {})[entry.get("key", "")] = (
                base64.b64encode(item).decode() if kind[1] == "bytes" else item
            )
        else:
            found[name] = decode(value, kind)
    return found


def decode_object(body: bytes) -> Body:
    """An object in Kubernetes' protobuf envelope, as its JSON object (only the kinds above)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message (no k8s\\0 prefix)")
    envelope = decode(body[len(MAGIC) :], UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in KINDS:
        raise ProtobufError(
            f"the emulator speaks JSON, and protobuf only for what kubectl create and kubectl auth send, "
            f"not for {kind or 'this'}"
        )
    return {
        "apiVersion": type_meta.get("apiVersion", ""),
        "kind": kind,
        **decode(envelope.get("raw", b""), KINDS[kind]),
    }
