"""The job monitor's full output from the VM (issue 14): a running job's output appears as the job
writes it, without a reload, until the job ends; a large output opens at its end and is paged
back to its first line on request."""

from __future__ import annotations

import pytest

from jobnet.console.output import OUTPUT_PAGE_BYTES
from tests.console.browser import Page
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def _job_monitor(scenario: Scenario, page: Page, vm: NamespaceVM, jobnet: str, body: str, state: str) -> str:
    """Run ``jobnet`` of the one job ``work`` (``body``) on ``vm``, wait until it is ``state``,
    and open its job monitor. Returns the run's name."""
    script = scenario.marker_script(vm, "work", body)
    run = scenario.run_jobnet(jobnet, scenario.host(vm), [{"name": "work", "script": script}])
    path = f"/{jobnet}/work"
    scenario.wait_job_state(run, path, state, timeout=60)
    page.open(f"/runs/default/{run}/job?path={path}")
    page.wait_text("#job-state", state)
    page.driver.execute_script("window.notReloaded = true")  # gone if the page ever reloads
    return run


def test_a_running_jobs_output_appears_live_until_it_ends(scenario: Scenario, page: Page) -> None:
    vm = scenario.vm()
    gate = vm.home / "gate"
    # The job writes a line, waits (bounded) for the test to open the gate, then writes another.
    body = f"""\
        echo "line one"
        for i in $(seq 600); do [ -e {gate} ] && break; sleep 0.1; done
        echo "line two, after the gate"
        """
    run = _job_monitor(scenario, page, vm, "out1", body, "Running")

    page.click("#load-stdout")
    page.wait_text("#full-output", "line one")
    assert "line two" not in page.text("#full-output")
    assert page.attribute(".full-output", "data-done") == ""  # still following

    gate.touch()
    page.wait_text("#full-output", "line two, after the gate", timeout=30)
    page.wait(lambda: page.attribute(".full-output", "data-done") == "1", "the stream to say the job ended", 30)
    assert page.text("#full-output") == "line one\nline two, after the gate"
    assert page.text("#output-status") == "the job ended: this is all of its output"
    assert page.driver.execute_script("return window.notReloaded === true"), "the page reloaded"
    assert page.attribute("#earlier-output", "hidden") is not None  # all of it fits one page
    scenario.wait_phase(run, "Succeeded", timeout=30)


def test_a_large_output_opens_at_its_end_and_pages_back_to_its_start(scenario: Scenario, page: Page) -> None:
    lines = 40_000  # about 230 KB: four pages
    expected = "".join(f"{n}\n" for n in range(1, lines + 1))
    assert len(expected) > 3 * OUTPUT_PAGE_BYTES
    _job_monitor(scenario, page, scenario.vm(), "out2", f"seq {lines}\n", "Succeeded")

    page.click("#load-stdout")
    page.wait(lambda: page.attribute(".full-output", "data-done") == "1", "the last page")
    shown = page.text("#full-output")
    assert shown.endswith(f"\n{lines}") and len(shown) <= OUTPUT_PAGE_BYTES, len(shown)
    assert expected.endswith(shown + "\n") and shown.split("\n")[0].isdigit()  # from a line start

    clicks = 0
    while page.attribute("#earlier-output", "hidden") is None:
        assert clicks < 4, "more pages than the output has"
        before = len(page.text("#full-output"))
        page.click("#earlier-output")
        page.wait(lambda: len(page.text("#full-output")) > before, "an earlier page")  # noqa: B023
        clicks += 1
    assert clicks == 3
    full = page.driver.execute_script("return document.getElementById('full-output').textContent")
    assert full == expected
    assert page.driver.execute_script("return window.notReloaded === true"), "the page reloaded"
