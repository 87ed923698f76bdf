"""B01: a JobRun of a small JobNet (chain plus fan-out/fan-in) runs to Succeeded."""

from __future__ import annotations

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_B01_chain_and_fanout_succeeds(scenario: Scenario) -> None:
    vm = scenario.vm()
    names = ["extract", "transform", "load-a", "load-b", "load-c", "report"]
    scripts = {name: scenario.marker_script(vm, name, f"echo {name} done\n") for name in names}
    scenario.apply(f"""
        apiVersion: jobnet.dev/v1alpha1
        kind: JobNet
        metadata: {{name: nightly}}
        spec:
          host: {scenario.host(vm)}
          jobs:
          - {{name: extract, script: {scripts["extract"]}}}
          - {{name: transform, script: {scripts["transform"]}, after: [extract]}}
          - {{name: load-a, script: {scripts["load-a"]}, after: [transform]}}
          - {{name: load-b, script: {scripts["load-b"]}, after: [transform]}}
          - {{name: load-c, script: {scripts["load-c"]}, after: [transform]}}
          - {{name: report, script: {scripts["report"]}, after: [load-a, load-b, load-c]}}
        ---
        apiVersion: jobnet.dev/v1alpha1
        kind: JobRun
        metadata: {{name: nightly-1}}
        spec: {{jobNetRef: nightly}}
        """)

    status = scenario.wait_phase("nightly-1", "Succeeded", timeout=60)

    assert status["progress"] == "6/6"
    for name in names:
        job = status["jobs"][f"/nightly/{name}"]
        assert job["state"] == "Succeeded", (name, job)
        assert job["exitCode"] == 0 and job["attempt"] == 1 and job["host"] == f"{vm.user}@{vm.address}:22"
        assert scenario.script_runs(vm, name) == 1, f"{name} ran {scenario.script_runs(vm, name)} times"
        assert job["outputTail"] == f"{name} done\n"  # the bounded tail of its output
    # The chain and the fan-in held: each job started only after its upstream had finished.
    jobs = status["jobs"]
    assert jobs["/nightly/transform"]["startedAt"] >= jobs["/nightly/extract"]["finishedAt"]
    for load in ("load-a", "load-b", "load-c"):
        assert jobs[f"/nightly/{load}"]["startedAt"] >= jobs["/nightly/transform"]["finishedAt"]
        assert jobs["/nightly/report"]["startedAt"] >= jobs[f"/nightly/{load}"]["finishedAt"]
    table = scenario.get_runs_table()
    assert "nightly-1" in table and "Succeeded" in table, table
    assert "RunSucceeded" in scenario.event_reasons("nightly-1")
    assert "job=/nightly/report" in scenario.operator_log()
