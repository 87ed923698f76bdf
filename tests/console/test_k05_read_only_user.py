"""K05: a person whose RBAC allows only reading JobRuns sees the screens, but every change is
refused with the API server's own message, and nothing changes in the API."""

from __future__ import annotations

import pytest

from tests.console.browser import Page
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

READER = "carol@example.com"
READ_JOBRUNS = [{"apiGroups": ["jobnet.dev"], "resources": ["jobruns"], "verbs": ["get", "list", "watch"]}]
FORBIDDEN = f'is forbidden: User "{READER}" cannot'


def test_K05_a_reader_sees_the_screens_and_every_change_is_refused(
    scenario: Scenario, console: object, browser: object
) -> None:
    vm, failed = scenario.run_failed_export_chain()
    sleeper = scenario.marker_script(vm, "sleeper", "sleep 60\n")
    running = scenario.run_jobnet("slow", scenario.host(vm), [{"name": "wait", "script": sleeper}])
    scenario.wait_job_state(running, "/slow/wait", "Running", timeout=60)
    before = {name: scenario.get_run(name) for name in (failed, running)}
    page = Page(browser, console(user=READER, rules=READ_JOBRUNS).url)  # type: ignore[operator]

    # The run list: both runs, and the start of a run refused by the server.
    page.open("/runs")
    page.wait_text(f'tr[data-run="{failed}"] .phase', "Failed")
    page.wait_text(f'tr[data-run="{running}"] .phase', "Running")
    assert FORBIDDEN + ' list resource "jobnets"' in page.text(".start .error")
    page.find("#start-jobnet").send_keys("chain")
    page.click("#start-button")
    assert FORBIDDEN + ' create resource "jobruns"' in page.wait_text("#notice.error", "forbidden")

    # The job network monitor of the running run: stopping it is refused.
    page.click(f'tr[data-run="{running}"] a.run-link')
    page.wait_text("#run-phase", "Running")
    page.click("#stop-run")
    page.confirm()
    assert FORBIDDEN + ' patch resource "jobruns"' in page.wait_text("#notice.error", "forbidden")

    # The job monitor of the failed job: it offers a re-run or a bypass; both refused.
    page.open(f"/runs/default/{failed}")
    page.click('#job-list .vlist-row[data-path="/chain/export"] a')
    page.wait_text("#job-state", "Failed")
    for state in ("Succeeded", "Ready"):
        page.driver.execute_script("document.getElementById('notice').textContent = ''")
        page.click(f"#set-{state}")
        page.confirm("trying")
        assert FORBIDDEN + ' patch resource "jobruns"' in page.wait_text("#notice.error", "forbidden")

    # The event list is not theirs to read: the page says so in the server's words.
    page.click("#nav-events")
    assert FORBIDDEN + ' list resource "events"' in page.text("#problem")

    for name, body in before.items():
        now = scenario.get_run(name)
        assert now["metadata"].get("annotations") == body["metadata"].get("annotations"), name
        assert not (now.get("status") or {}).get("overrides") and not (now.get("status") or {}).get("stopScopes")
    assert [
        r["metadata"]["name"] for r in scenario.emulator.list_objects("jobnet.dev/v1alpha1", "jobruns", "default")
    ] == sorted(before)
