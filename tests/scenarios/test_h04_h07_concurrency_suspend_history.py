"""H04: ``concurrencyPolicy: Forbid`` while the previous run is still running: the slot is skipped
with an Event; ``Replace``: the previous run is stopped (as by a stop of ``/``) and the new one
starts; ``Allow``: both run.

H07: ``suspend: true`` creates nothing; unsuspending does not create a burst of old runs beyond
``startingDeadlineSeconds``; history limits delete old finished runs (never a running one).

The operator's clock jumps by a minute while jobs run, so its heartbeat deadline is made longer
than any jump (the agents' heartbeats are on real time)."""

from __future__ import annotations

import datetime

import pytest

from tests.support.fakeclock import requires_faketime
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.schedules import ScheduleWorld, jobnet, schedule

pytestmark = [pytest.mark.emulator, pytest.mark.vm, requires_faketime]
UTC = datetime.UTC
SECOND = datetime.timedelta(seconds=1)
MINUTE = datetime.timedelta(minutes=1)
LONG_HEARTBEAT = "--heartbeat-deadline=3600"


def _minutes(count: int) -> tuple[datetime.datetime, str]:
    """The first of ``count`` consecutive minutes starting three minutes from now, and a cron
    expression matching exactly those minutes (of any hour: the test ends well within one). The
    fake clock starts at the real time, so no slot falls between the schedules' creation (on the
    API server's real clock) and the first of them."""
    first = (datetime.datetime.now(UTC) + 3 * MINUTE).replace(second=0, microsecond=0)
    minutes = ",".join(str((first + n * MINUTE).minute) for n in range(count))
    return first, f"{minutes} * * * *"


def test_H04_forbid_replace_allow(scenario: Scenario) -> None:
    first, cron = _minutes(2)
    world = ScheduleWorld(scenario, datetime.datetime.now(UTC), LONG_HEARTBEAT)
    vm = scenario.vm()
    job = scenario.marker_script(vm, "long", "sleep 300\n")
    world.apply(
        jobnet("long", scenario.host(vm), [{"name": "work", "script": job}]),
        *(
            schedule(policy.lower(), "long", cron, concurrencyPolicy=policy)
            for policy in ("Forbid", "Replace", "Allow")
        ),
    )
    world.clock.set(first + SECOND)
    firsts = {policy: f"{policy}-{first:%Y%m%d%H%M}" for policy in ("forbid", "replace", "allow")}
    for policy, run in firsts.items():
        assert world.wait_runs(policy, 1) == [run]
        scenario.wait_job_state(run, "/long/work", "Running", timeout=60)

    second = first + MINUTE
    world.clock.set(second + SECOND)
    for policy in ("forbid", "replace", "allow"):
        world.settle(policy)
    # Forbid: skipped, with an Event; the first run goes on.
    skipped = world.wait_event("forbid", "SlotSkipped")
    assert f"run {firsts['forbid']} is still active (concurrencyPolicy Forbid)" in skipped["message"]
    assert world.run_names("forbid") == [firsts["forbid"]]
    assert scenario.status(firsts["forbid"])["phase"] == "Running"
    # Replace: the first run is stopped as by a stop of /, the new one runs.
    replacement = f"replace-{second:%Y%m%d%H%M}"
    assert world.run_names("replace") == [firsts["replace"], replacement]
    scenario.wait_phase(firsts["replace"], "Stopped", timeout=60)
    assert scenario.status(firsts["replace"])["stopScopes"] == ["/long"]  # the whole run
    scenario.wait_job_state(replacement, "/long/work", "Running", timeout=60)
    # Allow: both run.
    both = world.run_names("allow")
    assert both == [firsts["allow"], f"allow-{second:%Y%m%d%H%M}"]
    scenario.wait_job_state(both[1], "/long/work", "Running", timeout=60)
    assert scenario.status(both[0])["phase"] == "Running"


def _ready_reason(world: ScheduleWorld) -> str | None:
    conditions = world.status("tick").get("conditions") or [{}]
    return conditions[0].get("reason")


def test_H07_suspend_unsuspend_and_history_limits(scenario: Scenario) -> None:
    first, cron = _minutes(8)
    world = ScheduleWorld(scenario, datetime.datetime.now(UTC), LONG_HEARTBEAT)
    vm = scenario.vm()
    hold = vm.home / "hold"
    job = scenario.marker_script(vm, "tick", f"while [ -e {hold} ]; do sleep 0.2; done\n")
    world.apply(
        jobnet("tick", scenario.host(vm), [{"name": "work", "script": job}]),
        schedule(
            "tick",
            "tick",
            cron,
            suspend=True,
            startingDeadlineSeconds=90,
            successfulRunsHistoryLimit=1,
            failedRunsHistoryLimit=1,
        ),
    )
    # Suspended across six slots: nothing.
    world.clock.set(first + 5 * MINUTE + 10 * SECOND)
    wait_until(
        lambda: _ready_reason(world) == "Suspended",
        timeout=20,
        what="condition Suspended",
        describe=lambda: world.describe("tick"),
    )
    assert world.runs("tick") == []

    # Unsuspended: only the slots within the 90 s deadline run (the last two), the rest are missed.
    patched = scenario.kubectl("patch", "jobschedule", "tick", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    assert patched.rc == 0, patched.stderr
    expected = [f"tick-{first + n * MINUTE:%Y%m%d%H%M}" for n in (4, 5)]
    assert world.wait_runs("tick", 2) == expected
    world.settle("tick")
    assert world.run_names("tick") == expected
    late = [first + n * MINUTE for n in range(4)]
    missed = world.wait_event("tick", "MissedSchedule")
    assert missed["message"].startswith(f"{len(late)} slot(s) not run, more than startingDeadlineSeconds (90) late")
    assert world.status("tick")["missedSlots"] == len(late)

    # History: one succeeded run kept; a running one is never deleted.
    # The older run may already be gone by the history limit once the newer one succeeded (limits
    # delete only finished runs): its RunSucceeded Event outlives it.
    scenario.wait_phase(expected[-1], "Succeeded", timeout=60)
    scenario.wait_event(expected[0], "RunSucceeded", timeout=60)
    wait_until(
        lambda: world.run_names("tick") == expected[1:],
        timeout=20,
        what="older succeeded run deleted",
        describe=lambda: world.describe("tick"),
    )
    hold.write_text("")
    running = f"tick-{first + 6 * MINUTE:%Y%m%d%H%M}"
    world.clock.set(first + 6 * MINUTE + SECOND)
    world.wait_runs("tick", 2)
    scenario.wait_job_state(running, "/tick/work", "Running", timeout=60)
    world.clock.set(first + 7 * MINUTE + SECOND)
    newest = f"tick-{first + 7 * MINUTE:%Y%m%d%H%M}"
    wait_until(
        lambda: newest in world.run_names("tick"),
        timeout=20,
        what=f"run {newest}",
        describe=lambda: world.describe("tick"),
    )
    world.settle("tick")
    assert running in world.run_names("tick")  # running: kept whatever the limits
    hold.unlink()
    scenario.wait_phase(running, "Succeeded", timeout=60)
    scenario.wait_phase(newest, "Succeeded", timeout=60)
    wait_until(
        lambda: world.run_names("tick") == [newest],
        timeout=20,
        what="only the newest succeeded run kept",
        describe=lambda: world.describe("tick"),
    )
