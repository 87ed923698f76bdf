"""A wall clock the test controls, for the real operator process: libfaketime (Debian package
``faketime``, installed by scripts/setup) preloaded into the operator, reading the time from a
file this class writes. Only wall-clock time is faked (``FAKETIME_DONT_FAKE_MONOTONIC``): asyncio's
timers, timeouts and sleeps stay real, so nothing but the operator's idea of "now" changes.

The operator reads wall time through its one clock (``jobnet.kube.schedules.WallClock``); nothing
test-only is in its code path. After :meth:`set` the faked clock runs on from that moment in real
time.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def missing_faketime() -> str | None:
    """Why the fake clock cannot be used here, or None."""
    if not LIBFAKETIME.exists():
        return f"libfaketime is not installed ({LIBFAKETIME}; Debian package faketime, see scripts/setup)"
    return None


#: Mark of the tests that need the fake clock (they are skipped, saying why, without libfaketime).
requires_faketime = pytest.mark.skipif(missing_faketime() is not None, reason=missing_faketime() or "")


class FakeClock:
    """The operator's wall clock, set by the test (see the module docstring)."""

    def __init__(self, path: Path, start: datetime.datetime) -> None:
        self.path = path
        self.set(start)

    def set(self, moment: datetime.datetime) -> None:
        """From now on the operator's clock reads ``moment`` (and runs on from there)."""
        utc = moment.astimezone(datetime.UTC)
        self.now_set = utc
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(utc.strftime("@%Y-%m-%d %H:%M:%S\n"))
        temporary.replace(self.path)  # atomically: the operator never reads half a timestamp

    @property
    def environment(self) -> dict[str, str]:
        """The operator process's variables that put it on this clock (its zone is UTC, the
        zone the timestamps are written in)."""
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "TZ": "UTC",
        }
