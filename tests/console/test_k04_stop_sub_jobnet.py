"""K04: stop a running sub-jobnet from the job network monitor: its jobs show Stopped, its
downstream does not start; the event list shows the stop and who asked."""

from __future__ import annotations

import pytest

from tests.console.browser import Page
from tests.console.conftest import PERSON
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_K04_stop_a_running_sub_jobnet_from_the_monitor(scenario: Scenario, page: Page) -> None:
    vm = scenario.vm()
    host = scenario.host(vm)
    long = scenario.marker_script(vm, "long", "sleep 60\n")
    tail = scenario.marker_script(vm, "tail")
    downstream = scenario.marker_script(vm, "downstream")
    scenario.apply(
        [
            {
                "apiVersion": "jobnet.dev/v1alpha1",
                "kind": "JobNet",
                "metadata": {"name": "k04-load"},
                "spec": {
                    "host": host,
                    "jobs": [{"name": "long", "script": long}, {"name": "tail", "script": tail, "after": ["long"]}],
                },
            }
        ]
    )
    run = scenario.run_jobnet(
        "k04",
        host,
        [{"name": "load", "expand": "k04-load"}, {"name": "report", "script": downstream, "after": ["load"]}],
    )
    scenario.wait_job_state(run, "/k04/load/long", "Running", timeout=60)

    page.open(f"/runs/default/{run}")
    frame = 'g.frame[data-path="/k04/load"]'
    page.wait_text('g.node[data-path="/k04/load/long"] .state-text', "Running")
    assert "Running" in page.text(f"{frame} .frame-title")
    page.click(f"{frame} .stop-button")
    assert "Stop /k04/load?" in page.text("#confirm-text")
    page.confirm()
    page.wait_text("#notice", "stop of /k04/load requested")

    for path in ("/k04/load/long", "/k04/load/tail"):
        page.wait_text(f'g.node[data-path="{path}"] .state-text', "Stopped", timeout=60)
    page.wait_text("#run-phase", "Stopped", timeout=60)
    assert "Running" not in page.text('g.node[data-path="/k04/report"] .state-text')

    status = scenario.wait_phase(run, "Stopped", timeout=30)
    assert status["stopScopes"] == ["/k04/load"]
    assert (
        status["jobs"]["/k04/load/long"]["state"] == "Stopped"
        and status["jobs"]["/k04/load/tail"]["state"] == "Stopped"
    )
    assert status["jobs"]["/k04/report"]["state"] in ("Skipped", "Stopped"), status["jobs"]["/k04/report"]
    assert scenario.script_runs(vm, "tail") == 0 and scenario.script_runs(vm, "downstream") == 0

    page.click("#run-events")
    stop_row = 'tr.event[data-reason="StopRequested"]'
    message = page.text(f"{stop_row} .message")
    assert message == f"stop of /k04/load requested by {PERSON}", message
    # Newest first: the run stopped after the stop was asked for.
    reasons = page.texts("#events-table tr.event .reason")
    assert reasons.index("RunStopped") < reasons.index("StopRequested"), reasons
    page.click(f"{stop_row} a.job-link")  # the event list links to the monitor of what it names
    page.wait_text("h1", "/k04/load")
    assert "Stopped" in page.text("#job-state") and "/k04/load" in page.text("#history .stop-entry")
