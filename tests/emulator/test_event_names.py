"""Event names at the API server: a generated name that collides is retried (HTTP 409); a
deterministic name (jobnet.core.events) taken already is a 409 that counts as posted, so a post
repeated after a lost answer stores the Event once; an invalid name is refused as by a real API
server."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator

import kopf
import pytest

from jobnet.kube.client import KubeApiError, KubeClient
from jobnet.kube.events import EventPoster, EventSettings
from tests.support.emulator import EmulatorServer

pytestmark = pytest.mark.emulator

INVOLVED = {
    "apiVersion": "jobnet.dev/v1alpha1",
    "kind": "JobRun",
    "metadata": {"name": "nightly", "namespace": "default", "uid": "u-1"},
}


@pytest.fixture
def colliding_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The API server's random suffixes, scripted: the first two posts draw the same one."""
    suffixes = itertools.chain(["bbbbb", "bbbbb", "ccccc"], (f"x{n:04d}" for n in itertools.count()))
    drawn: list[str] = []

    def scripted(alphabet: str, k: int) -> list[str]:
        drawn.append(next(suffixes))
        return list(drawn[-1])

    monkeypatch.setattr(random, "choices", scripted)
    yield drawn


def post_events(server: EmulatorServer, count: int) -> None:
    async def post() -> None:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=server.url))
        try:
            for n in range(count):
                await client.post_event(INVOLVED, "Normal", "Test", f"event {n}")
        finally:
            await client.close()

    asyncio.run(post())


def test_a_taken_generated_name_is_retried_and_the_event_is_stored(
    emulator: EmulatorServer, colliding_names: list[str]
) -> None:
    post_events(emulator, 2)

    events = emulator.list_objects("v1", "events", "default")
    assert sorted(event["message"] for event in events) == ["event 0", "event 1"]
    assert sorted(event["metadata"]["name"] for event in events) == ["nightly.bbbbb", "nightly.ccccc"]
    assert colliding_names[:3] == ["bbbbb", "bbbbb", "ccccc"]  # the second post was refused once


def test_an_event_name_taken_already_is_answered_409_and_counts_as_posted(emulator: EmulatorServer) -> None:
    async def post() -> list[bool]:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        try:
            return [
                await client.post_event(INVOLVED, "Normal", "Test", "once", name="nightly.0123456789abcdef")
                for _ in range(2)
            ]
        finally:
            await client.close()

    assert asyncio.run(post()) == [True, False]
    (event,) = emulator.list_objects("v1", "events", "default")
    assert event["metadata"]["name"] == "nightly.0123456789abcdef" and event["message"] == "once"


def test_an_invalid_event_name_is_refused_as_by_a_real_api_server(emulator: EmulatorServer) -> None:
    async def post(name: str) -> None:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        try:
            await client.post_event(INVOLVED, "Normal", "Test", "bad", name=name)
        finally:
            await client.close()

    for name in ("Nightly.ABC", "a" * 254, "nightly..x", "-nightly"):
        with pytest.raises(KubeApiError) as refused:
            asyncio.run(post(name))
        assert refused.value.status == 422, name
    assert emulator.list_objects("v1", "events", "default") == []


def test_a_post_whose_answer_was_lost_is_retried_and_the_event_stored_once(emulator: EmulatorServer) -> None:
    lost = emulator.lose_answers("POST", "/api/v1/namespaces/default/events", 2)

    async def post() -> None:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        poster = EventPoster(client, EventSettings(retry_for=30, backoff_min=0.01, backoff_max=0.05))
        try:
            poster.post(INVOLVED, "Warning", "RunFailed", "run is Failed", name="nightly.0123456789abcdef")
            poster.post(INVOLVED, "Normal", "Test", "the next one", name="nightly.fedcba9876543210")
            await asyncio.wait_for(poster.idle(), timeout=30)
        finally:
            await client.close()

    asyncio.run(post())
    assert lost == [2]
    events = emulator.list_objects("v1", "events", "default")
    assert sorted((e["metadata"]["name"], e["reason"]) for e in events) == [
        ("nightly.0123456789abcdef", "RunFailed"),
        ("nightly.fedcba9876543210", "Test"),
    ]
