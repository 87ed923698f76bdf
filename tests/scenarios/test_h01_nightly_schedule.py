"""H01: a JobSchedule ``0 2 * * *`` in Asia/Tokyo creates exactly one JobRun per slot, named after
the slot; the jobs see the scheduled time and the business date."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.support.fakeclock import requires_faketime
from tests.support.scenario import Scenario
from tests.support.schedules import BEFORE_SLOT, ScheduleWorld, jobnet, next_local, schedule

pytestmark = [pytest.mark.emulator, pytest.mark.vm, requires_faketime]
TOKYO = ZoneInfo("Asia/Tokyo")
SECOND = datetime.timedelta(seconds=1)


def test_H01_one_run_per_slot_with_scheduled_time_and_business_date(scenario: Scenario) -> None:
    world = ScheduleWorld(scenario, next_local(TOKYO, 2) - BEFORE_SLOT)
    vm = scenario.vm()
    report = scenario.write_script(
        vm,
        "bin/report.sh",
        f'echo "$JOBNET_SCHEDULE $JOBNET_SCHEDULED_TIME $JOBNET_BUSINESS_DATE" >> {vm.home}/slots\n',
    )
    world.apply(
        jobnet("nightly", scenario.host(vm), [{"name": "report", "script": report}]),
        schedule("nightly", "nightly", "0 2 * * *", timeZone="Asia/Tokyo"),
    )
    first = next_local(TOKYO, 2, after=world.created("nightly"))
    world.wait_status("nightly", "nextScheduleTime", first.isoformat())
    assert world.runs("nightly") == []  # nothing before the slot

    world.clock.set(first + SECOND)
    expected = f"nightly-{first:%Y%m%d}0200"
    assert world.wait_runs("nightly", 1) == [expected]
    scenario.wait_phase(expected, "Succeeded", timeout=60)
    run = scenario.get_run(expected)
    assert run["spec"]["slot"] == {
        "schedule": "nightly",
        "scheduledTime": first.isoformat(),
        "businessDate": first.date().isoformat(),
    }
    assert (vm.home / "slots").read_text().splitlines() == [f"nightly {first.isoformat()} {first.date()}"]

    # Later checks of the same moment, and the next day's slot: one more run, no duplicate.
    world.settle("nightly")
    second = first + datetime.timedelta(days=1)
    world.clock.set(second + SECOND)
    names = world.wait_runs("nightly", 2)
    assert names == [expected, f"nightly-{second:%Y%m%d}0200"]
    scenario.wait_phase(names[1], "Succeeded", timeout=60)
    world.settle("nightly")
    assert world.run_names("nightly") == names
    status = world.wait_status("nightly", "lastRunPhase", "Succeeded")
    assert status["lastScheduleTime"] == second.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["lastRun"] == names[1] and status["active"] == []
    assert (vm.home / "slots").read_text().splitlines()[1] == f"nightly {second.isoformat()} {second.date()}"

    table = scenario.kubectl("get", "jobschedules")
    assert table.rc == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "JOBNET", "SCHEDULE", "TIMEZONE", "SUSPEND"]
    assert row.split()[:2] == ["nightly", "nightly"] and "Asia/Tokyo" in row
