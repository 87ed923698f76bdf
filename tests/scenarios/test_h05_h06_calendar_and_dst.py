"""H05: a calendar closes a slot's day (weekday rule, explicit date, public holiday): with shift
``Skip`` no run; ``Next``/``Previous``: the run happens on the next/previous operating day and the
business date says which day it is for; with a base time of 05:00 a run at 02:00 belongs to the
previous business date.

H06: daylight saving in America/New_York: a slot in the skipped hour runs once at the next valid
instant; a slot in the repeated hour runs once."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.support.fakeclock import requires_faketime
from tests.support.scenario import Scenario
from tests.support.schedules import BEFORE_SLOT, ScheduleWorld, calendar, jobnet, schedule

pytestmark = [pytest.mark.emulator, pytest.mark.vm, requires_faketime]
UTC = datetime.UTC
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
SECOND = datetime.timedelta(seconds=1)


def _slot_of(scenario: Scenario, run: str) -> tuple[str, str]:
    slot = scenario.get_run(run)["spec"]["slot"]
    return slot["scheduledTime"], slot["businessDate"]


def test_H05_closed_days_skip_or_shift_and_base_time(scenario: Scenario) -> None:
    # January 2027 in Tokyo: Fri 1 (New Year's Day), Sat 2, Sun 3, Mon 4, Tue 5, Mon 11 (Coming of Age Day).
    world = ScheduleWorld(scenario, datetime.datetime(2027, 1, 1, 0, 0, tzinfo=TOKYO))
    vm = scenario.vm()
    report = scenario.write_script(
        vm, "bin/report.sh", f'echo "$JOBNET_SCHEDULE $JOBNET_BUSINESS_DATE" >> {vm.home}/days\n'
    )
    world.apply(
        jobnet("batch", scenario.host(vm), [{"name": "report", "script": report}]),
        calendar("closed-4th", closedDates=["2027-01-04"]),
        calendar("weekdays", closedWeekdays=["Saturday", "Sunday"], shift="Next"),
        calendar("holidays", publicHolidays={"country": "JP"}, shift="Previous"),
        calendar("late-day", baseTime="05:00"),
        schedule("skip", "batch", "0 2 4,5 1 *", timeZone="Asia/Tokyo", calendarRef="closed-4th"),
        schedule("next", "batch", "0 2 2 1 *", timeZone="Asia/Tokyo", calendarRef="weekdays"),
        schedule("previous", "batch", "0 2 11 1 *", timeZone="Asia/Tokyo", calendarRef="holidays"),
        schedule("base", "batch", "0 2 5 1 *", timeZone="Asia/Tokyo", calendarRef="late-day"),
    )
    for name in ("skip", "next", "previous", "base"):
        world.settle(name)
    # Saturday's slot shifted to Monday: not at its own time.
    world.clock.set(datetime.datetime(2027, 1, 3, 12, 0, tzinfo=TOKYO))
    world.settle("next")
    assert world.runs("next") == []
    assert world.status("next")["nextScheduleTime"] == "2027-01-04T02:00:00+09:00"

    world.clock.set(datetime.datetime(2027, 1, 12, 0, 0, tzinfo=TOKYO))
    for name in ("skip", "next", "previous", "base"):
        world.settle(name)
    # Skip: the closed 4th has no run, the 5th has.
    assert world.run_names("skip") == ["skip-202701050200"]
    # Next: Saturday the 2nd runs on Monday the 4th, for business date the 2nd.
    assert world.run_names("next") == ["next-202701020200"]
    assert _slot_of(scenario, "next-202701020200") == ("2027-01-04T02:00:00+09:00", "2027-01-02")
    # Previous: the holiday on the 11th runs on Sunday the 10th (only holidays close this calendar).
    assert world.run_names("previous") == ["previous-202701110200"]
    assert _slot_of(scenario, "previous-202701110200") == ("2027-01-10T02:00:00+09:00", "2027-01-11")
    # Base time 05:00: 02:00 on the 5th belongs to the 4th.
    assert world.run_names("base") == ["base-202701050200"]
    assert _slot_of(scenario, "base-202701050200") == ("2027-01-05T02:00:00+09:00", "2027-01-04")

    created = world.wait_event("next", "RunCreated")
    assert "shifted to 2027-01-04: 2027-01-02 is a Saturday, a closed weekday" in created["message"]
    for run in ("skip-202701050200", "next-202701020200", "previous-202701110200", "base-202701050200"):
        scenario.wait_phase(run, "Succeeded", timeout=60)
    assert sorted((vm.home / "days").read_text().splitlines()) == [
        "base 2027-01-04",
        "next 2027-01-02",
        "previous 2027-01-11",
        "skip 2027-01-05",
    ]


def test_H06_daylight_saving_gap_and_repeat_run_once(scenario: Scenario) -> None:
    # 2027-03-14 02:00 EST the clocks jump to 03:00 EDT; 2027-11-07 02:00 EDT they go back to 01:00 EST.
    world = ScheduleWorld(scenario, datetime.datetime(2027, 3, 14, 7, 0, tzinfo=UTC) - BEFORE_SLOT)
    vm = scenario.vm()
    job = scenario.marker_script(vm, "dst")
    world.apply(
        jobnet("dst", scenario.host(vm), [{"name": "work", "script": job}]),
        schedule("gap", "dst", "30 2 14 3 *", timeZone="America/New_York"),
        schedule("repeat", "dst", "30 1 7 11 *", timeZone="America/New_York"),
    )
    world.settle("gap")
    assert world.status("gap")["nextScheduleTime"] == "2027-03-14T03:00:00-04:00"  # 02:30 does not exist
    assert world.runs("gap") == []

    world.clock.set(datetime.datetime(2027, 3, 14, 7, 0, 1, tzinfo=UTC))  # 03:00:01 EDT
    assert world.wait_runs("gap", 1) == ["gap-202703140300"]
    assert _slot_of(scenario, "gap-202703140300")[0] == "2027-03-14T03:00:00-04:00"
    world.clock.set(datetime.datetime(2027, 3, 14, 8, 0, 0, tzinfo=UTC))
    world.settle("gap")
    assert world.run_names("gap") == ["gap-202703140300"]

    world.clock.set(datetime.datetime(2027, 11, 7, 5, 30, 1, tzinfo=UTC))  # 01:30:01 EDT, the first 01:30
    assert world.wait_runs("repeat", 1) == ["repeat-202711070130"]
    assert _slot_of(scenario, "repeat-202711070130")[0] == "2027-11-07T01:30:00-04:00"
    world.clock.set(datetime.datetime(2027, 11, 7, 6, 30, 1, tzinfo=UTC))  # 01:30:01 EST, the second
    world.settle("repeat")
    assert world.run_names("repeat") == ["repeat-202711070130"]
    scenario.wait_phase("gap-202703140300", "Succeeded", timeout=60)
    scenario.wait_phase("repeat-202711070130", "Succeeded", timeout=60)
    assert scenario.script_runs(vm, "dst") == 2
