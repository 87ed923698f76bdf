"""The one polling helper (tests/support/netutil.wait_until, the product's jobnet.devenv.net): it
returns the first truthy value, and on timeout says what did not happen, what it saw last and why."""

from __future__ import annotations

import itertools

import pytest

from tests.support.netutil import DeadlineExceeded, wait_until


def test_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, [], ["ready"]])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001, what="a list") == ["ready"]


def test_an_error_is_not_yet_and_polling_goes_on() -> None:
    calls = itertools.count(1)

    def flaky() -> str:
        if next(calls) < 3:
            raise ConnectionRefusedError("still starting")
        return "up"

    assert wait_until(flaky, timeout=5, interval=0.001, what="the server") == "up"


def test_timeout_names_what_the_last_value_and_the_explanation() -> None:
    with pytest.raises(DeadlineExceeded) as failure:
        wait_until(
            lambda: {"phase": "Running"}.get("done"),
            timeout=0.05,
            interval=0.01,
            what="run r1 done",
            describe=lambda: "phase: Running",
        )
    message = str(failure.value)
    assert message.startswith("run r1 done not reached within 0.05s after ")
    assert "(last value None)" in message
    assert message.endswith("\nphase: Running")
    assert isinstance(failure.value, AssertionError)  # a failed wait fails the test, not errors it


def test_timeout_chains_the_last_error() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody listening")

    with pytest.raises(DeadlineExceeded, match=r"last error ConnectionRefusedError\('nobody listening'\)") as failure:
        wait_until(refused, timeout=0.05, interval=0.01, what="a listener")
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)


class Pending:
    """A falsy answer with a long repr, like a big status that is not there yet."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Pending(" + "x" * 10_000 + ")"


def test_a_long_last_value_is_shortened() -> None:
    with pytest.raises(DeadlineExceeded) as failure:
        wait_until(Pending, timeout=0.02, interval=0.01, what="the status")
    assert "(last value Pending(xxx" in str(failure.value)
    assert "... (10009 characters))" in str(failure.value)
    assert len(str(failure.value)) < 700


def test_an_error_not_ignored_ends_the_wait_at_once() -> None:
    calls = itertools.count(1)

    def gave_up() -> bool:
        next(calls)
        raise LookupError("the run ended Failed: it will never succeed")

    with pytest.raises(LookupError, match="never succeed"):
        wait_until(gave_up, timeout=30, interval=0.001, what="the run succeeded", ignoring=(OSError,))
    assert next(calls) == 2  # probed once
