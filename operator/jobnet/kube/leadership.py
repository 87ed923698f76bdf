"""One driver per run: only the leader among the operator replicas acts on runs and schedules.

Every replica watches (kopf, with peering off) and serves the admission webhook; only the
replica holding the Lease (:mod:`jobnet.kube.leader`) runs the JobRun loops, expands new runs,
describes JobNets and creates scheduled runs. Two parts:

* :class:`LeaderGate` is asked right before each act on the leader's behalf: every write of
  :class:`~jobnet.kube.client.KubeClient` (status patches, Events, creations, deletions) and
  every request to an agent. It answers from the elector's monotonic clock, so a replica resumed
  after SIGSTOP, or one cut off from the API server, is refused at once, even before its
  election loop has noticed that its term is over. A refused act raises :class:`NotLeading`, a
  :class:`~jobnet.kube.client.KubeApiError`: the callers' existing "the API failed, try again
  later" paths hold the work until the replica's work is stopped.
* :class:`Leadership` runs the election and starts the leader's work (:class:`LeaderWork`) when
  this replica becomes leader, and stops all of it at once when it is leader no more. Without
  election (``--no-leader-election``, one replica only) the work starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from jobnet.core.lease import ElectionConfig
from jobnet.kube.client import KubeApiError
from jobnet.kube.leader import LeaderElector

logger = logging.getLogger("jobnet.leader")


@dataclass(frozen=True)
class LeaseSettings:
    """The Lease the replicas elect their leader with, and this replica's durations and identity."""

    namespace: str
    name: str
    election: ElectionConfig


def default_identity() -> str:
    """This replica's name in the Lease: its pod's (``POD_NAME``, else ``POD_ID``, else the host
    name) and a random part, like client-go's, so a restarted container is a new candidate."""
    base = os.environ.get("POD_NAME") or os.environ.get("POD_ID") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


class NotLeading(KubeApiError):
    """This replica is not the leader (or no longer): the act was not done."""

    def __init__(self, what: str, identity: str) -> None:
        super().__init__(what, None, f"not done: {identity} is not the leader")


class LeaderGate:
    """Whether this replica may act now; ``leading`` is the elector's (default: always)."""

    def __init__(self, identity: str = "", leading: Callable[[], bool] | None = None) -> None:
        self.identity = identity or "this replica"
        self._leading = leading

    def leading(self) -> bool:
        return self._leading is None or self._leading()

    def check(self, what: str) -> None:
        """Raise :class:`NotLeading` unless this replica may act now (call right before the I/O)."""
        if not self.leading():
            raise NotLeading(what, self.identity)


#: The gate of an operator without election (one replica), and of clients that never act for
#: the leader (a test's, a CLI's).
ALWAYS_LEADING = LeaderGate()


class LeaderWork(Protocol):
    """What only the leader does."""

    async def lead(self) -> None:
        """Start (quickly: longer work goes into tasks of its own)."""

    async def follow(self) -> None:
        """Stop everything at once: this replica is leader no more."""


class Leadership:
    """Runs ``elector`` (None: no election) and starts/stops ``work`` with the leadership."""

    def __init__(self, elector: LeaderElector | None, work: Sequence[LeaderWork]) -> None:
        self.elector = elector
        self.work = list(work)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            campaign = self._lead() if self.elector is None else self.elector.run(self._lead, self._follow)
            self._task = asyncio.create_task(campaign, name="leader election")

    async def stop(self) -> None:
        """Stop campaigning and the work, and hand the Lease back for the next replica."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.elector is None:
            await self._follow()
        else:
            await self.elector.release()

    async def _lead(self) -> None:
        for work in self.work:
            await work.lead()

    async def _follow(self) -> None:
        for work in self.work:
            try:
                await work.follow()
            except Exception:
                logger.exception("stopping the leader's work failed")
