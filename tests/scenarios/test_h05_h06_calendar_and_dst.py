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
DAY = datetime.timedelta(days=1)
#: The schedules' slots count from their creation, on the API server's real clock, while the test
#: plays next year's dates on its fake clock: a slot of this year still ahead when the test runs
#: (say, in early January) is months late by then, and is missed, never run.
DEADLINE = {"startingDeadlineSeconds": 30 * 86400}


def _next_year(zone: ZoneInfo) -> int:
    """Next year in ``zone``: every date the test plays is after the schedules' creation."""
    return datetime.datetime.now(zone).year + 1


def _weekday_on_or_after(day: datetime.date, weekday: int) -> datetime.date:
    return day + (weekday - day.weekday()) % 7 * DAY


def _slot_of(scenario: Scenario, run: str) -> tuple[str, str]:
    slot = scenario.get_run(run)["spec"]["slot"]
    return slot["scheduledTime"], slot["businessDate"]


def test_H05_closed_days_skip_or_shift_and_base_time(scenario: Scenario) -> None:
    # January of next year in Tokyo: the 1st is New Year's Day, the second Monday Coming of Age Day.
    year = _next_year(TOKYO)
    saturday = _weekday_on_or_after(datetime.date(year, 1, 2), 5)  # the first one after New Year's Day
    monday = saturday + 2 * DAY
    holiday = _weekday_on_or_after(datetime.date(year, 1, 8), 0)  # Coming of Age Day
    world = ScheduleWorld(scenario, datetime.datetime(year, 1, 1, 0, 0, tzinfo=TOKYO))
    vm = scenario.vm()
    report = scenario.write_script(
        vm, "bin/report.sh", f'echo "$JOBNET_SCHEDULE $JOBNET_BUSINESS_DATE" >> {vm.home}/days\n'
    )
    world.apply(
        jobnet("batch", scenario.host(vm), [{"name": "report", "script": report}]),
        calendar("closed-4th", closedDates=[f"{year}-01-04"]),
        calendar("weekdays", closedWeekdays=["Saturday", "Sunday"], shift="Next"),
        calendar("holidays", publicHolidays={"country": "JP"}, shift="Previous"),
        calendar("late-day", baseTime="05:00"),
        schedule("skip", "batch", "0 2 4,5 1 *", timeZone="Asia/Tokyo", calendarRef="closed-4th", **DEADLINE),
        schedule("next", "batch", f"0 2 {saturday.day} 1 *", timeZone="Asia/Tokyo", calendarRef="weekdays", **DEADLINE),
        schedule(
            "previous", "batch", f"0 2 {holiday.day} 1 *", timeZone="Asia/Tokyo", calendarRef="holidays", **DEADLINE
        ),
        schedule("base", "batch", "0 2 5 1 *", timeZone="Asia/Tokyo", calendarRef="late-day", **DEADLINE),
    )
    for name in ("skip", "next", "previous", "base"):
        world.settle(name)
    # Saturday's slot shifted to Monday: not at its own time.
    world.clock.set(datetime.datetime.combine(saturday + DAY, datetime.time(12, 0), tzinfo=TOKYO))
    world.settle("next")
    assert world.runs("next") == []
    assert world.status("next")["nextScheduleTime"] == f"{monday}T02:00:00+09:00"

    world.clock.set(datetime.datetime(year, 1, 15, 0, 0, tzinfo=TOKYO))
    for name in ("skip", "next", "previous", "base"):
        world.settle(name)
    runs = {
        "skip": f"skip-{year}01050200",
        "next": f"next-{saturday:%Y%m%d}0200",
        "previous": f"previous-{holiday:%Y%m%d}0200",
        "base": f"base-{year}01050200",
    }
    # Skip: the closed 4th has no run, the 5th has.
    assert world.run_names("skip") == [runs["skip"]]
    # Next: Saturday runs on Monday, for business date Saturday.
    assert world.run_names("next") == [runs["next"]]
    assert _slot_of(scenario, runs["next"]) == (f"{monday}T02:00:00+09:00", f"{saturday}")
    # Previous: the holiday runs on the Sunday before (only holidays close this calendar).
    assert world.run_names("previous") == [runs["previous"]]
    assert _slot_of(scenario, runs["previous"]) == (f"{holiday - DAY}T02:00:00+09:00", f"{holiday}")
    # Base time 05:00: 02:00 on the 5th belongs to the 4th.
    assert world.run_names("base") == [runs["base"]]
    assert _slot_of(scenario, runs["base"]) == (f"{year}-01-05T02:00:00+09:00", f"{year}-01-04")

    created = world.wait_event("next", "RunCreated")
    assert f"shifted to {monday}: {saturday} is a Saturday, a closed weekday" in created["message"]
    for run in runs.values():
        scenario.wait_phase(run, "Succeeded", timeout=60)
    assert sorted((vm.home / "days").read_text().splitlines()) == [
        f"base {year}-01-04",
        f"next {saturday}",
        f"previous {holiday}",
        f"skip {year}-01-05",
    ]


def test_H06_daylight_saving_gap_and_repeat_run_once(scenario: Scenario) -> None:
    # Next year in New York: on the second Sunday of March at 02:00 EST the clocks jump to 03:00
    # EDT; on the first Sunday of November at 02:00 EDT they go back to 01:00 EST.
    year = _next_year(NEW_YORK)
    spring = _weekday_on_or_after(datetime.date(year, 3, 8), 6)
    autumn = _weekday_on_or_after(datetime.date(year, 11, 1), 6)
    jump = datetime.datetime.combine(spring, datetime.time(7, 0), tzinfo=UTC)  # 02:00 EST = 03:00 EDT
    first_130 = datetime.datetime.combine(autumn, datetime.time(5, 30), tzinfo=UTC)  # 01:30 EDT
    world = ScheduleWorld(scenario, jump - BEFORE_SLOT)
    vm = scenario.vm()
    job = scenario.marker_script(vm, "dst")
    world.apply(
        jobnet("dst", scenario.host(vm), [{"name": "work", "script": job}]),
        schedule("gap", "dst", f"30 2 {spring.day} 3 *", timeZone="America/New_York", **DEADLINE),
        schedule("repeat", "dst", f"30 1 {autumn.day} 11 *", timeZone="America/New_York", **DEADLINE),
    )
    gap, repeat = f"gap-{spring:%Y%m%d}0300", f"repeat-{autumn:%Y%m%d}0130"
    world.settle("gap")
    assert world.status("gap")["nextScheduleTime"] == f"{spring}T03:00:00-04:00"  # 02:30 does not exist
    assert world.runs("gap") == []

    world.clock.set(jump + SECOND)  # 03:00:01 EDT
    assert world.wait_runs("gap", 1) == [gap]
    assert _slot_of(scenario, gap)[0] == f"{spring}T03:00:00-04:00"
    world.clock.set(jump + datetime.timedelta(hours=1))
    world.settle("gap")
    assert world.run_names("gap") == [gap]
    # Before the clock jumps months ahead: a launch still in flight then (the first one installs
    # the agent, seconds under load) would see its answer as overdue and go Stuck.
    scenario.wait_phase(gap, "Succeeded", timeout=60)

    world.clock.set(first_130 + SECOND)  # 01:30:01 EDT, the first 01:30
    assert world.wait_runs("repeat", 1) == [repeat]
    assert _slot_of(scenario, repeat)[0] == f"{autumn}T01:30:00-04:00"
    world.clock.set(first_130 + datetime.timedelta(hours=1, seconds=1))  # 01:30:01 EST, the second
    world.settle("repeat")
    assert world.run_names("repeat") == [repeat]
    scenario.wait_phase(repeat, "Succeeded", timeout=60)
    assert scenario.script_runs(vm, "dst") == 2
