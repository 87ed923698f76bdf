"""Examples of the pure schedule core: cron checks, calendars, run names, due/missed plans,
concurrency and history decisions (the slot arithmetic itself is property-tested in
test_schedule_properties.py)."""

from __future__ import annotations

import datetime
import re
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from jobnet.core.calendar import MAX_SHIFT_DAYS, BusinessCalendar, holiday_problem
from jobnet.core.models import NAME_MAX_LENGTH, WEEKDAYS, JobCalendarSpec, JobScheduleSpec
from jobnet.core.schedule import (
    MAX_CATCH_UP,
    RunRecord,
    ScheduleRules,
    Slot,
    concurrency_action,
    cron_problem,
    next_cron_time,
    next_run,
    plan_due,
    resolve_local,
    run_name,
    runs_to_delete,
    schedule_rules,
    upcoming_slots,
    zone_problem,
)
from jobnet.core.schedulevalidation import schedules_using, validate_jobschedule
from jobnet.core.validation import NAME_PATTERN

UTC = datetime.UTC
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 2 * * *", None),
        ("@daily", None),
        ("@Weekly", None),
        ("0 0 29 2 *", None),
        ("0 2 * *", "has 4 fields, expected 5"),
        ("0 0 0 2 * *", "has 6 fields"),
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        ("0 0 30 2 *", "never matches a date"),
        ("@reboot", "unknown cron macro '@reboot'"),
    ],
)
def test_cron_problem(expression: str, problem: str | None) -> None:
    found = cron_problem(expression)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_zone_and_holiday_problems() -> None:
    assert zone_problem("Asia/Tokyo") is None
    assert "unknown time zone 'Asia/Tokio'" in (zone_problem("Asia/Tokio") or "")
    assert "unknown time zone" in (zone_problem("../etc/passwd") or "")
    assert holiday_problem("JP", None) is None and holiday_problem("us", "NY") is None
    assert "unknown subdivision 'ZZ'" in (holiday_problem("JP", "ZZ") or "")


def test_gap_runs_at_the_jump_and_repeat_at_the_first_occurrence() -> None:
    assert resolve_local(datetime.datetime(2027, 3, 14, 2, 30), NEW_YORK).isoformat() == "2027-03-14T03:00:00-04:00"
    assert resolve_local(datetime.datetime(2027, 11, 7, 1, 30), NEW_YORK).isoformat() == "2027-11-07T01:30:00-04:00"
    rules = ScheduleRules(("0,30 2 * * *", "0 3 * * *"), NEW_YORK)
    slots = upcoming_slots(rules, datetime.datetime(2027, 3, 14, 5, tzinfo=UTC), 2)
    assert [slot.run_at.isoformat() for slot in slots] == ["2027-03-14T03:00:00-04:00", "2027-03-15T02:00:00-04:00"]


def test_calendar_precedence_and_reasons() -> None:
    calendar = BusinessCalendar.from_spec(
        JobCalendarSpec(
            closed_weekdays=["Sunday"],
            closed_dates=[datetime.date(2027, 1, 4)],
            open_dates=[datetime.date(2027, 1, 1), datetime.date(2027, 1, 10)],
            public_holidays={"country": "jp"},
            base_time="05:00",
        )
    )
    assert calendar.closure(datetime.date(2027, 1, 1)) is None  # open date beats the holiday
    assert calendar.closure(datetime.date(2027, 1, 10)) is None  # and the closed Sunday
    assert "public holiday in JP (Coming of Age Day)" in calendar.closure(datetime.date(2027, 1, 11)).reason  # type: ignore[union-attr]
    assert "closed date" in calendar.closure(datetime.date(2027, 1, 4)).reason  # type: ignore[union-attr]
    assert "a Sunday, a closed weekday" in calendar.closure(datetime.date(2027, 1, 3)).reason  # type: ignore[union-attr]
    assert calendar.business_date(datetime.datetime(2027, 1, 5, 4, 59)) == datetime.date(2027, 1, 4)
    assert calendar.business_date(datetime.datetime(2027, 1, 5, 5, 0)) == datetime.date(2027, 1, 5)


def test_a_calendar_closing_everything_skips_beyond_the_shift_limit() -> None:
    calendar = JobCalendarSpec(closed_weekdays=list(WEEKDAYS), shift="Next")
    rules = schedule_rules(JobScheduleSpec(job_net_ref="x", schedules=["0 2 * * *"]), calendar)
    slots = upcoming_slots(rules, datetime.datetime(2027, 1, 1, tzinfo=UTC), 2)
    assert all(slot.skipped for slot in slots)
    assert f"no operating day within {MAX_SHIFT_DAYS} days" in (slots[0].note or "")
    assert next_run(rules, datetime.datetime(2027, 1, 1, tzinfo=UTC)) is None


def _slot(minute: int) -> Slot:
    moment = datetime.datetime(2027, 1, 1, tzinfo=UTC) + datetime.timedelta(minutes=minute)
    return Slot(nominal=moment, run_at=moment, business_date=moment.date())


def test_plan_due_deadline_and_catch_up_limit() -> None:
    now = datetime.datetime(2027, 1, 1, 10, tzinfo=UTC)
    slots = [_slot(m) for m in range(0, 600, 60)] + [
        Slot(_slot(1).nominal, _slot(1).run_at, _slot(1).business_date, True, "closed")
    ]
    plan = plan_due(sorted(slots, key=Slot.sort_key), now, datetime.timedelta(hours=3))
    assert [s.run_at.hour for s in plan.due] == [7, 8, 9]
    assert [s.run_at.hour for s in plan.missed] == [0, 1, 2, 3, 4, 5, 6]
    assert len(plan.skipped) == 1
    many = [_slot(m) for m in range(MAX_CATCH_UP + 5)]
    plan = plan_due(many, now, None)
    assert plan.due == many[5:] and plan.missed == many[:5]


def test_run_names_are_dns_labels_of_at_most_63_characters() -> None:
    slot = Slot(
        nominal=datetime.datetime(2027, 1, 2, 2, tzinfo=TOKYO),
        run_at=datetime.datetime(2027, 1, 4, 2, tzinfo=TOKYO),
        business_date=datetime.date(2027, 1, 2),
    )
    assert run_name("nightly", slot) == "nightly-202701020200"
    long_a, long_b = "a" * 60 + "-x", "a" * 60 + "-y"
    names = {run_name(long_a, slot), run_name(long_b, slot)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= NAME_MAX_LENGTH and re.match(NAME_PATTERN, name), name


def test_concurrency_and_history_decisions() -> None:
    running = [RunRecord("a", "Running", "2027-01-01T00:00:00Z")]
    assert concurrency_action("Allow", running) == "create"
    assert concurrency_action("Forbid", running) == "skip"
    assert concurrency_action("Replace", running) == "replace"
    assert concurrency_action("Forbid", []) == "create"
    runs = [
        RunRecord("s1", "Succeeded", "2027-01-01T00:00:00Z"),
        RunRecord("f1", "Failed", "2027-01-01T00:01:00Z"),
        RunRecord("s2", "Succeeded", "2027-01-01T00:02:00Z"),
        RunRecord("r1", "Running", "2027-01-01T00:03:00Z"),
        RunRecord("x1", "Stuck", "2027-01-01T00:03:30Z"),
        RunRecord("st1", "Stopped", "2027-01-01T00:04:00Z"),
        RunRecord("s3", "Succeeded", "2027-01-01T00:05:00Z"),
    ]
    assert runs_to_delete(runs, 1, 1) == ["s1", "s2", "f1"]
    assert runs_to_delete(runs, 0, 0) == ["s1", "s2", "s3", "f1", "st1"]


def test_schedule_validation_and_usage() -> None:
    problems = validate_jobschedule(
        {"jobNetRef": "n", "schedules": ["bad"], "timeZone": "Nowhere", "env": {"JOBNET_X": "1"}, "extra": 1},
        jobnets=set(),
        calendars=set(),
    )
    assert [p.path for p in problems] == [
        "spec.extra",
        "spec.schedules[0]",
        "spec.timeZone",
        "spec.env.JOBNET_X",
        "spec.jobNetRef",
    ]
    specs = {
        "b": JobScheduleSpec(job_net_ref="n", schedules=["@daily"], calendar_ref="cal"),
        "a": JobScheduleSpec(job_net_ref="n", schedules=["@daily"]),
    }
    assert (
        "JobSchedule/a spec.jobNetRef, JobSchedule/b spec.jobNetRef" in schedules_using("JobNet", "n", specs)[0].message
    )
    assert "JobSchedule/b spec.calendarRef" in schedules_using("JobCalendar", "cal", specs)[0].message
    assert schedules_using("JobCalendar", "other", specs) == []


@pytest.mark.parametrize(
    "expression", ["0 3 * * *", "*/7 * * * *", "30 2 29 2 *", "0 9 * * 1-5", "15 1 L * *", "@hourly", "59 23 31 12 *"]
)
def test_next_cron_time_iterates_as_one_croniter_would(expression: str) -> None:
    """The remembered single steps (from any second of a minute) chain to what one croniter
    iterating from the same start yields."""
    start = datetime.datetime(2027, 2, 27, 23, 58, 41, 5)
    iterator = croniter(expression, start)
    expected = [iterator.get_next(datetime.datetime) for _ in range(12)]
    moment, chained = start, []
    for _ in range(12):
        found = next_cron_time(expression, moment)
        assert found is not None
        chained.append(found)
        moment = found + datetime.timedelta(seconds=59)  # any second of the minute found
    assert chained == expected
