"""The runtime's Events, posted in the background and retried, never twice.

Every Event has a name derived from what it is about (jobnet.core.events): a post repeated after
a lost answer, or by a restarted operator, is answered 409 AlreadyExists and counts as posted.

:class:`EventPoster` is one worker over one queue, in the order the Events were queued (a run's
Events keep the order the scheduler decided them in). A post the API server did not take
(unreachable, timed out, throttled, 5xx) is tried again with backoff (``backoff_min`` doubling up
to ``backoff_max``) for ``retry_for`` seconds; then, or when the queue already holds
``queue_size`` Events, the Event is given up with an ERROR log line naming it. A run's loop only
queues: it never waits for the API server because of its Events.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobnet.kube.client import KubeApiError, KubeClient
from jobnet.kube.leadership import NotLeading

logger = logging.getLogger("jobnet.events")


@dataclass(frozen=True)
class EventSettings:
    """How Events are retried and which are posted again (``jobnet operator`` options set them)."""

    #: Events waiting to be posted at most; one more is given up at once (logged)
    queue_size: int = 1000
    #: how long one Event is tried before it is given up (logged)
    retry_for: float = 300.0
    backoff_min: float = 0.5
    backoff_max: float = 10.0
    #: a run's Events that happened within this long are posted again when an operator takes
    #: the run over (the Kubernetes Event TTL: older ones are gone from the API server anyway)
    restore_window: float = 3600.0


@dataclass(frozen=True)
class QueuedEvent:
    involved: Mapping[str, Any]
    type: str
    reason: str
    message: str
    name: str
    at: str | None
    give_up_at: float

    @property
    def label(self) -> str:
        meta = self.involved.get("metadata", {})
        return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _transient(error: KubeApiError) -> bool:
    """Unreachable, timed out, throttled or a server error: worth trying again."""
    return error.status is None or error.status in (408, 429) or error.status >= 500


class EventPoster:
    """One queue of Events and the worker that posts them (see the module docstring)."""

    def __init__(self, client: KubeClient, settings: EventSettings) -> None:
        self.client = client
        self.settings = settings
        self._queue: collections.deque[QueuedEvent] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        #: Events posted again (see :meth:`post`) skipped in this term for want of room
        self._skipped_again = 0

    def post(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        name: str,
        at: str | None = None,
        again: bool = False,
    ) -> None:
        """Queue the Event ``name`` (posted in the background, in order).

        ``again``: an Event a run's status implies, posted again at a takeover because the
        operator before may have died before posting it (most exist: a 409). Those fill at most
        half the queue, so that a takeover in a busy hour leaves room for the Events of now; one
        that finds no room is skipped, said once per term at WARNING, not as an Event lost."""
        event = QueuedEvent(involved, event_type, reason, message, name, at, time.monotonic() + self.settings.retry_for)
        if again and len(self._queue) >= self.settings.queue_size // 2:
            if not self._skipped_again:
                logger.warning(
                    "Events implied by runs that finished before this term are not all posted again: "
                    "%d Events wait already (half of --event-queue-size); one of them is missing only "
                    "if the operator before died between a status write and its Event",
                    len(self._queue),
                )
            self._skipped_again += 1
            return
        if len(self._queue) >= self.settings.queue_size:
            logger.error(
                "run=%s Event %s (%s) given up: %d Events wait to be posted already: %s",
                event.label,
                name,
                reason,
                len(self._queue),
                message,
            )
            return
        self._queue.append(event)
        self._idle.clear()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="post events")

    async def idle(self) -> None:
        """Until every queued Event is posted or given up."""
        await self._idle.wait()

    def close(self) -> None:
        """Stop posting (this replica leads no more, or stops): the queued Events are dropped;
        the next leader posts again what the runs' status implies."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None  # the next post starts a new one (a new term)
        self._drop()
        self._skipped_again = 0

    def _drop(self) -> None:
        if self._queue:
            logger.warning("%d Events not posted: this replica leads no more", len(self._queue))
        self._queue.clear()
        self._idle.set()

    async def _work(self) -> None:
        backoff = self.settings.backoff_min
        while self._queue:
            event = self._queue[0]
            try:
                stored = await self.client.post_event(
                    event.involved, event.type, event.reason, event.message, name=event.name, at=event.at
                )
            except NotLeading as e:
                logger.warning("run=%s Event %s not posted: %s", event.label, event.name, e)
                self._drop()
                return
            except KubeApiError as e:
                left = event.give_up_at - time.monotonic()
                if _transient(e) and left > 0:
                    delay = min(backoff, left)
                    logger.warning(
                        "run=%s cannot post Event %s (%s) yet: %s; retrying in %.1fs",
                        event.label,
                        event.name,
                        event.reason,
                        e,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, self.settings.backoff_max)
                    continue
                why = f"tried for {self.settings.retry_for:g}s" if _transient(e) else "refused"
                logger.error(
                    "run=%s Event %s (%s) given up (%s): %s: %s",
                    event.label,
                    event.name,
                    event.reason,
                    why,
                    e,
                    event.message,
                )
            except Exception:  # a bug must not end the worker: the Events behind it still go
                logger.exception(
                    "run=%s Event %s (%s) given up: the post failed unexpectedly", event.label, event.name, event.reason
                )
            else:
                if not stored:
                    logger.debug("run=%s Event %s (%s) was posted before", event.label, event.name, event.reason)
            self._queue.popleft()
            backoff = self.settings.backoff_min
        self._idle.set()
