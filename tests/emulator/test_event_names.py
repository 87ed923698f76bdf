"""The operator's Event posts survive a generated-name collision (HTTP 409 from the API server)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator

import kopf
import pytest

from jobnet.kube.client import KubeClient
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
