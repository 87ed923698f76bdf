"""A06: duplicate job names, an empty graph, invalid names and unknown fields are rejected with
messages naming the field."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess, admission_review

pytestmark = pytest.mark.emulator


def test_A06_duplicates_empty_graph_invalid_names_unknown_fields_rejected(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    duplicates = jobnet("dupes", script_job("a"), script_job("a"))
    empty = jobnet("empty")
    bad_job_name = jobnet("bad-job-name", script_job("Extract_Data"))
    typo = jobnet("typo", script_job("a"), {**script_job("b"), "aftr": ["a"]})

    result = kubectl_apply(emulator, duplicates)
    assert result.rc == 1 and "spec.jobs[1].name" in result.stderr and "'a'" in result.stderr

    result = kubectl_apply(emulator, empty)
    assert result.rc == 1 and "spec.jobs" in result.stderr and "at least 1" in result.stderr

    result = kubectl_apply(emulator, bad_job_name)
    assert result.rc == 1 and "spec.jobs[0].name" in result.stderr and "Extract_Data" in result.stderr

    # The API server itself rejects an invalid object name, before admission.
    result = kubectl_apply(emulator, jobnet("Bad_Name", script_job("a")))
    assert result.rc == 1 and 'metadata.name: Invalid value: "Bad_Name"' in result.stderr

    # Unknown fields never get in: kubectl asks the API server for strict field validation.
    result = kubectl_apply(emulator, typo)
    assert result.rc == 1 and 'unknown field "spec.jobs[1].aftr"' in result.stderr

    stored = {jn["metadata"]["name"] for jn in emulator.list_objects("jobnet.dev/v1alpha1", "jobnets")}
    assert stored == set()


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (jobnet("dupes", script_job("a"), script_job("a")), "spec.jobs[1].name"),
        (jobnet("empty"), "spec.jobs"),
        (jobnet("bad-job-name", script_job("Extract_Data")), "spec.jobs[0].name"),
        (jobnet("typo", script_job("a"), {**script_job("b"), "aftr": ["a"]}), "spec.jobs[1].aftr: unknown field"),
        (jobnet("both", {"name": "a", "script": "/x.sh", "expand": "other"}), "spec.jobs[0]"),
    ],
)
def test_A06_webhook_denies_malformed_jobnet(operator: OperatorProcess, manifest: dict, expected: str) -> None:
    # Straight to the webhook: it does not rely on the API server's schema to catch these.
    response = operator.admission_review("/validate-jobnet", admission_review("CREATE", manifest))

    assert response["allowed"] is False
    assert expected in response["status"]["message"], response["status"]["message"]
