"""The job monitor's pages of full output begin at a line start."""

from __future__ import annotations

import pytest

from jobnet.console.output import from_line_start


@pytest.mark.parametrize(
    ("data", "start", "expected"),
    [
        (b"one\ntwo\n", 0, (0, b"one\ntwo\n")),  # the very start is a line start
        (b"ne\ntwo\n", 1, (4, b"two\n")),  # cut inside a line: from the next one
        (b"\ntwo\n", 3, (4, b"two\n")),  # cut just before a newline
        (b"no newline at all", 9, (9, b"no newline at all")),  # one long line: kept whole
        (b"tail only\n", 5, (5, b"tail only\n")),  # nothing after the only newline: kept
    ],
)
def test_a_page_cut_inside_a_line_begins_at_the_next_line(data: bytes, start: int, expected: tuple[int, bytes]) -> None:
    assert from_line_start(data, start) == expected
