"""G08: a running JobRun whose host is unreachable is deleted: the deletion waits, with a
condition and an Event naming the host; when the host returns the jobs are stopped and the
deletion completes; or a person forces it with the documented annotation and an Event says jobs
may still run on that host."""

from __future__ import annotations

import pytest

from jobnet.core.deletion import DELETION_BLOCKED, FORCE_DELETE_ANNOTATION
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def delete_while_cut(scenario: Scenario, name: str) -> tuple[NamespaceVM, str]:
    """A run with one job running, its VM's link cut, then the JobRun deleted: it waits."""
    vm = scenario.vm()
    run = scenario.run_long_work(vm, name, followers=())
    vm.cut()
    deleted = scenario.kubectl("delete", "jobrun", run, "--wait=false")
    assert deleted.rc == 0, deleted.stderr
    host = f"{vm.user}@{vm.address}:22"
    event = scenario.wait_event(run, DELETION_BLOCKED, contains=host, timeout=60)
    assert event["type"] == "Warning", event
    [condition] = [c for c in scenario.status(run).get("conditions", []) if c["type"] == DELETION_BLOCKED]
    assert condition["status"] == "True" and host in condition["message"], condition
    assert FORCE_DELETE_ANNOTATION in condition["message"], condition
    assert scenario.job(run, f"/{name}/work")["state"] == "Stuck"
    assert not scenario.gone("jobrun", run)
    return vm, run


def test_G08_deletion_waits_for_the_host_then_stops_the_job_and_completes(scenario: Scenario) -> None:
    vm, run = delete_while_cut(scenario, "g08")
    vm.restore()
    scenario.wait_agent_log(vm, r"/g08/work.*kill requested \(stop", timeout=30)
    wait_until(lambda: scenario.gone("jobrun", run), timeout=60, what=f"JobRun {run} gone")
    assert scenario.event_reasons(run).count(DELETION_BLOCKED) == 1
    scenario.wait_event(run, "Deleted", timeout=10)
    wait_until(lambda: not vm.job_supervisors(), timeout=10, what="the job's supervisor ended")


def test_G08_force_delete_annotation_releases_it_at_once_with_a_warning(scenario: Scenario) -> None:
    vm, run = delete_while_cut(scenario, "g08f")
    scenario.annotate(run, FORCE_DELETE_ANNOTATION, "true")
    wait_until(lambda: scenario.gone("jobrun", run), timeout=30, what=f"JobRun {run} gone")
    event = scenario.wait_event(run, "DeletionForced", contains="may still run", timeout=10)
    assert event["type"] == "Warning" and f"{vm.user}@{vm.address}:22" in event["message"], event
    assert "/g08f/work" in event["message"], event
