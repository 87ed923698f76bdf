"""What the scheduler decides: the actions the edge carries out, and the decision itself.

The edge persists :attr:`Decision.runtime` first, then acts: Launch/Kill/Fence are
idempotent by their key on the agent, an Ack only follows a stored status, Events are posted
and logged.
"""

from __future__ import annotations

from typing import Literal

from jobnet.core.agentproto import JobKey, KillReason
from jobnet.core.scheduler.state import FrozenModel, RunRuntime
from jobnet.core.states import JobState


class Launch(FrozenModel):
    """Send ``launch`` for ``key`` to the agent on ``host`` (node details: ``graph.nodes[path]``)."""

    kind: Literal["launch"] = "launch"
    key: JobKey
    path: str
    host: str


class Kill(FrozenModel):
    kind: Literal["kill"] = "kill"
    key: JobKey
    path: str
    host: str
    reason: KillReason
    grace_seconds: float


class Fence(FrozenModel):
    """Send ``fence`` for ``key``: the agent claims it as never to run unless it already has it."""

    kind: Literal["fence"] = "fence"
    key: JobKey
    path: str
    host: str


class Ack(FrozenModel):
    """Tell the agent its final record is stored; only after the status patch succeeded."""

    kind: Literal["ack"] = "ack"
    key: JobKey
    path: str
    host: str
    #: the seq of the record acknowledged (the edge reports it back in ``AgentFacts.acks_sent``)
    seq: int = 0


class Event(FrozenModel):
    """A Kubernetes Event to post on the JobRun (and log)."""

    kind: Literal["event"] = "event"
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    path: str | None = None


Action = Launch | Kill | Fence | Ack | Event


class Decision(FrozenModel):
    runtime: RunRuntime
    #: In the order the edge acts: requests to agents, then acks, then Events.
    actions: tuple[Action, ...]
    #: Job paths whose runtime changed (the edge patches only these: coalesced writes).
    changed: frozenset[str]
    #: Derived state of every jobnet node (root and sub-jobnets).
    jobnet_states: dict[str, JobState]
    #: Finished jobs out of all jobs, e.g. ``12/40``.
    progress: str
    #: How many jobs are in each state (states without jobs left out), sorted by state.
    counts: dict[str, int]
    #: When to reconcile again even if nothing happens (retry, timeout, heartbeat deadline).
    next_wakeup_at: float | None
    #: The run has finished while output tails are still being fetched: the edge stores and
    #: does nothing this round, and decides again once the fetches end (a finished run's
    #: status is complete: it ends in one write with its last output tails).
    holds_for_output_tails: bool = False
    #: Annotation keys that were applied (or refused with an Event): remove them after the
    #: status patch succeeded.
    consumed_annotations: tuple[str, ...] = ()
