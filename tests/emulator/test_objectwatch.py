"""ObjectWatch (the schedule controller's list-and-watch of JobSchedules and JobCalendars) against
the emulator over HTTP: the listing, each watch event, and after the API server went away a new
listing that passes on the objects deleted meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from jobnet.kube.client import JOBCALENDARS, KubeClient
from jobnet.kube.objectwatch import ObjectWatch
from tests.support.emulator import EmulatorServer

pytestmark = pytest.mark.emulator

API_VERSION = "jobnet.dev/v1alpha1"


def calendar(name: str, *closed: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "JobCalendar",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"closedWeekdays": list(closed)},
    }


def test_lists_then_passes_on_each_event_and_lists_again_after_the_server_went_away(
    emulator: EmulatorServer,
) -> None:
    emulator.put(calendar("a"))
    seen: list[tuple[str | None, str, list[str]]] = []

    def record(kind: str | None, body: Mapping[str, Any]) -> None:
        seen.append((kind, body["metadata"]["name"], (body.get("spec") or {}).get("closedWeekdays", [])))

    async def until(expected: tuple[str | None, str, list[str]]) -> None:
        deadline = time.monotonic() + 15
        while expected not in seen:
            assert time.monotonic() < deadline, f"{expected} not seen: {seen}"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        watch = asyncio.create_task(
            ObjectWatch(client, JOBCALENDARS, None, record, retry_delay=0.2, watch_seconds=1).run_forever()
        )
        try:
            await until((None, "a", []))
            await asyncio.to_thread(emulator.put, calendar("b"))
            await until(("ADDED", "b", []))
            await asyncio.to_thread(emulator.put, calendar("a", "Sunday"))
            await until(("MODIFIED", "a", ["Sunday"]))
            await asyncio.to_thread(emulator.remove, API_VERSION, JOBCALENDARS, "default", "b")
            await until(("DELETED", "b", []))

            # Away: the watch breaks, and the listing fails until the server is back.
            await asyncio.to_thread(emulator.stop_serving)
            await asyncio.to_thread(emulator.remove, API_VERSION, JOBCALENDARS, "default", "a")
            await asyncio.to_thread(emulator.put, calendar("c"))
            await asyncio.to_thread(emulator.resume_serving)
            await until((None, "c", []))
            await until(("DELETED", "a", []))  # passed on with its metadata
        finally:
            watch.cancel()
            await client.close()

    asyncio.run(scenario())
    assert seen[:4] == [(None, "a", []), ("ADDED", "b", []), ("MODIFIED", "a", ["Sunday"]), ("DELETED", "b", [])]
