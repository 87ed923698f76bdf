"""G07: a running JobRun is deleted: its running jobs are stopped on the VM first (the agent log
shows the kills), their records are acknowledged, the snapshot ConfigMap is garbage-collected,
then the JobRun is gone; an Event says so."""

from __future__ import annotations

import pytest

from jobnet.core.deletion import FINALIZER
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_G07_deleting_a_running_run_stops_its_jobs_acks_then_the_run_and_its_snapshot_go(scenario: Scenario) -> None:
    vm = scenario.vm()
    work = scenario.marker_script(vm, "work", "sleep 300\n")
    other = scenario.marker_script(vm, "other", "sleep 300\n")
    after = scenario.marker_script(vm, "after")
    run = scenario.run_jobnet(
        "g07",
        scenario.host(vm),
        [
            {"name": "work", "script": work},
            {"name": "other", "script": other},
            {"name": "after", "script": after, "after": ["work"]},
        ],
    )
    scenario.wait_job_state(run, "/g07/work", "Running", timeout=60)
    scenario.wait_job_state(run, "/g07/other", "Running", timeout=30)
    # Running means started; the scripts' first lines (their markers) may still be ahead
    wait_until(
        lambda: scenario.script_runs(vm, "work") == scenario.script_runs(vm, "other") == 1,
        timeout=30,
        what="both scripts started on the VM",
    )
    body = scenario.get_run(run)
    assert FINALIZER in body["metadata"].get("finalizers", []), body["metadata"]
    snapshot = body["status"]["jobNetSnapshot"]["configMap"]
    assert not scenario.gone("configmap", snapshot)

    deleted = scenario.kubectl("delete", "jobrun", run, "--wait=false")
    assert deleted.rc == 0, deleted.stderr

    # The kills reach the agent before the JobRun goes.
    for path in ("/g07/work", "/g07/other"):
        scenario.wait_agent_log(vm, rf"{path}.*kill requested \(stop", timeout=30)
    scenario.wait_event(run, "Deleted", contains="acknowledged", timeout=30)
    wait_until(lambda: scenario.gone("jobrun", run), timeout=30, what=f"JobRun {run} gone")
    wait_until(lambda: scenario.gone("configmap", snapshot), timeout=30, what="the snapshot ConfigMap collected")

    for path in ("/g07/work", "/g07/other"):  # acknowledged before the JobRun went
        scenario.wait_agent_log(vm, rf"{path}#1 acknowledged \(stopped\)", timeout=1)
    reasons = scenario.event_reasons(run)
    assert reasons.count("StopRequested") == 1 and reasons.count("Deleted") == 1, reasons
    assert scenario.script_runs(vm, "after") == 0
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "other") == 1
    wait_until(lambda: not vm.job_supervisors(), timeout=10, what="the jobs' supervisors ended")


def test_G07_a_finished_run_is_released_at_once(scenario: Scenario) -> None:
    vm = scenario.vm()
    done = scenario.marker_script(vm, "done")
    run = scenario.run_jobnet("g07done", scenario.host(vm), [{"name": "done", "script": done}])
    scenario.wait_phase(run, "Succeeded", timeout=60)
    assert FINALIZER in scenario.get_run(run)["metadata"].get("finalizers", [])
    deleted = scenario.kubectl("delete", "jobrun", run, "--timeout=20s")
    assert deleted.rc == 0, deleted.stderr
    assert scenario.gone("jobrun", run)
    assert scenario.event_reasons(run).count("Deleted") == 1
