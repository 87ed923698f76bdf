"""H03 with two replicas: the leader is killed right after it created a slot's run (before the
run was started, or before the schedule's status recorded the slot): the replica that takes over
creates no second run for that slot, and starts the one that exists."""

from __future__ import annotations

import datetime

import pytest

from tests.support.fakeclock import requires_faketime
from tests.support.replicas import TAKEOVER, start_replicas, stop_replicas, wait_to_lead
from tests.support.scenario import Scenario
from tests.support.schedules import API_VERSION, ScheduleWorld, jobnet, next_local, schedule

pytestmark = [pytest.mark.emulator, pytest.mark.vm, requires_faketime]
UTC = datetime.UTC
SECOND = datetime.timedelta(seconds=1)


def test_H03_leader_killed_around_a_slots_creation_one_run_for_the_slot(scenario: Scenario) -> None:
    slot = next_local(UTC, 3)
    world = ScheduleWorld(scenario, slot - 30 * SECOND)
    vm = scenario.vm()
    job = scenario.marker_script(vm, "nightly")
    leader, other = replicas = start_replicas(scenario, 2, *world.operator_args, environment=world.clock.environment)
    try:
        world.apply(
            jobnet("nightly", scenario.host(vm), [{"name": "work", "script": job}]),
            schedule("nightly", "nightly", "0 3 * * *"),
        )
        world.settle("nightly")
        before = world.status("nightly").get("lastScheduleTime")

        world.clock.set(slot + SECOND)
        name = f"nightly-{slot:%Y%m%d%H%M}"
        assert world.wait_runs("nightly", 1) == [name]
        leader.process.kill()
        # Whether or not the kill came before the schedule's status was written: as if it did.
        body = scenario.emulator.get(API_VERSION, "jobschedules", "default", "nightly")
        assert body is not None
        body["status"] = {**(body.get("status") or {}), "lastScheduleTime": before}
        scenario.emulator.put(body)

        wait_to_lead(other, timeout=TAKEOVER)
        other.wait_log(rf"JobRun {name} exists already")
        world.settle("nightly")
        scenario.wait_phase(name, "Succeeded", timeout=60)
    finally:
        stop_replicas(replicas)
    assert world.run_names("nightly") == [name]
    assert scenario.script_runs(vm, "nightly") == 1
    assert f"created JobRun {name}" in leader.log() and f"created JobRun {name}" not in other.log()
