"""G09: the JobRun watch delivers old versions of a run late (held back, then released in order)
after the run finished: the finished run stays finished with its results; no second run loop
starts, no launch is re-sent, no Event is posted twice."""

from __future__ import annotations

import collections
import re

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_G09_old_versions_delivered_after_the_run_finished_change_nothing(scenario: Scenario) -> None:
    vm = scenario.vm()
    first = scenario.marker_script(vm, "first", "sleep 1\n")
    second = scenario.marker_script(vm, "second", "sleep 1\n")
    third = scenario.marker_script(vm, "third", "sleep 1\n")  # the final version comes a second after the held ones
    run = scenario.run_jobnet("g09", scenario.host(vm), [
        {"name": "first", "script": first},
        {"name": "second", "script": second, "after": ["first"]},
        {"name": "third", "script": third, "after": ["second"]},
    ])  # fmt: skip
    # first's script started (its marker), not its Running status: a loaded run saw a 1 s job's
    # Running never stored or never seen (D04's quick, Succeeded with no Running seen in 60 s)
    wait_until(lambda: scenario.script_runs(vm, "first") == 1, timeout=60, what="the script of /g09/first started")

    held = scenario.emulator.hold_watch_events("jobruns", run)
    wait_until(
        lambda: len(held.held) >= 2,
        timeout=30,
        what="two versions of the running run held back",
        describe=lambda: scenario.describe(run),
    )
    held.stop_capturing()  # newer versions flow again; the held ones stay held
    finished = scenario.wait_phase(run, "Succeeded", timeout=60)
    scenario.wait_operator_log(rf"run=default/{run} runtime finished \(phase Succeeded\)", timeout=15)
    scenario.wait_event(run, "RunSucceeded")
    version = scenario.get_run(run)["metadata"]["resourceVersion"]
    events_before = len(scenario.events(run))

    old_phases = {obj["status"]["phase"] for obj in held.held}
    assert old_phases == {"Running"}, old_phases
    # From the release on: a Running version that was not held but came after the run finished
    # (the watch lags behind the loop) is ignored with the same line, before the held ones come.
    log_before_release = len(scenario.operator_log())
    assert held.release() >= 2
    scenario.wait_operator_log(
        rf"run=default/{run} ignoring a watch event of version \d+ \(phase Running\)",
        timeout=15,
        since=log_before_release,
    )

    after = scenario.get_run(run)
    assert after["metadata"]["resourceVersion"] == version, "the finished run was written again"
    assert after["status"] == finished
    for name in ("first", "second", "third"):
        job = finished["jobs"][f"/g09/{name}"]
        assert job["state"] == "Succeeded" and job["attempt"] == 1, (name, job)
        assert scenario.script_runs(vm, name) == 1
    log = scenario.operator_log()
    assert len(re.findall(rf"run=default/{run} runtime started", log)) == 1, log[-3000:]
    assert len(re.findall(r"accepted: script", scenario.agent_log(vm))) == 3
    events = scenario.events(run)
    assert len(events) == events_before
    posted = collections.Counter((e.get("reason"), e.get("message")) for e in events)
    assert all(count == 1 for count in posted.values()), posted
