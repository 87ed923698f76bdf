"""kopf's API request retries never run out (kube/app.py UnendingBackoffs)."""

from __future__ import annotations

import collections.abc
import itertools

from jobnet.kube.app import UnendingBackoffs


def test_delays_double_up_to_the_cap_and_never_end() -> None:
    assert list(itertools.islice(UnendingBackoffs(30), 8)) == [1, 2, 4, 8, 16, 30, 30, 30]
    assert list(itertools.islice(UnendingBackoffs(0.2), 3)) == [0.2, 0.2, 0.2]
    assert len(list(itertools.islice(UnendingBackoffs(5), 10_000))) == 10_000


def test_kopf_sees_no_last_attempt() -> None:
    # kopf escalates after the last delay of a Sized sequence; an unsized iterable has none.
    backoffs = UnendingBackoffs(30)
    assert isinstance(backoffs, collections.abc.Iterable)
    assert not isinstance(backoffs, collections.abc.Sized)
    assert list(itertools.islice(backoffs, 2)) == list(itertools.islice(backoffs, 2))  # each request starts anew
