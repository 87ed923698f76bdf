"""The argparse value types every ``jobnet`` command shares: durations refused with a clear message."""

from __future__ import annotations

import argparse

import pytest

from jobnet.argtypes import non_negative_seconds, positive_seconds


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (positive_seconds, "1.5", 1.5),
        (non_negative_seconds, "0", 0.0),
        (non_negative_seconds, "60", 60.0),
    ],
)
def test_durations_accepted(parse: object, text: str, value: float) -> None:
    assert parse(text) == value  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_seconds, "0", "must be a positive number of seconds, not '0'"),
        (positive_seconds, "soon", "not a number of seconds: 'soon'"),
        (non_negative_seconds, "-1", "must be zero or a positive number of seconds, not '-1'"),
        (non_negative_seconds, "", "not a number of seconds: ''"),
    ],
)
def test_durations_refused_with_the_reason(parse: object, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)  # type: ignore[operator]
