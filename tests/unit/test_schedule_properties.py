"""Property tests of the pure slot computation (cron x zone x calendar x base time) against a
brute-force reference that walks the window minute by minute.

The reference defines a slot's instant as *the first UTC minute whose wall-clock time is at or
past the cron time* (which is the first occurrence of a repeated time, and the moment the clocks
jump for a skipped one), with cron matching done on croniter's parsed fields, one minute at a
time. Examples are derandomized: the same dates are tried on every run.
"""

from __future__ import annotations

import datetime
import functools
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jobnet.core.calendar import BusinessCalendar
from jobnet.core.models import WEEKDAYS, JobCalendarSpec
from jobnet.core.schedule import UTC, ScheduleRules, Slot, due_and_next, next_run, slots_between

MINUTE = datetime.timedelta(minutes=1)
DAY = datetime.timedelta(days=1)

#: Zones with daylight saving in either hemisphere, half-hour and 45-minute offsets, far from UTC.
ZONES = [
    "UTC",
    "Asia/Tokyo",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "America/St_Johns",
]
CRONS = [
    "0 2 * * *",
    "30 2 * * *",
    "*/20 1-3 * * *",
    "0 * * * *",
    "15 0 29 2 *",
    "0 0 1 1 *",
    "59 23 31 12 *",
    "0 9 * * 1-5",
    "30 1 1,15 * 0",
    "@daily",
    "@hourly",
]
PROFILE = settings(derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class BruteCron:
    """Minute-by-minute cron matching on croniter's parsed fields (Vixie cron's day rule:
    day-of-month OR day-of-week when both are restricted)."""

    def __init__(self, expression: str) -> None:
        fields, _ = croniter.expand(expression)
        self.minutes, self.hours, self.days, self.months, self.weekdays = (
            None if values == ["*"] else {7 if v == 7 else v for v in values} for values in fields
        )
        if self.weekdays is not None and 7 in self.weekdays:
            self.weekdays = (self.weekdays - {7}) | {0}

    def match(self, local: datetime.datetime) -> bool:
        if self.minutes is not None and local.minute not in self.minutes:
            return False
        if self.hours is not None and local.hour not in self.hours:
            return False
        if self.months is not None and local.month not in self.months:
            return False
        cron_weekday = (local.weekday() + 1) % 7  # cron: 0 = Sunday
        day_ok = self.days is None or local.day in self.days
        weekday_ok = self.weekdays is None or cron_weekday in self.weekdays
        if self.days is not None and self.weekdays is not None:
            return day_ok or weekday_ok
        return day_ok and weekday_ok


def wall(moment: datetime.datetime, zone: ZoneInfo) -> datetime.datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def brute_instants(
    crons: list[BruteCron], zone: ZoneInfo, start: datetime.datetime, end: datetime.datetime
) -> dict[datetime.datetime, datetime.datetime]:
    """Walk the UTC minutes in (start, end]: cron time -> the first UTC minute whose wall clock
    is at or past it (only the times first reached within the walk)."""
    found = {}
    high = wall(start, zone)
    moment = start + MINUTE
    while moment <= end:
        local = wall(moment, zone)
        if local > high:
            candidate = high + MINUTE
            while candidate <= local:
                if any(cron.match(candidate) for cron in crons):
                    found[candidate] = moment
                candidate += MINUTE
            high = local
        moment += MINUTE
    return found


def first_reached(local: datetime.datetime, zone: ZoneInfo) -> datetime.datetime:
    """The first UTC minute whose wall clock is at or past ``local`` (by walking)."""
    moment = local.replace(tzinfo=UTC) - datetime.timedelta(hours=15)
    while wall(moment, zone) < local:
        moment += MINUTE
    return moment


def brute_slots(rules: ScheduleRules, after: datetime.datetime, until: datetime.datetime, margin_days: int):
    """The reference: every cron time reached in a walk widened by ``margin_days`` each side (at
    least one, so that a repeated hour at the window's start is known to have been reached before),
    the calendar applied day by day, kept when its run time is in (after, until]."""
    crons = [BruteCron(expression) for expression in rules.expressions]
    calendar = rules.calendar
    result = set()
    instants = brute_instants(crons, rules.zone, after - margin_days * DAY, until + margin_days * DAY)
    seen = set()
    for local, nominal in sorted(instants.items()):
        if nominal in seen:
            continue  # several cron times skipped by one jump: one slot
        seen.add(nominal)
        business = (local - calendar.base_time).date()
        run_at = nominal
        skipped = False
        if calendar.closure(business) is not None:
            operating = None
            if calendar.shift != "Skip":
                step = DAY if calendar.shift == "Next" else -DAY
                day = business
                for _ in range(31):
                    day += step
                    if calendar.closure(day) is None:
                        operating = day
                        break
            if operating is None:
                skipped = True
            else:
                run_at = first_reached(local + (operating - business), rules.zone)
        if after < run_at <= until:
            result.add((run_at.astimezone(UTC), nominal.astimezone(UTC), business, skipped))
    return result


def as_tuples(slots: list[Slot]) -> set[tuple[datetime.datetime, datetime.datetime, datetime.date, bool]]:
    return {(s.run_at.astimezone(UTC), s.nominal.astimezone(UTC), s.business_date, s.skipped) for s in slots}


moments = st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2040, 12, 31)).map(
    lambda moment: moment.replace(second=0, microsecond=0, tzinfo=UTC)
)


@st.composite
def near_transitions(draw: st.DrawFn) -> datetime.datetime:
    """A moment within a day of a daylight-saving transition of America/New_York or Europe/London,
    of a leap day, or of a year's end."""
    year = draw(st.integers(2001, 2039))
    anchors = [
        datetime.datetime(year, 3, 8, 7, tzinfo=UTC),  # New York's spring gap lies within the week
        datetime.datetime(year, 11, 1, 6, tzinfo=UTC),  # its repeated hour
        datetime.datetime(year, 3, 25, 1, tzinfo=UTC),  # London's
        datetime.datetime(year, 10, 25, 1, tzinfo=UTC),
        datetime.datetime(year, 2, 28, 12, tzinfo=UTC),
        datetime.datetime(year, 12, 31, 12, tzinfo=UTC),
        datetime.datetime(year, 4, 1, 16, tzinfo=UTC),  # Sydney's repeated hour
        datetime.datetime(year, 10, 1, 16, tzinfo=UTC),  # Sydney's gap
    ]
    anchor = draw(st.sampled_from(anchors))
    offset = draw(st.integers(-2 * 24 * 60, 8 * 24 * 60))
    return anchor + offset * MINUTE


DST_ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Australia/Lord_Howe", "Pacific/Chatham"]


@functools.cache
def transitions(zone: str, year: int) -> list[datetime.datetime]:
    """The instants (to the hour) where ``zone``'s UTC offset changes in ``year``, found by walking."""
    tz = ZoneInfo(zone)
    moment = datetime.datetime(year, 1, 1, tzinfo=UTC)
    found = []
    offset = moment.astimezone(tz).utcoffset()
    while moment.year == year:
        moment += datetime.timedelta(hours=1)
        now = moment.astimezone(tz).utcoffset()
        if now != offset:
            found.append(moment)
            offset = now
    return found


@PROFILE
@given(
    zone=st.sampled_from(DST_ZONES),
    year=st.integers(2001, 2039),
    which=st.integers(0, 1),
    before=st.integers(0, 30 * 60),
    hours=st.integers(1, 36),
    expressions=st.lists(st.sampled_from(CRONS), min_size=1, max_size=2, unique=True),
)
def test_slots_across_daylight_saving_transitions(
    zone: str, year: int, which: int, before: int, hours: int, expressions: list[str]
) -> None:
    changes = transitions(zone, year)
    start = changes[which % len(changes)] - before * MINUTE
    rules = ScheduleRules(tuple(expressions), ZoneInfo(zone))
    until = start + hours * datetime.timedelta(hours=1)
    assert as_tuples(slots_between(rules, start, until)) == brute_slots(rules, start, until, margin_days=1)


@PROFILE
@given(
    start=st.one_of(moments, near_transitions()),
    hours=st.integers(1, 48),
    zone=st.sampled_from(ZONES),
    expressions=st.lists(st.sampled_from(CRONS), min_size=1, max_size=2, unique=True),
)
def test_slots_match_a_minute_by_minute_walk(
    start: datetime.datetime, hours: int, zone: str, expressions: list[str]
) -> None:
    rules = ScheduleRules(tuple(expressions), ZoneInfo(zone))
    until = start + hours * datetime.timedelta(hours=1)
    assert as_tuples(slots_between(rules, start, until)) == brute_slots(rules, start, until, margin_days=1)


closed_dates = st.lists(st.dates(datetime.date(2000, 1, 1), datetime.date(2040, 12, 31)), max_size=3)


@st.composite
def calendars(draw: st.DrawFn, near: datetime.datetime) -> BusinessCalendar:
    """A calendar with at most two closed weekdays, closed and open dates near ``near``, maybe
    Japan's public holidays, any base time and shift rule."""
    day = near.date()
    spread = st.integers(-6, 6).map(lambda n: day + n * DAY)
    spec = JobCalendarSpec(
        closed_weekdays=draw(st.lists(st.sampled_from(WEEKDAYS), max_size=2, unique=True)),
        closed_dates=draw(st.lists(spread, max_size=3)),
        open_dates=draw(st.lists(spread, max_size=1)),
        public_holidays={"country": "JP"} if draw(st.booleans()) else None,
        base_time=f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 30, 59])):02d}",
        shift=draw(st.sampled_from(["Skip", "Previous", "Next"])),
    )
    return BusinessCalendar.from_spec(spec)


@settings(PROFILE, max_examples=25)
@given(data=st.data(), start=st.one_of(moments, near_transitions()), hours=st.integers(1, 72))
def test_calendar_slots_match_a_day_by_day_reference(data: st.DataObject, start: datetime.datetime, hours: int) -> None:
    calendar = data.draw(calendars(start))
    zone = data.draw(st.sampled_from(["Asia/Tokyo", "America/New_York", "Australia/Sydney", "UTC"]))
    expressions = data.draw(
        st.lists(
            st.sampled_from(["0 2 * * *", "30 23 * * *", "0 9 * * 1-5", "@daily"]), min_size=1, max_size=2, unique=True
        )
    )
    rules = ScheduleRules(tuple(expressions), ZoneInfo(zone), calendar)
    until = start + hours * datetime.timedelta(hours=1)
    margin = 8  # the reference widens by this many days: enough while closed runs stay shorter
    assume(
        max(calendar.closed_run_length((start - margin * DAY).date() + n * DAY, 1) for n in range(2 * margin))
        < margin - 2
    )
    assert as_tuples(slots_between(rules, start, until)) == brute_slots(rules, start, until, margin_days=margin)


def some_rules(data: st.DataObject, near: datetime.datetime) -> ScheduleRules:
    """Rules with any calendar near ``near``, any zone, one or two of a few expressions."""
    calendar = data.draw(calendars(near))
    zone = data.draw(st.sampled_from(ZONES))
    expressions = data.draw(
        st.lists(
            st.sampled_from(["0 2 * * *", "30 2 * * *", "*/20 1-3 * * *", "0 9 * * 1-5", "30 1 1,15 * 0", "@hourly"]),
            min_size=1,
            max_size=2,
            unique=True,
        )
    )
    return ScheduleRules(tuple(expressions), ZoneInfo(zone), calendar)


@settings(PROFILE, max_examples=30)
@given(data=st.data(), start=st.one_of(moments, near_transitions()))
def test_next_run_is_the_first_runnable_slot_of_a_long_window(data: st.DataObject, start: datetime.datetime) -> None:
    """next_run searches windows from a guess at the next cron time: whatever the guess, it finds
    the slot that one long window holds first (calendar shifts and skips, DST, any zone)."""
    rules = some_rules(data, start)
    runnable = [slot for slot in slots_between(rules, start, start + 40 * DAY) if not slot.skipped]
    assume(runnable)
    assert next_run(rules, start) == runnable[0]


@settings(PROFILE, max_examples=30)
@given(data=st.data(), cursor=st.one_of(moments, near_transitions()), hours=st.integers(-3, 72))
def test_due_and_next_are_the_slots_since_the_cursor_and_the_next_run(
    data: st.DataObject, cursor: datetime.datetime, hours: int
) -> None:
    """One search gives what slots_between (since the cursor, none when the clock is behind it)
    and a long window's first runnable slot after now give."""
    rules = some_rules(data, cursor)
    now = cursor + hours * datetime.timedelta(hours=1)
    runnable = [slot for slot in slots_between(rules, now, now + 40 * DAY) if not slot.skipped]
    assume(runnable)
    assert due_and_next(rules, cursor, now) == (slots_between(rules, cursor, now), runnable[0])
