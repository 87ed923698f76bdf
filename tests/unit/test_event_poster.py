"""The runtime's Event queue (jobnet.kube.events) with a fake API server: Events are posted in
the order queued, a post the server did not take is tried again until it is, a name posted
before counts as posted, and what cannot be posted is given up with an ERROR line naming it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from jobnet.kube.client import KubeApiError
from jobnet.kube.events import EventPoster, EventSettings
from jobnet.kube.leadership import NotLeading

INVOLVED = {"apiVersion": "jobnet.dev/v1alpha1", "kind": "JobRun", "metadata": {"name": "r", "namespace": "ns"}}
SHORT = EventSettings(queue_size=3, retry_for=0.2, backoff_min=0.01, backoff_max=0.02)


class FakeApi:
    """Stores Events by name (409 for a taken one); ``failures`` posts are refused first."""

    def __init__(self, failures: list[KubeApiError | NotLeading] | None = None) -> None:
        self.failures = list(failures or [])
        self.stored: list[str] = []
        self.posts = 0

    async def post_event(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str, *, name: str, at: str | None
    ) -> bool:
        self.posts += 1
        if self.failures:
            raise self.failures.pop(0)
        if name in self.stored:
            return False
        self.stored.append(name)
        return True


def unavailable() -> KubeApiError:
    return KubeApiError("posting Event", 503, "the server is unavailable")


def post(api: FakeApi, *names: str, settings: EventSettings = SHORT) -> EventPoster:
    async def scenario() -> EventPoster:
        poster = EventPoster(api, settings)  # type: ignore[arg-type]
        for name in names:
            poster.post(INVOLVED, "Normal", f"Reason-{name}", f"message {name}", name=name)
        await asyncio.wait_for(poster.idle(), timeout=10)
        return poster

    return asyncio.run(scenario())


def test_events_are_posted_in_order_and_one_the_server_refused_is_posted_once_it_takes_it() -> None:
    api = FakeApi([unavailable(), KubeApiError("posting Event", None, "connection refused"), unavailable()])
    post(api, "a", "b", "c")
    assert api.stored == ["a", "b", "c"] and api.posts == 6


def test_a_name_posted_before_counts_as_posted() -> None:
    api = FakeApi()
    post(api, "a", "a", "b")
    assert api.stored == ["a", "b"]


def test_an_event_the_server_never_takes_is_given_up_with_an_error_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi([unavailable() for _ in range(1000)])
    with caplog.at_level(logging.WARNING, logger="jobnet.events"):
        post(api, "lost")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Event lost (Reason-lost) given up (tried for 0.2s)" in errors[0], errors


def test_a_refusal_that_is_no_outage_is_given_up_at_once(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi([KubeApiError("posting Event", 403, "forbidden")])
    with caplog.at_level(logging.ERROR, logger="jobnet.events"):
        post(api, "a", "b")
    assert api.stored == ["b"] and api.posts == 2
    assert "Event a (Reason-a) given up (refused)" in caplog.text


def test_a_full_queue_gives_up_the_newest_event_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    with caplog.at_level(logging.ERROR, logger="jobnet.events"):
        post(api, "a", "b", "c", "d")  # the queue holds 3: nothing is posted before the first await
    assert api.stored == ["a", "b", "c"]
    assert "Event d (Reason-d) given up: 3 Events wait to be posted already" in caplog.text


def test_events_posted_again_at_a_takeover_leave_half_the_queue_to_the_events_of_now(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi()
    settings = EventSettings(queue_size=4, retry_for=0.2, backoff_min=0.01, backoff_max=0.02)

    async def scenario() -> None:
        poster = EventPoster(api, settings)  # type: ignore[arg-type]
        for name in ("old-1", "old-2", "old-3", "old-4"):  # a takeover: runs that finished before
            poster.post(INVOLVED, "Normal", "RunSucceeded", name, name=name, again=True)
        for name in ("now-1", "now-2"):
            poster.post(INVOLVED, "Warning", "JobFailed", name, name=name)
        await asyncio.wait_for(poster.idle(), timeout=10)

    with caplog.at_level(logging.WARNING, logger="jobnet.events"):
        asyncio.run(scenario())
    assert api.stored == ["old-1", "old-2", "now-1", "now-2"]
    assert caplog.text.count("are not all posted again") == 1 and "given up" not in caplog.text


def test_a_replica_that_leads_no_more_drops_what_it_has_not_posted() -> None:
    api = FakeApi([NotLeading("posting Event a", "replica-2")])
    post(api, "a", "b")
    assert api.stored == [] and api.posts == 1  # the next leader posts what the status implies
