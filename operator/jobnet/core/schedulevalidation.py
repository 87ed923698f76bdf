"""Validation of JobSchedules and JobCalendars, shared by the admission webhook, ``jobnet lint``
and the operator (like ``jobnet.core.validation``: every problem is collected, each with its
field path).

- ``validate_jobcalendar(raw)``: the schema, and a public-holiday country the holidays package knows.
- ``validate_jobschedule(raw, jobnets, calendars)``: the schema, every cron expression, the time
  zone, the env names, the JobNet it runs (it exists; the problems of that JobNet are its own
  admission's business) and the calendar it names (it exists).
- ``timing_problems(spec)``: the cron expressions and the time zone alone (what the operator
  re-checks before it computes slots).
- ``schedules_using(kind, name, schedules)``: deleting a JobNet or a JobCalendar that schedules use.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal, TypeVar

from jobnet.core.calendar import holiday_problem
from jobnet.core.models import JobCalendarSpec, JobScheduleSpec
from jobnet.core.schedule import cron_problem, zone_problem
from jobnet.core.validation import Problem, env_problems, parse_spec

SpecT = TypeVar("SpecT", JobCalendarSpec, JobScheduleSpec)


def _parsed(model: type[SpecT], raw_or_spec: object) -> tuple[SpecT | None, list[Problem]]:
    """A spec as given (already parsed) or parsed from a raw mapping, with its schema problems."""
    if isinstance(raw_or_spec, model):
        return raw_or_spec, []
    return parse_spec(model, raw_or_spec)


def validate_jobcalendar(raw_or_spec: object) -> list[Problem]:
    """All problems of a JobCalendar ``spec``."""
    spec, problems = _parsed(JobCalendarSpec, raw_or_spec)
    if spec is not None and spec.public_holidays is not None:
        problem = holiday_problem(spec.public_holidays.country, spec.public_holidays.subdivision)
        if problem:
            problems.append(Problem(path="spec.publicHolidays", message=problem))
    return problems


def timing_problems(spec: JobScheduleSpec) -> list[Problem]:
    """Cron expressions and the time zone that cannot be used."""
    problems = []
    for index, expression in enumerate(spec.schedules):
        problem = cron_problem(expression)
        if problem:
            problems.append(Problem(path=f"spec.schedules[{index}]", message=problem))
    problem = zone_problem(spec.time_zone)
    if problem:
        problems.append(Problem(path="spec.timeZone", message=problem))
    return problems


def validate_jobschedule(raw_or_spec: object, jobnets: Collection[str], calendars: Collection[str]) -> list[Problem]:
    """All problems of a JobSchedule ``spec``; ``jobnets`` and ``calendars`` are the names that
    exist in its namespace."""
    spec, problems = _parsed(JobScheduleSpec, raw_or_spec)
    if spec is None:
        return problems
    problems.extend(timing_problems(spec))
    problems.extend(env_problems(spec.env, "spec.env"))
    if spec.job_net_ref not in jobnets:
        problems.append(
            Problem(path="spec.jobNetRef", message=f"JobNet {spec.job_net_ref!r} does not exist in this namespace")
        )
    if spec.calendar_ref is not None and spec.calendar_ref not in calendars:
        problems.append(
            Problem(
                path="spec.calendarRef", message=f"JobCalendar {spec.calendar_ref!r} does not exist in this namespace"
            )
        )
    return problems


def schedules_using(
    kind: Literal["JobNet", "JobCalendar"], name: str, schedules: Mapping[str, JobScheduleSpec]
) -> list[Problem]:
    """Deleting JobNet or JobCalendar ``name`` is a problem while JobSchedules use it (names them all)."""
    users = sorted(
        schedule
        for schedule, spec in schedules.items()
        if (spec.job_net_ref if kind == "JobNet" else spec.calendar_ref) == name
    )
    if not users:
        return []
    field = "spec.jobNetRef" if kind == "JobNet" else "spec.calendarRef"
    return [
        Problem(
            path="metadata.name",
            message=(
                f"{kind} {name!r} is still used by "
                + ", ".join(f"JobSchedule/{user} {field}" for user in users)
                + ": delete or change those schedules first"
            ),
        )
    ]
