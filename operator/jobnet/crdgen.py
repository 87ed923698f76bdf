"""Generate the CustomResourceDefinitions of JobNet, JobRun, JobSchedule and JobCalendar from
the pydantic models.

The models (``jobnet.core.models``, ``jobnet.core.status`` and ``jobnet.core.schedulestatus``)
are the single source of truth; ``jobnet crds`` writes ``crds/jobnet.dev_<plural>.yaml``, and a
test fails when the committed files differ.

The pydantic JSON schema is turned into a *structural* openAPIV3Schema, as the API server
requires: every ``$ref`` inlined, ``Optional`` (``anyOf`` with ``null``) reduced to the type
itself (the field is simply not required), no ``title``/``default``/``additionalProperties:
false`` (defaults are applied by the models, unknown fields are pruned by the API server and
rejected by the admission webhook), maps as ``additionalProperties``, and descriptions kept
for ``kubectl explain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from jobnet.core.models import API_GROUP, API_VERSION, JobCalendarSpec, JobNetSpec, JobRunSpec, JobScheduleSpec
from jobnet.core.schedulestatus import JobScheduleStatus
from jobnet.core.status import JobNetStatus, JobRunStatus

Schema = dict[str, Any]

#: Keys of the pydantic JSON schema kept as they are.
_KEPT_KEYS = (
    "description",
    "type",
    "enum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
)
#: Keys dropped on purpose (see module docstring).
_DROPPED_KEYS = {"title", "default", "$defs"}


class SchemaConversionError(ValueError):
    """The models use a JSON schema construct that has no structural equivalent."""


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural openAPIV3Schema of ``model`` (camelCase field names)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}), model.__name__)


def _convert(schema: Mapping[str, Any], definitions: Mapping[str, Any], where: str) -> Schema:
    if "$ref" in schema:
        referenced = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**referenced, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _convert(merged, definitions, where)
    if "anyOf" in schema:
        variants = [variant for variant in schema["anyOf"] if variant.get("type") != "null"]
        if len(variants) != 1:
            raise SchemaConversionError(f"{where}: only Optional[X] unions are supported, got {schema['anyOf']}")
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        return _convert({**variants[0], **outer}, definitions, where)
    if "const" in schema:
        schema = {**{k: v for k, v in schema.items() if k != "const"}, "enum": [schema["const"]]}
        schema.setdefault("type", "string")

    unknown = (
        set(schema) - set(_KEPT_KEYS) - _DROPPED_KEYS - {"properties", "required", "items", "additionalProperties"}
    )
    if unknown:
        raise SchemaConversionError(f"{where}: unsupported JSON schema keys {sorted(unknown)}")
    if "type" not in schema:
        raise SchemaConversionError(f"{where}: a structural schema needs a type: {dict(schema)}")

    result: Schema = {key: schema[key] for key in _KEPT_KEYS if key in schema}
    if "properties" in schema:
        result["properties"] = {
            name: _convert(property_schema, definitions, f"{where}.{name}")
            for name, property_schema in schema["properties"].items()
        }
        if schema.get("required"):
            result["required"] = list(schema["required"])
    if "items" in schema:
        result["items"] = _convert(schema["items"], definitions, f"{where}[]")
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        result["additionalProperties"] = _convert(additional, definitions, f"{where}{{}}")
    return result


def _resource_schema(spec: type[BaseModel], status: type[BaseModel] | None) -> Schema:
    properties: Schema = {
        "apiVersion": {"type": "string", "description": f"{API_GROUP}/{API_VERSION}"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": structural_schema(spec),
    }
    if status is not None:
        properties["status"] = structural_schema(status)
    return {
        "type": "object",
        "description": (spec.__doc__ or "").strip(),
        "properties": properties,
        "required": ["spec"],
    }


def _crd(
    kind: str,
    plural: str,
    short_name: str,
    spec: type[BaseModel],
    status: type[BaseModel] | None,
    columns: list[Schema],
) -> Schema:
    """The CRD of a namespaced kind (with a status subresource when it has a status)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["jobnet"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if status is not None else {}),
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _resource_schema(spec, status)},
                }
            ],
        },
    }


_AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def jobnet_crd() -> Schema:
    return _crd(
        "JobNet",
        "jobnets",
        "jn",
        JobNetSpec,
        JobNetStatus,
        [
            {"name": "Jobs", "type": "integer", "jsonPath": ".status.jobCount", "description": "Jobs once expanded"},
            {"name": "Valid", "type": "boolean", "jsonPath": ".status.valid", "priority": 1},
            _AGE_COLUMN,
        ],
    )


def jobrun_crd() -> Schema:
    return _crd(
        "JobRun",
        "jobruns",
        "jr",
        JobRunSpec,
        JobRunStatus,
        [
            {"name": "JobNet", "type": "string", "jsonPath": ".spec.jobNetRef"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Finished/all jobs"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
            {"name": "Completed", "type": "date", "jsonPath": ".status.finishedAt"},
            _AGE_COLUMN,
        ],
    )


def jobschedule_crd() -> Schema:
    return _crd(
        "JobSchedule",
        "jobschedules",
        "js",
        JobScheduleSpec,
        JobScheduleStatus,
        [
            {"name": "JobNet", "type": "string", "jsonPath": ".spec.jobNetRef"},
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedules"},
            {"name": "TimeZone", "type": "string", "jsonPath": ".spec.timeZone"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "string", "jsonPath": ".status.nextScheduleTime"},
            {"name": "Calendar", "type": "string", "jsonPath": ".spec.calendarRef", "priority": 1},
            _AGE_COLUMN,
        ],
    )


def jobcalendar_crd() -> Schema:
    return _crd(
        "JobCalendar",
        "jobcalendars",
        "jcal",
        JobCalendarSpec,
        None,
        [
            {"name": "ClosedWeekdays", "type": "string", "jsonPath": ".spec.closedWeekdays"},
            {"name": "Holidays", "type": "string", "jsonPath": ".spec.publicHolidays.country"},
            {"name": "BaseTime", "type": "string", "jsonPath": ".spec.baseTime"},
            {"name": "Shift", "type": "string", "jsonPath": ".spec.shift"},
            _AGE_COLUMN,
        ],
    )


def render(crd: Schema) -> str:
    """The CRD as YAML text, deterministic (the committed files are compared byte for byte)."""
    header = "# Generated by `jobnet crds` from the pydantic models. Do not edit.\n"
    body: str = yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
    return header + body


def generated_files() -> dict[str, str]:
    """File name -> content of every generated CRD."""
    return {
        f"{API_GROUP}_jobnets.yaml": render(jobnet_crd()),
        f"{API_GROUP}_jobruns.yaml": render(jobrun_crd()),
        f"{API_GROUP}_jobschedules.yaml": render(jobschedule_crd()),
        f"{API_GROUP}_jobcalendars.yaml": render(jobcalendar_crd()),
    }


def write_crds(output_dir: Path) -> list[Path]:
    """Write the CRDs into ``output_dir`` (created if needed); return the written paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in generated_files().items():
        path = output_dir / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
