"""Structural schemas of CustomResourceDefinitions: what the API server prunes and how it validates."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

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
