"""What the scheduler is told each round: the agents' facts the edge fetched, and the policy.

Like Tekton's ``PipelineRunFacts``: plain data the edge gathers (records from the agents'
journals, heartbeats, the results of the deliveries it made, the launches it still queues),
and the pure queries over it the sub-machines share. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.scheduler.state import DispatchOp, FrozenModel
from jobnet.core.states import UNDELIVERED_REASONS


class DeliveryResult(FrozenModel):
    """What became of one launch/kill/fence request the edge sent for ``key``.

    ``delivered``: the agent answered (``record`` is its answer; for a kill, None means the
    agent never saw the key; a fence always has one). ``notDelivered``: it certainly did not reach the agent
    (``error_code`` HostUnreachable, AuthenticationFailed or HostKeyMismatch). ``unknown``: the
    connection broke after the request left.
    """

    key: JobKey
    op: DispatchOp
    outcome: Literal["delivered", "notDelivered", "unknown"]
    record: JobRecord | None = None
    deduplicated: bool = False
    error_code: str | None = None
    error_message: str | None = None

    @model_validator(mode="after")
    def _delivered_launch_has_a_record(self) -> DeliveryResult:
        if self.outcome == "delivered" and self.op != "kill" and self.record is None:
            raise ValueError(f"a delivered {self.op} of {self.key} must carry the agent's record")
        if self.record is not None and self.record.key != self.key:
            raise ValueError(f"delivery result for {self.key} carries a record of {self.record.key}")
        if self.outcome == "notDelivered" and self.error_code not in UNDELIVERED_REASONS:
            raise ValueError(
                f"notDelivered needs error_code {' or '.join(sorted(UNDELIVERED_REASONS))} (got {self.error_code!r}); "
                "a request that may have left is an `unknown` outcome"
            )
        return self


class AgentFacts(FrozenModel):
    """What the edge knows from the agents since the last reconcile (or since start)."""

    #: The latest known JobRecord per key (``JobKey.text()``), from events, list or get.
    records: Mapping[str, JobRecord] = Field(default_factory=dict)
    #: Keys the agent answered NotFound for (it never saw them).
    absent_keys: frozenset[str] = frozenset()
    #: Last heartbeat received per host (:func:`host_id`), on the operator's clock.
    heartbeats: Mapping[str, float] = Field(default_factory=dict)
    #: Results of the deliveries made since the last reconcile.
    deliveries: tuple[DeliveryResult, ...] = ()
    #: When this operator process started listening to the agents: after a restart, heartbeat
    #: deadlines count from here, not from before the outage.
    watching_since: float | None = None
    #: Launches (key texts) the edge still holds back: its per-host window of launch requests in
    #: flight is full, so the request has not left and no answer is due yet.
    queued_launches: frozenset[str] = frozenset()
    #: When the edge actually sent each launch request it still awaits the answer to (key text ->
    #: the operator's clock): the dispatch timeout counts from the send, not from the decision.
    launch_sent_at: Mapping[str, float] = Field(default_factory=dict)
    #: Keys (texts) whose output tail the edge is fetching from the agent.
    tails_fetching: frozenset[str] = frozenset()
    #: The record seq the edge last sent an ack for, per key text: one ack per record.
    acks_sent: Mapping[str, int] = Field(default_factory=dict)

    def alive_floor(self, host: str) -> float:
        """Since when the host's jobs are known alive: its last heartbeat, but never before this
        operator started watching (an outage of the operator is not the host's silence)."""
        beat = self.heartbeats.get(host)
        return max(beat or float("-inf"), self.watching_since or float("-inf"))

    def heard_after(self, host: str, since: float | None) -> bool:
        """The host sent a (caught-up) heartbeat after ``since`` (None: ever)."""
        beat = self.heartbeats.get(host)
        return beat is not None and (since is None or beat > since)


class SchedulerPolicy(FrozenModel):
    heartbeat_deadline_seconds: float = Field(default=30.0, gt=0)
    #: A delivery without any answer this long after its request left counts as outcome unknown
    #: (a launch the edge still queues has not left; after an operator restart the deliveries in
    #: flight when it died count from their decision and are retried with the same key).
    dispatch_timeout_seconds: float = Field(default=30.0, gt=0)
    kill_grace_seconds: float = Field(default=10.0, ge=0)
    #: A launch that provably never left (its host refused or did not answer the connection) is
    #: retried with the same key this long after the job's first try, whatever the job's own
    #: ``retry``, before it fails HostUnreachable: a VM that reboots for a few seconds fails no job.
    #: 0: only the job's own retries.
    launch_retry_window_seconds: float = Field(default=60.0, ge=0)
    #: The delay before those retries: doubling from the first to the longest.
    launch_retry_backoff_min_seconds: float = Field(default=1.0, gt=0)
    launch_retry_backoff_max_seconds: float = Field(default=10.0, gt=0)
