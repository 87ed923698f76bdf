"""The dev demo's waits: bounded by the step's limit and the whole demo's, failing as DemoFailed."""

from __future__ import annotations

import time

import pytest

from jobnet.devenv.demo import DemoFailed, _poll


def test_a_step_that_never_happens_fails_the_demo_saying_what_was_seen() -> None:
    with pytest.raises(DemoFailed, match=r"run r1 Succeeded did not happen in time .*; phase: Running$"):
        _poll(lambda: None, 0.05, "run r1 Succeeded", lambda: "phase: Running")


def test_the_whole_demo_deadline_cuts_a_step_short() -> None:
    started = time.monotonic()
    with pytest.raises(DemoFailed):
        _poll(lambda: None, 60, "job /x Stuck", lambda: "", overall=time.monotonic() + 0.05)
    assert time.monotonic() - started < 30  # sanity bound only: the step's own 60 s did not apply


def test_a_probe_that_knows_it_will_never_happen_ends_the_demo_at_once() -> None:
    def ended_failed() -> bool:
        raise DemoFailed("run r1 ended Failed instead of Succeeded")

    with pytest.raises(DemoFailed, match="ended Failed"):
        _poll(ended_failed, 60, "run r1 Succeeded", lambda: "")


def test_the_value_found_is_returned() -> None:
    assert _poll(lambda: {"state": "Stuck"}, 5, "job /x Stuck", lambda: "") == {"state": "Stuck"}
