"""D04 with the definitions changed meanwhile: a JobRun executes the JobNets it started with.

The JobNets of a running JobRun are edited (a job added, a script changed in an expanded JobNet)
or deleted, then the operator is killed (kill -9) and restarted: the run resumes from its JobNet
snapshot (status.jobNetSnapshot, a ConfigMap owned by the run) and finishes with its original
graph; a new JobRun gets the new definition. A run without a snapshot (started by an older
operator) resumes from the JobNets as they are, saying so; a run whose snapshot was deleted does
not pretend to know its graph."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.scenario import NAMESPACE, Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

#: A job that waits (bounded: 60 s) until the test creates ``release`` in the VM user's home.
WAIT_FOR_RELEASE = """\
i=0
while [ ! -e "$HOME/release" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
[ -e "$HOME/release" ]
"""


def jobnet(name: str, host: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "jobnet.dev/v1alpha1",
        "kind": "JobNet",
        "metadata": {"name": name},
        "spec": {"host": host, "jobs": jobs},
    }


def jobrun(name: str, jobnet_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "jobnet.dev/v1alpha1",
        "kind": "JobRun",
        "metadata": {"name": name},
        "spec": {"jobNetRef": jobnet_name},
    }


def start_waiting_run(scenario: Scenario, vm: NamespaceVM, prefix: str) -> tuple[str, dict[str, Any], str]:
    """JobNet ``<prefix>`` (``first`` waits for the release, then ``tail`` expands
    ``<prefix>-inner``, whose ``second`` runs a script) and a run of it, with ``first`` Running;
    returns the run, the host and the script of ``first``."""
    host = scenario.host(vm)
    first = scenario.marker_script(vm, "first", WAIT_FOR_RELEASE)
    second = scenario.marker_script(vm, "second")
    scenario.apply(
        [
            jobnet(f"{prefix}-inner", host, [{"name": "second", "script": second}]),
            jobnet(
                prefix,
                host,
                [{"name": "first", "script": first}, {"name": "tail", "expand": f"{prefix}-inner", "after": ["first"]}],
            ),
            jobrun(f"{prefix}-1", prefix),
        ]
    )
    run = f"{prefix}-1"
    scenario.wait_job_state(run, f"/{prefix}/first", "Running", timeout=60)
    return run, host, first


def original_paths(prefix: str) -> set[str]:
    return {f"/{prefix}", f"/{prefix}/first", f"/{prefix}/tail", f"/{prefix}/tail/second"}


def restart_while_down(scenario: Scenario, while_down: Any = None) -> int:
    """kill -9 the operator, do ``while_down()``, start it again; the log position of the restart."""
    operator = scenario.operator
    assert operator is not None
    operator.kill()
    if while_down is not None:
        while_down()
    log_position = len(operator.log_text())
    operator.start()
    return log_position


def test_D04_run_resumed_after_its_jobnets_were_edited_runs_the_original_definition(scenario: Scenario) -> None:
    vm = scenario.vm()
    run, host, first = start_waiting_run(scenario, vm, "d04e")
    snapshot = scenario.status(run)["jobNetSnapshot"]
    started_versions = {entry["name"]: entry["resourceVersion"] for entry in snapshot["jobNets"]}
    assert set(started_versions) == {"d04e", "d04e-inner"}
    configmap = scenario.emulator.get("v1", "configmaps", NAMESPACE, snapshot["configMap"])
    assert configmap is not None and configmap["immutable"] is True
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == scenario.get_run(run)["metadata"]["uid"]

    # Mid-run edits: a job is added to the root, the expanded JobNet runs another script.
    added = scenario.marker_script(vm, "added")
    second_new = scenario.marker_script(vm, "second-new")
    scenario.apply(
        [
            jobnet("d04e-inner", host, [{"name": "second", "script": second_new}]),
            jobnet(
                "d04e",
                host,
                [
                    {"name": "first", "script": first},
                    {"name": "tail", "expand": "d04e-inner", "after": ["first"]},
                    {"name": "added", "script": added, "after": ["first"]},
                ],
            ),
        ]
    )
    log_position = restart_while_down(scenario)
    vm.put_file("release", "go\n", 0o644)

    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    assert set(status["jobs"]) == original_paths("d04e"), status["jobs"]
    assert status["progress"] == "2/2"
    assert scenario.script_runs(vm, "first") == 1 and scenario.script_runs(vm, "second") == 1
    assert scenario.script_runs(vm, "second-new") == 0 and scenario.script_runs(vm, "added") == 0
    assert status["jobNetSnapshot"] == snapshot  # still describes what the run started with
    restarted = scenario.operator_log()[log_position:]
    assert re.search(rf"run=default/{run} runtime started \(phase Running\)", restarted), restarted[-3000:]
    assert "NoJobNetSnapshot" not in scenario.event_reasons(run)

    # The edits apply to the next run.
    scenario.apply([jobrun("d04e-2", "d04e")])
    status = scenario.wait_phase("d04e-2", "Succeeded", timeout=60)
    assert set(status["jobs"]) == original_paths("d04e") | {"/d04e/added"}
    assert scenario.script_runs(vm, "second-new") == 1 and scenario.script_runs(vm, "added") == 1
    assert scenario.script_runs(vm, "second") == 1
    newer = {entry["name"]: entry["resourceVersion"] for entry in status["jobNetSnapshot"]["jobNets"]}
    assert all(newer[name] != version for name, version in started_versions.items()), (newer, started_versions)


def test_D04_run_resumed_after_its_jobnets_were_deleted_completes(scenario: Scenario) -> None:
    vm = scenario.vm()
    run, _, _ = start_waiting_run(scenario, vm, "d04g")
    # A JobNet only a running JobRun uses may be deleted (the run has its snapshot); the
    # expanded one may go once nothing expands it any more.
    for name in ("d04g", "d04g-inner"):
        result = scenario.kubectl("delete", "jobnets", name)
        assert result.rc == 0, result.stderr

    restart_while_down(scenario)
    vm.put_file("release", "go\n", 0o644)

    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    assert set(status["jobs"]) == original_paths("d04g")
    assert scenario.script_runs(vm, "first") == 1 and scenario.script_runs(vm, "second") == 1
    assert "ResumeFailed" not in scenario.event_reasons(run)


def test_D04_run_without_a_snapshot_resumes_from_the_current_jobnets_and_says_so(scenario: Scenario) -> None:
    vm = scenario.vm()
    run, _, _ = start_waiting_run(scenario, vm, "d04o")

    def forget_the_snapshot() -> None:  # as a run started by an operator without snapshots
        result = scenario.kubectl(
            "patch",
            "jobruns",
            run,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"jobNetSnapshot": None}}),
        )
        assert result.rc == 0, result.stderr

    restart_while_down(scenario, forget_the_snapshot)
    event = scenario.wait_event(run, "NoJobNetSnapshot", timeout=30)
    assert "resumes with JobNet 'd04o' and the JobNets it expands as they are now" in event["message"]
    scenario.wait_operator_log(rf"run=default/{run} the run has no JobNet snapshot")
    vm.put_file("release", "go\n", 0o644)

    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    assert set(status["jobs"]) == original_paths("d04o")
    assert scenario.script_runs(vm, "first") == 1 and scenario.script_runs(vm, "second") == 1


def test_D04_run_whose_snapshot_was_deleted_does_not_resume_with_a_guessed_graph(scenario: Scenario) -> None:
    vm = scenario.vm()
    run, _, _ = start_waiting_run(scenario, vm, "d04x")
    configmap = scenario.status(run)["jobNetSnapshot"]["configMap"]

    def delete_the_snapshot() -> None:
        result = scenario.kubectl("delete", "configmaps", configmap)
        assert result.rc == 0, result.stderr

    restart_while_down(scenario, delete_the_snapshot)

    event = scenario.wait_event(run, "ResumeFailed", timeout=30)
    assert "its JobNet snapshot is gone" in event["message"] and configmap in event["message"]
    assert scenario.status(run)["phase"] == "Running"  # not pretended to be anything else
    assert scenario.script_runs(vm, "second") == 0
