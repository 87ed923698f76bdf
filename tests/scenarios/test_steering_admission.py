"""Who steers a run, end to end: the real operator's admission webhooks behind the API emulator,
driven with real kubectl (``--as`` makes kubectl impersonate a person).

* a malformed ``jobnet.dev/override`` / ``jobnet.dev/stop`` is refused by ``kubectl annotate``
  itself, with the problem named; nothing is stored;
* the requester is stamped into ``jobnet.dev/override-by`` / ``jobnet.dev/stop-by`` by the
  mutating webhook, overwriting a forged value, and ends up in the status and the Events;
* the operator's own writes (removing what it applied, kopf's bookkeeping) pass the webhooks.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from tests.support.emulator import EmulatorServer, grant
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess, admission_review
from tests.support.scenario import Scenario

JOBRUNS = ("jobnet.dev/v1alpha1", "jobruns")
#: What a person needs to steer runs with ``kubectl annotate`` (the emulator enforces RBAC).
STEER_RUNS = {"apiGroups": ["jobnet.dev"], "resources": ["jobruns"], "verbs": ["get", "patch"]}
STEERING_KEYS = {"jobnet.dev/override", "jobnet.dev/override-by", "jobnet.dev/stop", "jobnet.dev/stop-by"}


def _annotations(emulator: EmulatorServer, run: str) -> dict[str, str]:
    return dict(((emulator.get(*JOBRUNS, "default", run) or {}).get("metadata") or {}).get("annotations") or {})


def _events(emulator: EmulatorServer, run: str, reason: str) -> list[str]:
    return [e["message"] for e in emulator.events_for("default", run) if e.get("reason") == reason]


def start_nightly_run(emulator: EmulatorServer) -> None:
    """JobNet ``nightly`` (extract -> load) and its run ``nightly-1``, started: its snapshot stored
    (the run is Pending or further, and steering admission checks against that snapshot)."""
    assert (
        kubectl_apply(
            emulator,
            jobnet("nightly", script_job("extract"), script_job("load", "extract")),
            jobrun("nightly", name="nightly-1"),
        ).rc
        == 0
    )
    wait_until(
        lambda: (emulator.get(*JOBRUNS, "default", "nightly-1") or {}).get("status", {}).get("jobNetSnapshot"),
        timeout=30,
        what="the run's JobNet snapshot",
    )


@pytest.mark.emulator
def test_malformed_steering_is_refused_by_kubectl_and_the_stop_names_its_requester(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    start_nightly_run(emulator)

    refused = emulator.kubectl(
        "annotate", "jobrun", "nightly-1", "jobnet.dev/override=/nightly/extrct=Succeeded,/nightly/load=Done"
    )
    assert refused.rc == 1
    assert 'admission webhook "jobruns.validate.jobnet.dev" denied the request' in refused.stderr
    assert "unknown path '/nightly/extrct'" in refused.stderr and "did you mean '/nightly/extract'" in refused.stderr
    assert "unknown override state 'Done'" in refused.stderr
    refused = emulator.kubectl("annotate", "jobrun", "nightly-1", "jobnet.dev/stop=/nightly/lod")
    assert refused.rc == 1 and "jobnet.dev/stop" in refused.stderr and "did you mean '/nightly/load'" in refused.stderr
    assert not STEERING_KEYS & set(_annotations(emulator, "nightly-1"))

    grant(emulator, "steer-runs", [STEER_RUNS], users=["alice"])
    stopped = emulator.kubectl(
        "--as=alice",
        "--as-group=ops",
        "annotate",
        "jobrun",
        "nightly-1",
        "jobnet.dev/stop=/",
        "jobnet.dev/stop-by=mallory",
    )
    assert stopped.rc == 0, stopped.stderr
    wait_until(lambda: _events(emulator, "nightly-1", "StopRequested"), timeout=30, what="the stop to be applied")
    assert _events(emulator, "nightly-1", "StopRequested") == ["stop of /nightly requested by alice"]
    # The operator's removal of what it applied passes the webhooks (failurePolicy Fail).
    wait_until(
        lambda: not STEERING_KEYS & set(_annotations(emulator, "nightly-1")),
        timeout=30,
        what="the applied stop and its stamp removed by the operator",
        describe=lambda: repr(_annotations(emulator, "nightly-1")),
    )
    assert not any("mallory" in e.get("message", "") for e in emulator.events_for("default", "nightly-1"))


@pytest.mark.emulator
def test_mutating_webhook_stamps_only_a_changed_steering_annotation(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    before = jobrun("nightly", name="nightly-1")
    before["metadata"]["annotations"] = {"jobnet.dev/override": "/nightly/a=Succeeded", "jobnet.dev/override-by": "bob"}
    forged = json.loads(json.dumps(before))
    forged["metadata"]["annotations"]["jobnet.dev/override-by"] = "mallory"
    unchanged = operator.admission_review(
        "/mutate-jobrun", admission_review("UPDATE", forged, before, username="mallory")
    )
    assert unchanged["allowed"] is True
    patch = json.loads(base64.b64decode(unchanged["patch"]))
    assert patch == [{"op": "replace", "path": "/metadata/annotations/jobnet.dev~1override-by", "value": "bob"}]

    changed = json.loads(json.dumps(before))
    changed["metadata"]["annotations"]["jobnet.dev/override"] = "/nightly/a=Failed"
    stamped = operator.admission_review("/mutate-jobrun", admission_review("UPDATE", changed, before, username="carol"))
    by, identity = sorted(json.loads(base64.b64decode(stamped["patch"])), key=lambda op: op["path"])
    assert by == {"op": "replace", "path": "/metadata/annotations/jobnet.dev~1override-by", "value": "carol"}
    # A changed override is a new request: it gets a fresh identity (core/steering.py).
    assert identity["op"] == "add" and identity["path"] == "/metadata/annotations/jobnet.dev~1override-id"
    assert re.fullmatch(r"[0-9a-f]{16}", identity["value"]), identity

    labelled = json.loads(json.dumps(before))
    labelled["metadata"]["labels"] = {"team": "etl"}
    untouched = operator.admission_review(
        "/mutate-jobrun", admission_review("UPDATE", labelled, before, username="carol")
    )
    assert untouched["allowed"] is True and "patch" not in untouched


@pytest.mark.emulator
@pytest.mark.vm
def test_override_by_an_impersonated_person_is_recorded_and_a_forged_requester_overwritten(scenario: Scenario) -> None:
    vm, run = scenario.run_failed_export_chain()
    grant(scenario.emulator, "steer-runs", [STEER_RUNS], users=["alice"])

    refused = scenario.kubectl("--as=alice", "annotate", "jobrun", run, "jobnet.dev/override=/chain/export=Sucseeded")
    assert refused.rc == 1 and "unknown override state 'Sucseeded'" in refused.stderr, refused.stderr

    result = scenario.kubectl(
        "--as=alice",
        "annotate",
        "jobrun",
        run,
        "jobnet.dev/override=/chain/export=Succeeded",
        "jobnet.dev/override-by=mallory",
    )
    assert result.rc == 0, result.stderr
    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    [record] = status["overrides"]
    assert (record["path"], record["toState"], record["by"]) == ("/chain/export", "Succeeded", "alice"), record
    event = scenario.wait_event(run, "Overridden", contains="by alice")
    assert event["message"] == f"/chain/export: {record['message']}"
    assert "mallory" not in json.dumps(status) and not any("mallory" in e["message"] for e in scenario.events(run))
    assert scenario.script_runs(vm, "report") == 1
    wait_until(
        lambda: not STEERING_KEYS & set(scenario.get_run(run)["metadata"].get("annotations") or {}),
        timeout=15,
        what="the override and its stamp removed by the operator",
    )


@pytest.mark.emulator
def test_steering_paths_are_checked_against_the_definition_the_run_started_with(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    """The JobNet was edited mid-run (a job renamed): the run still executes its snapshot, so an
    override or stop of the old path is admitted and the new path is refused."""
    start_nightly_run(emulator)
    assert kubectl_apply(emulator, jobnet("nightly", script_job("extract"), script_job("load2", "extract"))).rc == 0

    refused = emulator.kubectl("annotate", "jobrun", "nightly-1", "jobnet.dev/stop=/nightly/load2")
    assert refused.rc == 1 and "unknown path '/nightly/load2'" in refused.stderr, refused.stderr
    admitted = emulator.kubectl("annotate", "jobrun", "nightly-1", "jobnet.dev/stop=/nightly/load")
    assert admitted.rc == 0, admitted.stderr


@pytest.mark.emulator
def test_a_jobrun_spec_cannot_change_once_the_run_exists(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    assert (
        kubectl_apply(
            emulator,
            jobnet("nightly", script_job("extract")),
            jobnet("other", script_job("x")),
            jobrun("nightly", name="nightly-1"),
        ).rc
        == 0
    )

    for patch in ('{"spec":{"env":{"DAY":"2026-11-24"}}}', '{"spec":{"jobNetRef":"other"}}'):
        refused = emulator.kubectl("patch", "jobrun", "nightly-1", "--type=merge", "-p", patch)
        assert refused.rc == 1, refused.stdout
        assert "spec: a JobRun's spec cannot change once it exists" in refused.stderr, refused.stderr
    assert (emulator.get(*JOBRUNS, "default", "nightly-1") or {})["spec"] == {"jobNetRef": "nightly"}
    assert kubectl_apply(emulator, jobrun("nightly", name="nightly-1")).rc == 0  # the same spec again is fine
    assert emulator.kubectl("label", "jobrun", "nightly-1", "team=batch").rc == 0  # metadata stays editable
