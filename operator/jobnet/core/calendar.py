"""Business calendars (JobCalendar): which days are operating days, the business date of a
local time, and the operating day a closed day's slot shifts to.

Pure: no clock is read; public holidays come from the `holidays` package's data (computed per
year, never fetched). The precedence of the rules: an open date wins over everything, then an
explicit closed date, a public holiday and a closed weekday close the day.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import holidays

from jobnet.core.models import WEEKDAYS, JobCalendarSpec

#: The farthest a closed day's slot is shifted to find an operating day; beyond it the slot is skipped.
MAX_SHIFT_DAYS = 31

_ONE_DAY = datetime.timedelta(days=1)


class UnknownHolidays(ValueError):
    """The calendar names a country or subdivision the holidays package does not know."""


def holiday_problem(country: str, subdivision: str | None) -> str | None:
    """Why these public holidays cannot be used (unknown country or subdivision), or None."""
    if country.upper() not in holidays.list_supported_countries():
        return f"unknown country {country!r} for public holidays (use an ISO 3166-1 code such as JP, US, DE)"
    try:
        holidays.country_holidays(country.upper(), subdiv=subdivision)
    except NotImplementedError:  # how the holidays package refuses a subdivision it does not know
        return f"unknown subdivision {subdivision!r} of country {country.upper()!r} for public holidays"
    return None


def parse_base_time(text: str) -> datetime.timedelta:
    """``"05:00"`` -> 5 hours after midnight (the pattern is checked by the model)."""
    hours, minutes = text.split(":")
    return datetime.timedelta(hours=int(hours), minutes=int(minutes))


@dataclass(frozen=True)
class Closure:
    """Why a business date is closed."""

    day: datetime.date
    reason: str


@dataclass(frozen=True)
class BusinessCalendar:
    """A parsed JobCalendar (or the everyday calendar when a schedule names none)."""

    closed_weekdays: frozenset[int] = frozenset()  # datetime.date.weekday() numbers
    closed_dates: frozenset[datetime.date] = frozenset()
    open_dates: frozenset[datetime.date] = frozenset()
    country: str | None = None
    subdivision: str | None = None
    base_time: datetime.timedelta = datetime.timedelta(0)
    shift: str = "Skip"
    # Holidays of each year asked about so far (a cache: the package computes them per year).
    _holiday_years: dict[int, holidays.HolidayBase] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: JobCalendarSpec) -> BusinessCalendar:
        """Raises UnknownHolidays for a country or subdivision the holidays package lacks."""
        country = spec.public_holidays.country.upper() if spec.public_holidays else None
        subdivision = spec.public_holidays.subdivision if spec.public_holidays else None
        if country is not None:
            problem = holiday_problem(country, subdivision)
            if problem:
                raise UnknownHolidays(problem)
        return cls(
            closed_weekdays=frozenset(WEEKDAYS.index(day) for day in spec.closed_weekdays),
            closed_dates=frozenset(spec.closed_dates),
            open_dates=frozenset(spec.open_dates),
            country=country,
            subdivision=subdivision,
            base_time=parse_base_time(spec.base_time),
            shift=spec.shift,
        )

    def _holiday_name(self, day: datetime.date) -> str | None:
        if self.country is None:
            return None
        table = self._holiday_years.get(day.year)
        if table is None:
            table = holidays.country_holidays(self.country, subdiv=self.subdivision, years=day.year)
            self._holiday_years[day.year] = table
        name = table.get(day)
        return None if name is None else str(name)

    def closure(self, day: datetime.date) -> Closure | None:
        """Why business date ``day`` is closed, or None for an operating day."""
        if day in self.open_dates:
            return None
        if day in self.closed_dates:
            return Closure(day, f"{day} is a closed date")
        holiday = self._holiday_name(day)
        if holiday is not None:
            return Closure(day, f"{day} is a public holiday in {self.country} ({holiday})")
        if day.weekday() in self.closed_weekdays:
            return Closure(day, f"{day} is a {WEEKDAYS[day.weekday()]}, a closed weekday")
        return None

    def business_date(self, local: datetime.datetime) -> datetime.date:
        """The business date of a local (wall clock) time: its date, or the day before when it is
        earlier than the base time."""
        return (local - self.base_time).date()

    def operating_day(self, day: datetime.date) -> datetime.date | None:
        """The operating day a slot of business date ``day`` runs on under the shift rule: ``day``
        itself when open; for a closed day the nearest operating day before (``Previous``) or
        after (``Next``) within MAX_SHIFT_DAYS; None when it is skipped."""
        if self.closure(day) is None:
            return day
        if self.shift == "Skip":
            return None
        step = -_ONE_DAY if self.shift == "Previous" else _ONE_DAY
        candidate = day
        for _ in range(MAX_SHIFT_DAYS):
            candidate += step
            if self.closure(candidate) is None:
                return candidate
        return None

    def closed_run_length(self, day: datetime.date, direction: int) -> int:
        """How many consecutive closed days there are from ``day`` (excluded) going back
        (``direction`` -1) or forward (+1), at most MAX_SHIFT_DAYS: how far slots may have been
        shifted into ``day`` from."""
        count = 0
        candidate = day
        while count < MAX_SHIFT_DAYS:
            candidate += _ONE_DAY * direction
            if self.closure(candidate) is None:
                break
            count += 1
        return count


EVERY_DAY = BusinessCalendar()
