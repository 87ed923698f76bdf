"""Schedule slots (JobSchedule): cron expressions x IANA time zone x business calendar -> the
slots in a window of time, each with the instant it runs at, the business date it is for, and
whether (and why) it was shifted or skipped; and which of them are due, missed or pending.

Pure: time is always an argument, nothing here reads a clock. Cron expressions are parsed and
iterated by the `croniter` library over *local wall-clock* times of the schedule's zone; this
module only turns a wall-clock time into an instant:

* a local time that does not exist (the hour skipped when daylight saving starts) runs once, at
  the next valid instant: the moment the clocks jump (so 02:00, 02:30 and 03:00 in New York's
  spring gap all become one slot at 03:00 EDT);
* a local time that exists twice (the hour repeated when daylight saving ends) runs once, at its
  first occurrence.

A slot is identified by its *nominal instant* (the instant of its cron time before any calendar
shift); its JobRun's name is derived from that (:func:`run_name`), so every slot has exactly one
possible name and a second creation is refused by the API server (HTTP 409).
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from jobnet.core.calendar import EVERY_DAY, MAX_SHIFT_DAYS, BusinessCalendar
from jobnet.core.models import NAME_MAX_LENGTH, JobCalendarSpec, JobScheduleSpec

UTC = datetime.UTC

#: The cron macros accepted besides 5-field expressions (``@reboot`` means nothing here).
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: How far ahead an expression must fire at least once (a 29 February falls within 8 years).
CRON_HORIZON = datetime.timedelta(days=8 * 366)
#: At most this many missed slots are started late, oldest first dropped (like CronJob's 100).
MAX_CATCH_UP = 100

#: More than any backward change of a zone's UTC offset since 1970 (3 hours, Antarctica/Casey):
#: the wall clock repeats at most this much (a forward jump only widens the wall-clock window).
ZONE_MARGIN = datetime.timedelta(hours=4)
_ONE_MINUTE = datetime.timedelta(minutes=1)
_ONE_DAY = datetime.timedelta(days=1)
#: ``<schedule>-YYYYMMDDHHMM``: the suffix a run name adds to the schedule's name.
_STAMP_FORMAT = "%Y%m%d%H%M"
_STAMP_LENGTH = 1 + 12


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a usable cron expression, or None."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in CRON_MACROS:
            return f"unknown cron macro {text!r} (use one of {', '.join(CRON_MACROS)})"
        return None
    if len(text.split()) != 5:
        return (
            f"cron expression {expression!r} has {len(text.split())} fields, expected 5 "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        iterator = croniter(text, datetime.datetime(2000, 1, 1))
        first = iterator.get_next(datetime.datetime)
    except CroniterBadDateError:
        return f"cron expression {expression!r} never matches a date"
    except (CroniterBadCronError, ValueError) as e:
        return f"invalid cron expression {expression!r}: {e}"
    if first - datetime.datetime(2000, 1, 1) > CRON_HORIZON:
        return f"cron expression {expression!r} never matches a date"
    return None


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone, or None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (use an IANA name such as Asia/Tokyo or America/New_York)"
    return None


@dataclass(frozen=True)
class Slot:
    """One time a schedule's cron expressions match, with the calendar applied."""

    nominal: datetime.datetime  # the cron time's instant (aware, in the schedule's zone)
    run_at: datetime.datetime  # when it runs (after a shift), or when it would have for a skipped one
    business_date: datetime.date
    skipped: bool = False
    note: str | None = None  # why it was shifted or skipped

    def sort_key(self) -> tuple[datetime.datetime, datetime.datetime]:
        return (self.run_at, self.nominal)


@dataclass(frozen=True)
class ScheduleRules:
    """A JobSchedule's timing: its cron expressions (all valid), zone and calendar."""

    expressions: tuple[str, ...]
    zone: ZoneInfo
    calendar: BusinessCalendar = EVERY_DAY


def schedule_rules(spec: JobScheduleSpec, calendar: JobCalendarSpec | None) -> ScheduleRules:
    """The timing of a valid JobSchedule ``spec`` (see ``timing_problems``) on its calendar
    (None: every day is an operating day). Raises UnknownHolidays for unknown public holidays."""
    business = BusinessCalendar.from_spec(calendar) if calendar is not None else EVERY_DAY
    return ScheduleRules(tuple(spec.schedules), ZoneInfo(spec.time_zone), business)


def manual_slot(rules: ScheduleRules, now: datetime.datetime) -> tuple[datetime.datetime, datetime.date]:
    """The scheduled time and business date of a run started by hand at ``now``."""
    local = now.astimezone(rules.zone).replace(microsecond=0)
    return local, rules.calendar.business_date(local.replace(tzinfo=None))


def resolve_local(local: datetime.datetime, zone: ZoneInfo) -> datetime.datetime:
    """The instant of naive wall-clock time ``local`` in ``zone`` (see the module doc: the first
    occurrence of a repeated time, the moment the clocks jump for a skipped one)."""
    first = local.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local:
        return first.astimezone(zone)
    # In a gap: the transition lies between the instant read with the offset after (fold=1)
    # and the one read with the offset before (fold=0). Find it to the minute by bisection.
    low = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    low, high = min(low, high), max(low, high)
    while high - low > _ONE_MINUTE:
        middle = low + (high - low) / 2
        middle = middle.replace(second=0, microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) > local:
            high = middle
        else:
            low = middle
    return high.astimezone(zone)


@functools.lru_cache(maxsize=4096)
def _parsed_cron(expression: str) -> croniter:
    """``expression`` parsed, to be copied: parsing costs as much as iterating a day of it."""
    return croniter(expression, datetime.datetime(2000, 1, 1))


def _cron_iterator(expression: str, start: datetime.datetime) -> croniter:
    """A croniter of (valid) ``expression`` from naive ``start``, as ``croniter(expression, start)``."""
    iterator = copy.copy(_parsed_cron(expression))
    iterator.set_current(start, force=True)
    return iterator


def next_cron_time(expression: str, after: datetime.datetime) -> datetime.datetime | None:
    """The first naive local time after naive ``after`` that (valid) ``expression`` matches, or
    None past croniter's range."""
    # Cron matches whole minutes: the next one after 02:59:30 is the next one after 02:59.
    return _next_cron_minute(expression, after.replace(second=0, microsecond=0))


@functools.lru_cache(maxsize=16384)
def _next_cron_minute(expression: str, after: datetime.datetime) -> datetime.datetime | None:
    """:func:`next_cron_time` of a whole minute, remembered: a call costs croniter 0.1-0.2 ms,
    and the schedules due at the same minute mostly share their expressions (a nightly batch's
    ``0 3 * * *``), so a burst of them searches each expression's times once."""
    try:
        moment: datetime.datetime = _cron_iterator(expression, after).get_next(datetime.datetime)
    except CroniterBadDateError:
        return None
    return moment


def _cron_times(
    expressions: Sequence[str], start: datetime.datetime, end: datetime.datetime
) -> Iterator[datetime.datetime]:
    """Naive local times matched by any expression, ``start`` < time <= ``end`` (unsorted, with duplicates)."""
    for expression in expressions:
        moment = next_cron_time(expression, start)
        while moment is not None and moment <= end:
            yield moment
            moment = next_cron_time(expression, moment)


def slots_between(rules: ScheduleRules, after: datetime.datetime, until: datetime.datetime) -> list[Slot]:
    """Every slot (skipped ones too) with ``after`` < run_at <= ``until``, ordered by run_at
    (then nominal instant). ``after`` and ``until`` are aware datetimes."""
    zone, calendar = rules.zone, rules.calendar
    local_start = after.astimezone(zone).replace(tzinfo=None)
    local_end = until.astimezone(zone).replace(tzinfo=None)
    # Wall-clock and instant windows differ around offset changes (a repeated hour runs the wall
    # clock backwards): widen by ZONE_MARGIN. Shifted slots run up to MAX_SHIFT_DAYS away from
    # their own day: widen over the closed days next to the window (and a day for the base time).
    back = forward = ZONE_MARGIN
    if calendar.shift == "Next":
        back += (calendar.closed_run_length(calendar.business_date(local_start), -1) + 1) * _ONE_DAY
    elif calendar.shift == "Previous":
        forward += (calendar.closed_run_length(calendar.business_date(local_end), +1) + 1) * _ONE_DAY
    seen: set[datetime.datetime] = set()
    slots = []
    for local in _cron_times(
        rules.expressions, min(local_start, local_end) - back, max(local_start, local_end) + forward
    ):
        nominal = resolve_local(local, zone)
        if nominal in seen:
            continue
        seen.add(nominal)
        slot = _apply_calendar(local, nominal, rules)
        if after < slot.run_at <= until:
            slots.append(slot)
    slots.sort(key=Slot.sort_key)
    return slots


def _apply_calendar(local: datetime.datetime, nominal: datetime.datetime, rules: ScheduleRules) -> Slot:
    calendar = rules.calendar
    business_date = calendar.business_date(local)
    closure = calendar.closure(business_date)
    if closure is None:
        return Slot(nominal=nominal, run_at=nominal, business_date=business_date)
    operating = calendar.operating_day(business_date)
    if operating is None:
        why = "shift Skip" if calendar.shift == "Skip" else f"no operating day within {MAX_SHIFT_DAYS} days"
        return Slot(nominal, nominal, business_date, skipped=True, note=f"skipped: {closure.reason} ({why})")
    run_at = resolve_local(local + (operating - business_date), rules.zone)
    return Slot(nominal, run_at, business_date, note=f"shifted to {operating}: {closure.reason}")


def upcoming_slots(rules: ScheduleRules, after: datetime.datetime, count: int) -> list[Slot]:
    """The first ``count`` slots (skipped ones included) after ``after``: windows that double
    from an hour until enough are found or CRON_HORIZON is searched."""
    window = datetime.timedelta(hours=1)
    while True:
        slots = slots_between(rules, after, after + window)
        if len(slots) >= count or window >= CRON_HORIZON:
            return slots[:count]
        window *= 2


def _first_window(rules: ScheduleRules, after: datetime.datetime) -> datetime.timedelta:
    """How far after ``after`` the next slot probably runs: to the expressions' next wall-clock
    time and an hour more (a guess: an offset change or a calendar shift may put it further)."""
    local = after.astimezone(rules.zone).replace(tzinfo=None)
    nearest = CRON_HORIZON
    for expression in rules.expressions:
        moment = next_cron_time(expression, local)
        if moment is not None:
            nearest = min(nearest, moment - local)
    return nearest + datetime.timedelta(hours=1)


def next_run(rules: ScheduleRules, after: datetime.datetime) -> Slot | None:
    """The next slot after ``after`` that runs (not skipped), or None within CRON_HORIZON:
    searched in windows that double from a guess (:func:`_first_window`)."""
    return due_and_next(rules, after, after)[1]


def due_and_next(
    rules: ScheduleRules, cursor: datetime.datetime, now: datetime.datetime
) -> tuple[list[Slot], Slot | None]:
    """``slots_between(rules, cursor, now)`` and ``next_run(rules, now)`` from one search of the
    cron times (a schedule reconciled at its slot needs both): windows from ``cursor`` (or
    ``now``, the earlier) to ``now`` plus a window that doubles from a guess (:func:`_first_window`)."""
    start = min(cursor, now)
    window = min(_first_window(rules, now), CRON_HORIZON)
    while True:
        slots = slots_between(rules, start, now + window)
        runnable = [slot for slot in slots if slot.run_at > now and not slot.skipped]
        if runnable or window >= CRON_HORIZON:
            return [slot for slot in slots if cursor < slot.run_at <= now], runnable[0] if runnable else None
        window *= 2


@dataclass(frozen=True)
class DuePlan:
    """What to do with the slots that came due since the last one handled."""

    due: list[Slot]  # start these, in order
    missed: list[Slot]  # past the starting deadline (or beyond MAX_CATCH_UP): report, never run
    skipped: list[Slot]  # closed by the calendar


def plan_due(slots: Iterable[Slot], now: datetime.datetime, starting_deadline: datetime.timedelta | None) -> DuePlan:
    """Split the slots that came due (run_at <= now) into due, missed and skipped ones."""
    due, missed, skipped = [], [], []
    for slot in slots:
        if slot.skipped:
            skipped.append(slot)
        elif starting_deadline is not None and now - slot.run_at > starting_deadline:
            missed.append(slot)
        else:
            due.append(slot)
    if len(due) > MAX_CATCH_UP:
        missed = sorted(missed + due[:-MAX_CATCH_UP], key=Slot.sort_key)
        due = due[-MAX_CATCH_UP:]
    return DuePlan(due, missed, skipped)


def run_name(schedule: str, slot: Slot) -> str:
    """The JobRun name of ``slot``: ``<schedule>-YYYYMMDDHHMM`` of its nominal local time, a
    DNS label of at most 63 characters (a long schedule name is cut and made unique again with
    a hash of it)."""
    stamp = slot.nominal.strftime(_STAMP_FORMAT)
    room = NAME_MAX_LENGTH - _STAMP_LENGTH
    if len(schedule) > room:
        digest = hashlib.sha256(schedule.encode()).hexdigest()[:8]
        schedule = schedule[: room - len(digest) - 1].rstrip("-") + "-" + digest
    return f"{schedule}-{stamp}"


def rfc3339(moment: datetime.datetime) -> str:
    """``2026-12-03T02:00:00+09:00`` (with the moment's own offset; ``Z`` for UTC)."""
    text = moment.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_rfc3339(text: str) -> datetime.datetime:
    """An aware datetime from an RFC 3339 timestamp (``Z`` or an offset)."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return moment


#: Run phases after which a run never changes again (Stuck waits for a person: still active).
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Stopped"})


@dataclass(frozen=True)
class RunRecord:
    """What the schedule needs to know of one of its runs."""

    name: str
    phase: str | None  # None until the operator started it
    created: str  # metadata.creationTimestamp (RFC 3339, sorts in time order)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


def concurrency_action(policy: str, active: Sequence[RunRecord]) -> str:
    """For a due slot under ``policy`` (Allow, Forbid, Replace) with these active runs:
    ``create``, ``skip`` (Forbid) or ``replace`` (stop them, then create)."""
    if not active or policy == "Allow":
        return "create"
    return "skip" if policy == "Forbid" else "replace"


def runs_to_delete(runs: Iterable[RunRecord], successful_limit: int, failed_limit: int) -> list[str]:
    """The finished runs beyond the history limits (oldest first); never an active one."""
    finished = sorted((run for run in runs if run.finished), key=lambda run: (run.created, run.name))
    succeeded = [run.name for run in finished if run.phase == "Succeeded"]
    others = [run.name for run in finished if run.phase != "Succeeded"]
    return succeeded[: max(0, len(succeeded) - successful_limit)] + others[: max(0, len(others) - failed_limit)]
