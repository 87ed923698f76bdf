"""H08: an invalid cron, an unknown time zone or calendar, or a missing JobNet is refused at
admission with every problem named; deleting a JobNet or JobCalendar that a schedule uses is refused."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess
from tests.support.schedules import API_VERSION, calendar, schedule

pytestmark = pytest.mark.emulator


def test_H08_invalid_schedule_refused_with_every_problem(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    bad = schedule("nightly", "ghost", "0 25 * * *", "@reboot", timeZone="Mars/Olympus", calendarRef="nope")
    result = kubectl_apply(emulator, bad, verb="create")

    assert result.rc == 1
    assert 'admission webhook "jobschedules.validate.jobnet.dev" denied the request' in result.stderr
    assert "JobSchedule 'nightly' is invalid (5 problems)" in result.stderr
    for expected in (
        "spec.schedules[0]: invalid cron expression '0 25 * * *'",
        "spec.schedules[1]: unknown cron macro '@reboot'",
        "spec.timeZone: unknown time zone 'Mars/Olympus'",
        "spec.jobNetRef: JobNet 'ghost' does not exist in this namespace",
        "spec.calendarRef: JobCalendar 'nope' does not exist in this namespace",
    ):
        assert expected in result.stderr
    assert emulator.list_objects(API_VERSION, "jobschedules") == []

    bad_calendar = calendar("holidays", publicHolidays={"country": "XX"})
    result = kubectl_apply(emulator, bad_calendar, verb="create")
    assert result.rc == 1
    assert "spec.publicHolidays: unknown country 'XX'" in result.stderr


def test_H08_deleting_what_a_schedule_uses_is_refused(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    applied = kubectl_apply(
        emulator,
        jobnet("nightly", script_job("load")),
        calendar("business", closedWeekdays=["Saturday", "Sunday"], publicHolidays={"country": "JP"}),
        schedule("nightly", "nightly", "0 2 * * *", timeZone="Asia/Tokyo", calendarRef="business"),
    )
    assert applied.rc == 0, applied.stderr

    result = emulator.kubectl("delete", "jobnets.jobnet.dev", "nightly")
    assert result.rc == 1
    assert "JobNet 'nightly' is still used by JobSchedule/nightly spec.jobNetRef" in result.stderr
    result = emulator.kubectl("delete", "jobcalendar", "business")
    assert result.rc == 1
    assert "JobCalendar 'business' is still used by JobSchedule/nightly spec.calendarRef" in result.stderr
    assert emulator.get(API_VERSION, "jobnets", "default", "nightly") is not None
    assert emulator.get(API_VERSION, "jobcalendars", "default", "business") is not None

    # Once the schedule is gone, both can be deleted.
    assert emulator.kubectl("delete", "jobschedule", "nightly").rc == 0
    assert emulator.kubectl("delete", "jobcalendar", "business").rc == 0
    assert emulator.kubectl("delete", "jobnets.jobnet.dev", "nightly").rc == 0
