"""Leader election among operator replicas over a ``coordination.k8s.io/v1`` Lease: the thin
executor of :mod:`jobnet.core.lease` (read, decide, write, sleep), as client-go's
``leaderelection.LeaderElector`` runs it.

Whoever acts on behalf of the leader asks :meth:`LeaderElector.leading` right before each act
(a request to an agent, a status write): the answer turns False ``renew_deadline`` after the send
of the last renewal the API server accepted, so a replica that was frozen or cut off from the API
server stops before another one can take over. ``on_started``/``on_stopped`` are the moments to
start and stop the work itself.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from jobnet.core.lease import (
    ElectionConfig,
    ElectionState,
    LeaseRecord,
    Write,
    observe,
    released,
    try_acquire_or_renew,
    written,
)
from jobnet.kube.client import KubeApiError

logger = logging.getLogger("jobnet.leader")

#: client-go's JitterFactor: a candidate waits retry_period × (1 + up to 1.2) between tries, so
#: candidates that start together do not keep colliding.
JITTER_FACTOR = 1.2

Callback = Callable[[], Awaitable[None]]


class LeaseStore(Protocol):
    """Where the Lease is read and written (:class:`~jobnet.kube.client.KubeClient`)."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def write_lease(
        self, namespace: str, name: str, spec: dict[str, object], resource_version: str | None
    ) -> str | None: ...


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """One candidate for the Lease ``namespace/name``."""

    def __init__(
        self,
        client: LeaseStore,
        namespace: str,
        name: str,
        config: ElectionConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.config = config
        self._monotonic = monotonic
        self._wall = wall
        self._state = ElectionState()
        self._was_leading = False
        self._last_error = ""
        #: counts the terms: a renewal accepted after the renew deadline had passed starts a new one
        self._term = 0
        self._started_term = 0

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    def leading(self) -> bool:
        """May this replica act as the leader at this instant?"""
        return self._state.leading(self.config, self._monotonic())

    async def run(self, on_started: Callback, on_stopped: Callback) -> None:
        """Campaign and renew until cancelled; ``on_started`` when this replica becomes leader,
        ``on_stopped`` when it is leader no more (also when cancelled while leading)."""
        logger.info("Leader election: %s is a candidate for Lease %s", self.config.identity, self.lease)
        try:
            while True:
                await self._try_once()
                await self._transition(on_started, on_stopped)
                await asyncio.sleep(self._pause())
                await self._transition(on_started, on_stopped)
        finally:
            if self._was_leading:
                self._was_leading = False
                logger.info("Leader election: %s stops leading (shutting down)", self.config.identity)
                await on_stopped()

    async def release(self) -> None:
        """Hand the Lease back on a clean shutdown, so the next replica takes over at once."""
        release = released(self.config, self._state, self._wall())
        if release is None:
            return
        self._state = ElectionState(observation=self._state.observation)  # we lead no more, whatever follows
        try:
            await self.client.write_lease(self.namespace, self.name, release.record.spec(), release.resource_version)
            logger.info("Leader election: %s released Lease %s", self.config.identity, self.lease)
        except KubeApiError as e:
            logger.warning("Leader election: could not release Lease %s (%s); it expires by itself", self.lease, e)

    async def _try_once(self) -> None:
        """One read-decide-write turn, bounded by the renew deadline (a hung API server must not
        hold a turn past the moment the leader has to stop anyway)."""
        try:
            async with asyncio.timeout(self.config.renew_deadline):
                lease = await self.client.get_lease(self.namespace, self.name)
                record = None if lease is None else LeaseRecord.from_lease(lease)
                version = None if lease is None else (lease.get("metadata") or {}).get("resourceVersion")
                self._state = observe(self._state, record, version, self._monotonic())
                attempt = try_acquire_or_renew(self.config, self._state, self._monotonic(), self._wall())
                if isinstance(attempt, Write):
                    await self._write(attempt)
        except (KubeApiError, TimeoutError) as e:
            self._last_error = str(e) or "the API server did not answer in time"
            level = logging.WARNING if self.leading() else logging.DEBUG
            logger.log(level, "Leader election: Lease %s not renewed: %s", self.lease, self._last_error)

    async def _write(self, attempt: Write) -> None:
        sent_at = self._monotonic()
        version = await self.client.write_lease(
            self.namespace, self.name, attempt.record.spec(), attempt.resource_version
        )
        if not self.leading():
            self._term += 1  # the term had lapsed (its work may have been refused meanwhile): a new one
        self._state = written(self._state, attempt, version, sent_at)
        self._last_error = ""
        if attempt.takeover:
            logger.info(
                "Leader election: %s acquired Lease %s (transition %d)",
                self.config.identity,
                self.lease,
                attempt.record.transitions,
            )

    async def _transition(self, on_started: Callback, on_stopped: Callback) -> None:
        leading = self.leading()
        if leading and self._was_leading and self._term != self._started_term:
            # The term lapsed and a new one began between two looks: the old term's work was
            # refused at the gate meanwhile, so it stops and starts afresh.
            logger.warning("Leader election: %s's term lapsed and was renewed: restarting", self.config.identity)
            self._was_leading = False
            await on_stopped()
        if leading == self._was_leading:
            return
        self._was_leading = leading
        if leading:
            self._started_term = self._term
            logger.info("Leader election: %s is the leader now", self.config.identity)
            await on_started()
        else:
            logger.warning(
                "Leader election: %s stops leading: no renewal of Lease %s accepted for %.1f s (%s)",
                self.config.identity,
                self.lease,
                self.config.renew_deadline,
                self._last_error or "no answer",
            )
            await on_stopped()

    def _pause(self) -> float:
        """Until the next turn; a leader also wakes at its deadline, so that it notices promptly."""
        retry = self.config.retry_period
        renewed = self._state.renewed_sent_at
        if renewed is None or not self.leading():
            return retry * (1 + random.random() * JITTER_FACTOR)
        return max(0.0, min(retry, renewed + self.config.renew_deadline - self._monotonic()))
