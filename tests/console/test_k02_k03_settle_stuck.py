"""K02, K03: a job goes Stuck (the link to its VM cut while it ran); a person finds it from the run
list, follows it through the job network monitor to the job monitor, and settles it there:

* K02: to Succeeded: the run finishes Succeeded and the job monitor shows who settled it;
* K03: to Ready: the job runs again as attempt 2 and the monitor shows both attempts;
  to Failed: the run ends Failed.
"""

from __future__ import annotations

import pytest

from tests.console.browser import Page
from tests.console.conftest import PERSON, stuck_run
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def _from_run_list_to_job_monitor(page: Page, run: str, path: str) -> None:
    """Run list (the run marked Stuck, first) -> job network monitor (the job marked with its
    reason) -> job monitor, by clicking."""
    page.open("/runs")
    row = f'tr[data-run="{run}"]'
    page.wait_text(f"{row} .phase", "Stuck")
    assert "stuck" in (page.attribute(row, "class") or "").split()
    assert "needs a person" in page.text(row)
    assert page.attributes("#runs-table tbody tr", "data-run")[0] == run  # Stuck runs first
    page.click(f"{row} a.run-link")

    node = f'g.node[data-path="{path}"]'
    page.wait(lambda: page.find_now(node).get_attribute("data-state") == "Stuck", f"{path} drawn Stuck")
    assert "⚠ Stuck" in page.text(f"{node} .state-text") and page.text(f"{node} .reason") == "HeartbeatLost"
    page.click(f"{node} a.job-link")

    page.wait_text("#job-state", "Stuck")
    assert page.text("#job-reason") == "HeartbeatLost"
    offered = page.attributes("#job-actions button.override", "data-state")
    assert offered == ["Ready", "Succeeded", "Failed", "Stopped"]  # exactly what Stuck allows
    # Each button sends the state and attempt shown: the override applies only while they hold.
    assert set(page.attributes("#job-actions button.override", "data-seen")) == {"Stuck"}
    assert set(page.attributes("#job-actions button.override", "data-attempt")) == {"1"}


def _settle(page: Page, state: str, message: str) -> None:
    page.click(f"#set-{state}")
    page.confirm(message)
    page.wait_text("#notice", f"override .*={state}@Stuck#1 requested")


def test_K02_stuck_job_settled_to_succeeded_from_the_job_monitor(scenario: Scenario, page: Page) -> None:
    vm, run, path = stuck_run(scenario, "k02")
    _from_run_list_to_job_monitor(page, run, path)

    _settle(page, "Succeeded", "checked the output on the VM")
    page.wait_text("#job-state", "Succeeded")
    page.wait_text("#history .override-entry .by", PERSON)

    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    settled = status["overrides"][-1]
    assert (settled["path"], settled["fromState"], settled["toState"]) == (path, "Stuck", "Succeeded"), settled
    assert settled["by"] == PERSON and settled["message"].endswith(": checked the output on the VM"), settled
    assert status["jobs"]["/k02/next"]["state"] == "Succeeded"
    assert scenario.script_runs(vm, "work") == 1
    page.click("#back-to-monitor")
    page.wait_text("#run-phase", "Succeeded")


def test_K03_stuck_job_set_to_ready_runs_again_as_attempt_2(scenario: Scenario, page: Page) -> None:
    vm, run, path = stuck_run(scenario, "k03")
    _from_run_list_to_job_monitor(page, run, path)

    _settle(page, "Ready", "the VM was rebooted: run it again")
    page.wait(lambda: len(page.find_all_now("#attempts tr.attempt")) == 2, "two attempts in the job monitor", 60)
    assert page.attributes("#attempts tr.attempt", "data-attempt") == ["1", "2"]
    page.wait_text('#attempts tr.attempt[data-attempt="2"]', "Succeeded", timeout=60)

    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    job = status["jobs"][path]
    assert job["attempt"] == 2 and job["state"] == "Succeeded"
    # The first attempt as the status keeps it, and as the job monitor shows it.
    [earlier] = job["earlierAttempts"]
    assert (earlier["attempt"], earlier["state"], earlier["reason"]) == (1, "Stuck", "HeartbeatLost"), earlier
    assert earlier["rerunBy"] == PERSON and earlier["host"] == job["host"], earlier
    assert earlier["startedAt"] < job["startedAt"], (earlier, job)
    first = page.text('#attempts tr.attempt[data-attempt="1"]')
    assert "Stuck" in first and "HeartbeatLost" in first and f"run again by {PERSON}" in first, first
    assert earlier["startedAt"] in first and earlier["host"] in first, first
    assert scenario.script_runs(vm, "work") == 2


def test_K03_stuck_job_set_to_failed_ends_the_run_failed(scenario: Scenario, page: Page) -> None:
    vm, run, path = stuck_run(scenario, "k03f")
    _from_run_list_to_job_monitor(page, run, path)

    _settle(page, "Failed", "")
    page.wait_text("#job-state", "Failed")
    # From Failed the monitor offers exactly a re-run or a bypass.
    page.wait(
        lambda: (
            [b.get_attribute("data-state") for b in page.find_all_now("#job-actions button.override")]
            == ["Ready", "Succeeded"]
        ),
        "the choices a Failed job allows",
    )
    status = scenario.wait_phase(run, "Failed", timeout=60)
    assert status["jobs"][path]["state"] == "Failed" and status["jobs"]["/k03f/next"]["state"] == "Skipped"
    assert status["overrides"][-1]["by"] == PERSON
    assert scenario.script_runs(vm, "next") == 0
