"""A lean list-and-watch of one of our kinds, for handlers that only track objects in memory (the
schedule controller's JobSchedules and JobCalendars).

A kopf event handler costs about a millisecond of kopf's own machinery per watch event (causes,
per-object loggers, handler state, keyword arguments), and every status write of a JobSchedule
comes back as one: this watch hands each event to its callback as the API server sent it.

It lists first (each object passed on with the type None, as kopf does), then watches from the
list's resourceVersion. When the server ends a watch, it watches on from the last version seen
(bookmarks included); when that version is too old (an ERROR event with 410 Gone) or the API
fails, it lists again (objects gone meanwhile are passed on as DELETED), after ``retry_delay``
when the API failed or a watch ended at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from jobnet.kube.client import KubeApiError, KubeClient

logger = logging.getLogger(__name__)

HTTP_GONE = 410
#: A watch that ends sooner than this without an event is followed by a pause of ``retry_delay``.
SHORTEST_WATCH_SECONDS = 1.0

Handler = Callable[[str | None, Mapping[str, Any]], None]


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class ObjectWatch:
    """Lists and watches ``plural`` in ``namespace`` (None: every namespace), calling
    ``on_event(type, body)`` for each object listed and each watch event; the server ends each
    watch after ``watch_seconds`` (``--watch-server-timeout``)."""

    def __init__(
        self,
        client: KubeClient,
        plural: str,
        namespace: str | None,
        on_event: Handler,
        retry_delay: float,
        watch_seconds: int,
    ) -> None:
        self.client = client
        self.plural = plural
        self.namespace = namespace
        self.on_event = on_event
        self.retry_delay = retry_delay
        self.watch_seconds = watch_seconds
        #: the objects seen (only their name), to pass on those a new list no longer has
        self._known: dict[tuple[str, str], Mapping[str, Any]] = {}

    async def run_forever(self) -> None:
        await self.client.logged_in()
        while True:
            try:
                version: str | None = await self._list()
                while version is not None:  # None: too old, list again
                    started = time.monotonic()
                    version, events = await self._watch(version)
                    if not events and time.monotonic() - started < SHORTEST_WATCH_SECONDS:
                        await asyncio.sleep(self.retry_delay)
            except KubeApiError as e:
                logger.warning("cannot watch %s (%s); listing them again in %.1fs", self.plural, e, self.retry_delay)
                await asyncio.sleep(self.retry_delay)

    async def _list(self) -> str:
        items, version = await self.client.list_versioned(self.plural, self.namespace)
        listed = {_key(item): item for item in items}
        for key in set(self._known) - set(listed):
            self.on_event("DELETED", self._known[key])
        self._known = {key: {"metadata": body.get("metadata") or {}} for key, body in listed.items()}
        for item in items:
            self.on_event(None, item)
        return version

    async def _watch(self, version: str) -> tuple[str | None, int]:
        """Pass on the events of one watch: the version to watch on from (None: list again),
        and how many events came."""
        events = 0
        async for event in self.client.watch_objects(self.plural, self.namespace, version, self.watch_seconds):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == HTTP_GONE:
                    return None, events
                raise KubeApiError(f"watching {self.plural}", body.get("code"), str(body.get("message", "")))
            events += 1
            version = (body.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                self._known.pop(_key(body), None)
            else:
                self._known[_key(body)] = {"metadata": body.get("metadata") or {}}
            self.on_event(kind, body)
        return version, events
