"""K01: start a run of a JobNet from the run list; it appears and progresses live to Succeeded
without a reload."""

from __future__ import annotations

import pytest

from tests.console.browser import Page
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_K01_start_a_run_from_the_run_list_and_watch_it_succeed_live(scenario: Scenario, page: Page) -> None:
    vm = scenario.vm()
    first = scenario.marker_script(vm, "first", 'sleep 2\necho "greeting=$GREETING"\n')
    second = scenario.marker_script(vm, "second", "sleep 1\n")
    scenario.apply(
        [
            {
                "apiVersion": "jobnet.dev/v1alpha1",
                "kind": "JobNet",
                "metadata": {"name": "k01"},
                "spec": {
                    "host": scenario.host(vm),
                    "jobs": [
                        {"name": "first", "script": first},
                        {"name": "second", "script": second, "after": ["first"]},
                    ],
                },
            }
        ]
    )

    page.open("/runs")
    assert "No runs." in page.text("#runs-table")
    page.driver.execute_script("window.notReloaded = true")  # gone if the page ever reloads
    page.find("#start-jobnet").clear()
    page.find("#start-jobnet").send_keys("k01")
    page.find("#start-env").send_keys("GREETING=hello from the console")
    page.click("#start-button")
    notice = page.wait_text("#notice", r"started k01-\w+")
    name = page.text("#notice-link")
    assert name in notice

    row = f'tr[data-run="{name}"]'
    page.wait_text(f"{row} .phase", "Running")
    page.wait_text(f"{row} .phase", "Succeeded", timeout=90)
    assert page.text(f"{row} .progress") == "2/2"
    assert page.driver.execute_script("return window.notReloaded === true"), "the page reloaded"
    assert page.refreshes() >= 2  # the live updates that carried Running and Succeeded

    # Through the monitor to the first job's full output, read from the VM.
    page.click(f"{row} a.run-link")
    page.click('#job-list .vlist-row[data-path="/k01/first"] a')
    page.wait_text("#job-state", "Succeeded")
    page.click("#load-stdout")
    assert page.wait_text("#full-output", "greeting=") == "greeting=hello from the console\n".strip()

    run = scenario.get_run(name)
    assert run["spec"] == {"jobNetRef": "k01", "env": {"GREETING": "hello from the console"}}, run["spec"]
    assert run["status"]["phase"] == "Succeeded"
    assert "greeting=hello from the console" in run["status"]["jobs"]["/k01/first"]["outputTail"]
    assert scenario.script_runs(vm, "first") == 1 and scenario.script_runs(vm, "second") == 1
