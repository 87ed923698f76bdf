"""Events are never lost and never posted twice (the gap G04 and G10 had worked around): an Event
the API server does not take is retried until it does; an operator killed between the final
status write and the run's terminal Event posts it once restarted, and a second restart finds it
posted (409 AlreadyExists, no second Event)."""

from __future__ import annotations

import re

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import NAMESPACE, Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

EVENTS = f"/api/v1/namespaces/{NAMESPACE}/events"


def wait_new_log_line(scenario: Scenario, pattern: str, seen: int, timeout: float = 30.0) -> None:
    """Until ``pattern`` matches more lines of the operator log than ``seen`` (the log of every
    start of the operator is one file)."""
    regex = re.compile(pattern)
    wait_until(
        lambda: len(regex.findall(scenario.operator_log())) > seen,
        timeout=timeout,
        what=f"a new {pattern!r} in the operator log",
        describe=scenario.describe,
    )


def test_an_operator_killed_before_the_terminal_event_posts_it_once_restarted(scenario: Scenario) -> None:
    vm = scenario.vm()
    work = scenario.marker_script(vm, "work")
    operator = scenario.start_operator()
    with scenario.emulator.refusing_event_posts("RunSucceeded") as refused:
        run = scenario.run_jobnet("ev", scenario.host(vm), [{"name": "work", "script": work}])
        scenario.wait_phase(run, "Succeeded", timeout=60)  # the final status write is stored
        scenario.wait_operator_log(r"cannot post Event ev-1\.[0-9a-f]{16} \(RunSucceeded\) yet", timeout=30)
        operator.kill()
    assert refused[0] >= 1 and "RunSucceeded" not in scenario.event_reasons(run)

    posted_before = r"Event ev-1\.[0-9a-f]{16} \(RunSucceeded\) was posted before"
    operator.start()
    event = scenario.wait_event(run, "RunSucceeded", timeout=30)
    assert event["message"] == "run is Succeeded: 1 Succeeded", event
    operator.kill()  # and once more: the Event is there, the re-post is a 409
    seen = len(re.findall(posted_before, scenario.operator_log()))
    operator.start()
    wait_new_log_line(scenario, posted_before, seen)
    assert scenario.event_reasons(run).count("RunSucceeded") == 1, scenario.event_reasons(run)
    assert scenario.script_runs(vm, "work") == 1


def test_events_the_api_server_refused_while_the_run_ended_appear_once_after(scenario: Scenario) -> None:
    vm = scenario.vm()
    work = scenario.marker_script(vm, "work", "exit 3\n")
    scenario.start_operator()
    with scenario.emulator.refusing_event_posts("JobFailed", "RunFailed") as refused:
        run = scenario.run_jobnet("ev", scenario.host(vm), [{"name": "work", "script": work}])
        scenario.wait_phase(run, "Failed", timeout=60)
        # Retried (JobFailed first: the run's Events keep their order) while the run is over.
        wait_until(lambda: refused[0] >= 3, timeout=30, what="the JobFailed post refused 3 times")
        assert not {"JobFailed", "RunFailed"} & set(scenario.event_reasons(run))
        # The first post the server takes afterwards is stored, but its answer never arrives.
        lost = scenario.emulator.lose_answers("POST", EVENTS, 1)
    scenario.wait_event(run, "RunFailed", timeout=30)
    reasons = scenario.event_reasons(run)
    assert lost == [1] and reasons.count("JobFailed") == 1 and reasons.count("RunFailed") == 1, reasons
    events = {e["reason"]: e for e in scenario.events(run)}
    assert events["JobFailed"]["metadata"]["name"] != events["RunFailed"]["metadata"]["name"]
    assert scenario.script_runs(vm, "work") == 1
