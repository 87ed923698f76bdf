"""The CRDs are generated from the models, committed up to date, and structural."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from jobnet.core.models import HostSpec
from jobnet.core.status import JobRunStatus, JobStatus, StateOverride
from jobnet.crdgen import (
    generated_files,
    jobcalendar_crd,
    jobnet_crd,
    jobrun_crd,
    jobschedule_crd,
    structural_schema,
    write_crds,
)

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
EXAMPLES = CRD_DIR.parent / "examples"

#: Keys a structural schema may use (a subset of OpenAPI v3 that the API server accepts).
ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
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
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
}


@pytest.mark.parametrize("name", sorted(generated_files()))
def test_committed_crds_are_up_to_date(name):
    committed = CRD_DIR / name
    assert committed.exists(), f"{committed} is missing: run `jobnet crds`"
    assert committed.read_text(encoding="utf-8") == generated_files()[name], (
        f"{committed} differs from the models: run `jobnet crds`"
    )


def structural_violations(schema: dict, where: str = "") -> list[str]:
    """Offline checks of the API server's structural schema rules."""
    problems = []
    unknown = set(schema) - ALLOWED_KEYS
    if unknown:
        problems.append(f"{where}: keys not allowed in a structural schema: {sorted(unknown)}")
    if "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{where}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{where}: properties and additionalProperties together")
    if schema.get("type") == "array" and "items" not in schema:
        problems.append(f"{where}: array without items")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], dict):
        problems.append(f"{where}: additionalProperties must be a schema")
    for name in schema.get("required", []):
        if name not in schema.get("properties", {}):
            problems.append(f"{where}: required {name!r} is not a property")
    for name, sub in schema.get("properties", {}).items():
        problems.extend(structural_violations(sub, f"{where}.{name}"))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems.extend(structural_violations(schema[key], f"{where}[{key}]"))
    return problems


@pytest.mark.parametrize(
    "crd",
    [jobnet_crd(), jobrun_crd(), jobschedule_crd(), jobcalendar_crd()],
    ids=["JobNet", "JobRun", "JobSchedule", "JobCalendar"],
)
def test_schema_is_structural(crd):
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_violations(schema) == []
    assert "$ref" not in yaml.safe_dump(crd)


def test_crd_names_columns_and_subresources():
    jobrun = jobrun_crd()
    assert jobrun["metadata"]["name"] == "jobruns.jobnet.dev"
    names = jobrun["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == ("JobRun", ["jr"], ["jobnet"])
    version = jobrun["spec"]["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Progress"] == ".status.progress"
    assert columns["Age"] == ".metadata.creationTimestamp"
    jobnet = jobnet_crd()
    assert jobnet["spec"]["names"]["shortNames"] == ["jn"]
    assert jobnet["spec"]["scope"] == "Namespaced"
    assert {c["name"]: c["jsonPath"] for c in jobnet["spec"]["versions"][0]["additionalPrinterColumns"]}[
        "Jobs"
    ] == ".status.jobCount"


def test_schedule_and_calendar_crds():
    schedule = jobschedule_crd()
    names = schedule["spec"]["names"]
    assert (names["kind"], names["categories"]) == ("JobSchedule", ["jobnet"])
    version = schedule["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["JobNet", "Schedule", "TimeZone", "Suspend", "Last", "Next", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    calendar = jobcalendar_crd()
    assert calendar["spec"]["names"]["categories"] == ["jobnet"]
    assert "subresources" not in calendar["spec"]["versions"][0]  # no status: it is read where used
    properties = calendar["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert properties["closedDates"]["items"] == {"type": "string", "format": "date"}
    assert properties["shift"]["enum"] == ["Skip", "Previous", "Next"]


def test_schema_keeps_descriptions_constraints_and_maps():
    schema = jobnet_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["jobs"]
    job = spec["properties"]["jobs"]["items"]
    assert job["description"].startswith("One node of a JobNet")
    assert job["properties"]["name"]["maxLength"] == 63
    assert job["properties"]["env"] == {
        "description": job["properties"]["env"]["description"],
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert job["properties"]["host"]["properties"]["port"]["maximum"] == 65535
    assert job["properties"]["host"]["description"].startswith("Overrides the JobNet's default host.")
    assert "finally" in spec["properties"]
    assert spec["properties"]["stuckResolution"]["enum"] == ["Auto", "Manual"]
    status = jobrun_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "Stuck" in status["properties"]["jobs"]["additionalProperties"]["properties"]["state"]["enum"]


def test_model_without_optional_fields_converts():
    schema = structural_schema(HostSpec)
    assert schema["required"] == ["address", "user", "credentialsSecret"]
    assert "default" not in schema["properties"]["port"]


def test_write_crds(tmp_path):
    written = write_crds(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(generated_files())
    for path in written:
        assert yaml.safe_load(path.read_text())["kind"] == "CustomResourceDefinition"


def crd_validator(crd: dict) -> jsonschema.Draft7Validator:
    """The CRD's schema as a JSON schema validator (the keywords used mean the same in both)."""
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_crd_schemas_accept_every_example_and_a_full_status():
    validators = {
        "JobNet": crd_validator(jobnet_crd()),
        "JobRun": crd_validator(jobrun_crd()),
        "JobSchedule": crd_validator(jobschedule_crd()),
        "JobCalendar": crd_validator(jobcalendar_crd()),
    }
    documents = [d for path in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    assert {d["kind"] for d in documents} == set(validators)
    for document in documents:
        errors = [e.message for e in validators[document["kind"]].iter_errors(document)]
        assert errors == [], f"{document['kind']}/{document['metadata']}: {errors}"
    status = JobRunStatus(
        phase="Stuck",
        progress="1/2",
        counts={"Succeeded": 1, "Stuck": 1},
        jobs={
            "/nightly/extract": JobStatus(state="Succeeded", attempt=1, exit_code=0, output_tail="done"),
            "/nightly/load": JobStatus(state="Stuck", reason="HeartbeatLost"),
        },
        overrides=[StateOverride(path="/nightly/x", from_state="Stuck", to_state="Failed", at="2026-11-22T03:00:00Z")],
    ).model_dump(by_alias=True, exclude_none=True)
    run = {"apiVersion": "jobnet.dev/v1alpha1", "kind": "JobRun", "metadata": {}, "spec": {"jobNetRef": "x"}}
    assert list(validators["JobRun"].iter_errors({**run, "status": status})) == []
    assert list(validators["JobRun"].iter_errors({**run, "status": {"phase": "Exploded"}}))


def test_crd_schema_rejects_wrong_types_like_the_api_server_would():
    validator = crd_validator(jobnet_crd())
    bad = {"spec": {"timeoutSeconds": "soon", "jobs": [{"name": "a", "script": "/a", "args": "not-a-list"}]}}
    messages = sorted(error.message for error in validator.iter_errors(bad))
    assert messages == ["'not-a-list' is not of type 'array'", "'soon' is not of type 'integer'"]


def test_jobnet_crds_command_writes_the_committed_files(tmp_path, capsys):
    from jobnet.cli import main

    assert main(["crds", "--output-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(generated_files())
    for name, content in generated_files().items():
        assert (tmp_path / name).read_text(encoding="utf-8") == content
    assert f"wrote {tmp_path / 'jobnet.dev_jobnets.yaml'}" in capsys.readouterr().out
