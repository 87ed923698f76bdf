"""``kubectl jobnet next`` and ``kubectl jobnet run`` against the API emulator (admission is the
operator's and not part of these tests)."""

from __future__ import annotations

import datetime

from tests.plugin.conftest import Cli
from tests.support.kube import GROUP_VERSION, kubectl_apply
from tests.support.schedules import calendar, schedule


def _apply_business_schedule(cli: Cli) -> None:
    result = kubectl_apply(
        cli.emulator,
        calendar(
            "business",
            closedWeekdays=["Saturday", "Sunday"],
            closedDates=["2027-01-05"],
            publicHolidays={"country": "JP"},
            baseTime="05:00",
            shift="Next",
        ),
        calendar("skip-weekends", closedWeekdays=["Saturday", "Sunday"]),
        schedule(
            "nightly", "nightly", "0 2 * * *", timeZone="Asia/Tokyo", calendarRef="business", env={"MODE": "full"}
        ),
        schedule("weekly", "nightly", "0 9 * * *", timeZone="Asia/Tokyo", calendarRef="skip-weekends"),
    )
    assert result.rc == 0, result.stderr


def test_next_lists_slots_with_shifts_and_skips(cli: Cli) -> None:
    _apply_business_schedule(cli)
    code, out, err = cli.run("next", "nightly", "--count", "5", "--from", "2027-01-01T00:00:00+09:00")
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["SLOT", "RUNS", "AT", "BUSINESS", "DATE", "NOTE"]
    # Base time 05:00: 02:00 on the 1st belongs to Thursday the 31st, an operating day.
    assert lines[1] == ["2027-01-01T02:00:00+09:00", "2027-01-01T02:00:00+09:00", "2026-12-31"]
    # New Year's Day and the weekend shift to Monday the 4th, whose 02:00 is early on the 5th.
    assert lines[2][:3] == ["2027-01-02T02:00:00+09:00", "2027-01-05T02:00:00+09:00", "2027-01-01"]
    assert " ".join(lines[2][3:]) == "shifted to 2027-01-04: 2027-01-01 is a public holiday in JP (New Year's Day)"
    assert " ".join(lines[3][3:]) == "shifted to 2027-01-04: 2027-01-02 is a Saturday, a closed weekday"
    assert lines[5] == ["2027-01-05T02:00:00+09:00", "2027-01-05T02:00:00+09:00", "2027-01-04"]
    code, out, _ = cli.run("next", "nightly", "--count", "6", "--from", "2027-01-01T00:00:00+09:00")
    # The closed 5th shifts to Wednesday the 6th.
    assert out.splitlines()[6].split()[:4] == [
        "2027-01-06T02:00:00+09:00",
        "2027-01-07T02:00:00+09:00",
        "2027-01-05",
        "shifted",
    ]

    code, out, _ = cli.run("next", "weekly", "--count", "3", "--from", "2027-01-08T10:00:00+09:00")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows[0][:4] == ["2027-01-09T09:00:00+09:00", "-", "2027-01-09", "skipped:"]
    assert "(shift Skip)" in out and rows[2][0] == "2027-01-11T09:00:00+09:00"


def test_next_of_a_missing_schedule_says_so(cli: Cli) -> None:
    code, _, err = cli.run("next", "ghost")
    assert code == 1
    assert "jobschedules/ghost" in err and "404" in err


def test_run_starts_a_jobnet_or_a_schedule_by_hand(cli: Cli) -> None:
    _apply_business_schedule(cli)
    code, out, err = cli.run("run", "nightly", "--env", "MODE=x")
    assert code == 1 and "both a JobSchedule and a JobNet are named 'nightly'" in err

    code, out, err = cli.run("run", "jobschedule/nightly", "--env", "EXTRA=1")
    assert code == 0, err
    name = out.strip().removeprefix("jobrun.jobnet.dev/").removesuffix(" created")
    assert name.startswith("nightly-manual-")
    run = cli.emulator.get(GROUP_VERSION, "jobruns", "default", name)
    assert run is not None
    spec = run["spec"]
    assert spec["jobNetRef"] == "nightly" and spec["env"] == {"MODE": "full", "EXTRA": "1"}
    scheduled = datetime.datetime.fromisoformat(spec["slot"]["scheduledTime"])
    assert scheduled.utcoffset() == datetime.timedelta(hours=9)
    assert abs(scheduled - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)
    assert spec["slot"]["businessDate"] == (scheduled - datetime.timedelta(hours=5)).date().isoformat()

    code, out, err = cli.run("run", "jobnet/nightly", "--env", "MODE=y")
    assert code == 0, err
    name = out.strip().removeprefix("jobrun.jobnet.dev/").removesuffix(" created")
    run = cli.emulator.get(GROUP_VERSION, "jobruns", "default", name)
    assert run is not None and run["spec"] == {"jobNetRef": "nightly", "env": {"MODE": "y"}}

    code, _, err = cli.run("run", "jobnet/nightly", "--env", "JOBNET_RUN=forged")
    assert code == 1 and "'JOBNET_RUN' is reserved" in err
