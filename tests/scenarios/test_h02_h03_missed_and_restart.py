"""H02: the operator is down across slots and comes back within ``startingDeadlineSeconds`` of
some: each of those gets exactly one run, in order; a slot past the deadline is reported as missed
(status and Event) and gets none.

H03: the operator is killed right after creating a slot's run and restarted: no second run for
that slot, also when its record of the slot (``status.lastScheduleTime``) never got written; and
with two replicas, the leader is killed there and the other takes over: again one run."""

from __future__ import annotations

import datetime
import re

import pytest

from tests.support.fakeclock import requires_faketime
from tests.support.netutil import wait_until
from tests.support.replicas import TAKEOVER, start_replicas, stop_replicas, wait_to_lead
from tests.support.scenario import Scenario
from tests.support.schedules import API_VERSION, BEFORE_SLOT, ScheduleWorld, jobnet, next_local, schedule
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm, requires_faketime]
UTC = datetime.UTC
SECOND = datetime.timedelta(seconds=1)
HOUR = datetime.timedelta(hours=1)


def _next_hour(after: datetime.datetime) -> datetime.datetime:
    """The first full hour after ``after``."""
    return after.replace(minute=0, second=0, microsecond=0) + HOUR


def test_H02_missed_slots_within_the_deadline_run_once_in_order(scenario: Scenario) -> None:
    world = ScheduleWorld(scenario, _next_hour(datetime.datetime.now(UTC)) - BEFORE_SLOT)
    vm = scenario.vm()
    job = scenario.marker_script(vm, "hourly")
    world.apply(
        jobnet("hourly", scenario.host(vm), [{"name": "work", "script": job}]),
        schedule("hourly", "hourly", "0 * * * *", startingDeadlineSeconds=3 * 3600),
    )
    first = _next_hour(world.created("hourly"))
    world.settle("hourly")
    scenario.operator.stop()  # type: ignore[union-attr]

    # Down across four slots; back 3h10m after the first: it is past the deadline, the others not.
    world.clock.set(first + 3 * HOUR + 10 * 60 * SECOND)
    scenario.operator.start()  # type: ignore[union-attr]
    expected = [f"hourly-{first + n * HOUR:%Y%m%d%H%M}" for n in (1, 2, 3)]
    assert world.wait_runs("hourly", 3) == expected
    world.settle("hourly")
    assert world.run_names("hourly") == expected
    created = re.findall(r"JobSchedule default/hourly created JobRun (\S+)", scenario.operator_log())
    assert created == expected, "the missed slots were created oldest first"

    missed = world.wait_event("hourly", "MissedSchedule")
    assert missed["type"] == "Warning"
    assert "1 slot(s) not run, more than startingDeadlineSeconds (10800) late" in missed["message"]
    assert first.strftime("%Y-%m-%dT%H:%M:%SZ") in missed["message"]
    status = world.status("hourly")
    assert status["missedSlots"] == 1 and status["lastMissedTime"] == first.strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in expected:
        scenario.wait_phase(name, "Succeeded", timeout=60)
    assert scenario.script_runs(vm, "hourly") == 3


def _slot_run_created(scenario: Scenario, world: ScheduleWorld) -> tuple[NamespaceVM, datetime.datetime, str, str]:
    """A schedule at 03:00 UTC, settled; then the clock at its first slot, until its run exists:
    the VM, the slot, the run's name and the schedule's lastScheduleTime before the slot."""
    vm = scenario.vm()
    job = scenario.marker_script(vm, "nightly")
    world.apply(
        jobnet("nightly", scenario.host(vm), [{"name": "work", "script": job}]),
        schedule("nightly", "nightly", "0 3 * * *"),
    )
    slot = next_local(UTC, 3, after=world.created("nightly"))
    world.settle("nightly")
    before = world.status("nightly").get("lastScheduleTime")
    world.clock.set(slot + SECOND)
    name = f"nightly-{slot:%Y%m%d%H%M}"
    assert world.wait_runs("nightly", 1) == [name]
    return vm, slot, name, before


def _as_if_the_slot_was_never_recorded(scenario: Scenario, before: str) -> None:
    """Whether or not a kill came before the schedule's status was written: make it as if it did."""
    body = scenario.emulator.get(API_VERSION, "jobschedules", "default", "nightly")
    assert body is not None
    body["status"] = {**(body.get("status") or {}), "lastScheduleTime": before}
    scenario.emulator.put(body)


def test_H03_no_second_run_after_a_kill_right_after_creating(scenario: Scenario) -> None:
    world = ScheduleWorld(scenario, next_local(UTC, 3) - BEFORE_SLOT)
    vm, slot, name, before = _slot_run_created(scenario, world)
    scenario.operator.kill()  # type: ignore[union-attr]
    _as_if_the_slot_was_never_recorded(scenario, before)

    log_before_restart = len(scenario.operator_log())
    scenario.operator.start()  # type: ignore[union-attr]
    # the restarted operator's line: the killed one logs the same when a round meets the run it
    # created before the slot's status write is stored
    scenario.wait_operator_log(rf"JobRun {name} exists already", since=log_before_restart)
    world.settle("nightly")
    scenario.wait_phase(name, "Succeeded", timeout=60)
    assert world.run_names("nightly") == [name]
    assert scenario.script_runs(vm, "nightly") == 1
    assert world.status("nightly")["lastScheduleTime"] == slot.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_H03_leader_killed_around_a_slots_creation_one_run_for_the_slot(scenario: Scenario) -> None:
    """Two replicas: the leader is killed right after creating the slot's run (perhaps before
    starting it, or recording the slot); the replica that takes over creates no second run for
    the slot and starts the one that exists."""
    world = ScheduleWorld(scenario, next_local(UTC, 3) - BEFORE_SLOT)
    replicas = start_replicas(scenario, 2, *world.operator_args, environment=world.clock.environment)
    try:
        vm, slot, name, before = _slot_run_created(scenario, world)
        # the leader that created it: the first replica, unless a loaded machine handed over meanwhile
        leader = wait_until(
            lambda: next((r for r in replicas if f"created JobRun {name}" in r.log()), None),
            timeout=10,
            what=f"a replica's log says it created {name}",
        )
        other = next(replica for replica in replicas if replica is not leader)
        other_before = len(other.log())  # after a handover in the set-up, it led before: lead again
        leader.process.kill()
        _as_if_the_slot_was_never_recorded(scenario, before)
        wait_to_lead(other, timeout=TAKEOVER, since=other_before)
        other.wait_log(rf"JobRun {name} exists already")
        world.settle("nightly")
        scenario.wait_phase(name, "Succeeded", timeout=60)
    finally:
        stop_replicas(replicas)
    assert world.run_names("nightly") == [name]
    assert scenario.script_runs(vm, "nightly") == 1
    assert f"created JobRun {name}" in leader.log() and f"created JobRun {name}" not in other.log()
