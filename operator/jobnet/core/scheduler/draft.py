"""The one small object the sub-machines of a reconcile share: the run's draft.

A round starts from the persisted :class:`RunRuntime` and the :class:`AgentFacts`; each
sub-machine (steering, delivery, fencing, records, liveness, the walk, the summary) reads the
draft and changes it only through :meth:`Draft.update` (typed changes of one job, every state
change checked against the transition table), :meth:`Draft.event`, :meth:`Draft.send`,
:meth:`Draft.settle` and :meth:`Draft.wake_at`. The summary turns it into a :class:`Decision`.
"""

from __future__ import annotations

from typing import Literal, TypedDict, Unpack

from jobnet.core.agentproto import JobKey, JobRecord, KillReason, key_text
from jobnet.core.expansion import RunGraph, RunNode
from jobnet.core.hosts import host_id
from jobnet.core.models import RetrySpec, StuckResolution
from jobnet.core.scheduler.actions import Ack, Event, Fence, Kill, Launch
from jobnet.core.scheduler.facts import AgentFacts, SchedulerPolicy
from jobnet.core.scheduler.state import (
    AUTO_RESOLVER,
    NEVER_LAUNCHED,
    Dispatch,
    DispatchOp,
    EarlierAttempt,
    JobRuntime,
    RunRuntime,
    Settlement,
)
from jobnet.core.states import TERMINAL_STATES, JobState, automatic_transition_allowed, override_allowed
from jobnet.core.status import attempt_history_limit

_DEFAULT_RETRY = RetrySpec()
#: A graph built without JobNet specs (never by expansion) resolves like the spec's default.
_DEFAULT_STUCK_RESOLUTION: StuckResolution = "Auto"


class IllegalTransition(RuntimeError):
    """The scheduler tried a transition the table forbids: a bug, never bad input."""


class AttemptResults(TypedDict, total=False):
    """What an attempt leaves behind on its job (cleared for the next attempt)."""

    pid: int | None
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    deadline: float | None
    kill_reason: KillReason | None


class JobChange(AttemptResults, total=False):
    """The fields of a :class:`JobRuntime` one update may set (``since`` follows ``state``)."""

    state: JobState
    attempt: int
    reason: str | None
    message: str | None
    host: str | None
    dispatch: Dispatch | None
    earlier: tuple[EarlierAttempt, ...]
    earlier_dropped: int
    relaunching_since: float | None


ATTEMPT_CLEARED: AttemptResults = {
    "pid": None,
    "exit_code": None,
    "started_at": None,
    "finished_at": None,
    "deadline": None,
    "kill_reason": None,
}


class Draft:
    """The run as this round has decided it so far (see the module docstring)."""

    def __init__(
        self, graph: RunGraph, runtime: RunRuntime, facts: AgentFacts, policy: SchedulerPolicy, now: float
    ) -> None:
        self.graph = graph
        #: the runtime the round started from (persisted by the previous decision)
        self.runtime = runtime
        self.facts = facts
        self.policy = policy
        self.now = now
        known = runtime.jobs
        self.jobs: dict[str, JobRuntime] = {node.path: known.get(node.path, NEVER_LAUNCHED) for node in graph.jobs()}
        self.stop_scopes: list[str] = list(runtime.stop_scopes)
        self.settlements: list[Settlement] = list(runtime.settlements)
        #: the facts' records, and the records delivery answers brought this round
        self.records: dict[str, JobRecord] = dict(facts.records)
        #: the actions decided, by kind: requests to agents leave first (a downstream launch never
        #: waits behind acks on the same channel or behind the POST of an Event), then acks
        self.requests: list[Launch | Kill | Fence] = []
        self.acks: list[Ack] = []
        self.events: list[Event] = []
        #: job paths whose runtime changed
        self.changed: set[str] = set()
        self.wakeups: list[float] = []
        self.jobnet_states: dict[str, JobState] = {}
        #: the steering annotations applied (or refused) this round
        self.consumed: tuple[str, ...] = ()

    # -------------------------------------------------------------- queries

    def key(self, path: str) -> JobKey:
        return JobKey(run=self.runtime.run_uid, path=path, attempt=self.jobs[path].attempt)

    def key_text(self, path: str) -> str:
        """``JobKey.text()`` of the job's current key, without building a model (hot path)."""
        return key_text(self.runtime.run_uid, path, self.jobs[path].attempt)

    def node(self, path: str) -> RunNode:
        return self.graph.nodes[path]

    def retry(self, path: str) -> RetrySpec:
        return self.node(path).retry or _DEFAULT_RETRY

    def resolution(self, path: str) -> StuckResolution:
        """The ``stuckResolution`` of the nearest enclosing JobNet (carried on the run graph)."""
        parent = self.node(path).parent
        while parent is not None:
            jobnet = self.node(parent)
            if jobnet.stuck_resolution is not None:
                return jobnet.stuck_resolution
            parent = jobnet.parent
        return _DEFAULT_STUCK_RESOLUTION

    def host_of(self, path: str) -> str:
        job = self.jobs[path]
        if job.host is not None:
            return job.host
        host = self.node(path).host
        return host_id(host) if host is not None else "(no host)"

    def record_for(self, path: str) -> JobRecord | None:
        """The agent's latest record of the job's current attempt, if any."""
        job = self.jobs[path]
        if job.attempt == 0:
            return None
        return self.records.get(self.key_text(path))

    def heard_from_host_since(self, path: str, since: float | None) -> bool:
        return self.facts.heard_after(self.host_of(path), since)

    # -------------------------------------------------------------- changes

    def update(self, path: str, *, override: bool = False, **changes: Unpack[JobChange]) -> JobRuntime:
        """Change one job; a state change must be allowed (``override``: as a person may ask)."""
        job = self.jobs[path]
        new_state = changes.get("state", job.state)
        since = job.since
        if new_state != job.state:
            allowed = override_allowed if override else automatic_transition_allowed
            if not allowed(job.state, new_state):
                raise IllegalTransition(f"{path}: {job.state} -> {new_state} is not allowed")
            # Only an undecided job needs to know since when (heartbeat and freshness checks).
            since = None if new_state in TERMINAL_STATES else self.now
        updated = job.model_copy(update={**changes, "since": since})
        if updated != job:
            self.jobs[path] = updated
            self.changed.add(path)
        return updated

    def rerun(
        self,
        path: str,
        reason: str | None,
        message: str,
        *,
        by: str | None = AUTO_RESOLVER,
        relaunching_since: float | None = None,
    ) -> None:
        """Make the job Ready for its next attempt, as a person may ask (an override to Ready,
        ``by`` them) or as the operator decides itself: what the last attempt left moves to the
        job's bounded history of earlier attempts. ``relaunching_since``: set for the operator's
        re-launch of an attempt that never ran (:mod:`jobnet.core.scheduler.relaunch`); any other
        re-run starts afresh."""
        job = self.jobs[path]
        earlier, dropped = job.earlier, job.earlier_dropped
        if job.attempt > 0:
            earlier = (
                *earlier,
                EarlierAttempt(
                    attempt=job.attempt,
                    state=job.state,
                    reason=job.reason,
                    host=job.host,
                    pid=job.pid,
                    exit_code=job.exit_code,
                    started_at=job.started_at,
                    finished_at=job.finished_at,
                    rerun_by=by,
                    rerun_at=self.now,
                ),
            )
        excess = len(earlier) - attempt_history_limit(len(self.graph.nodes))
        if excess > 0:
            earlier, dropped = earlier[excess:], dropped + excess
        self.update(
            path,
            override=True,
            state=JobState.READY,
            reason=reason,
            message=message,
            dispatch=None,
            earlier=earlier,
            earlier_dropped=dropped,
            relaunching_since=relaunching_since,
            **ATTEMPT_CLEARED,
        )

    def remember(self, record: JobRecord) -> None:
        """A record a delivery answer brought: newer than what the facts hold, it wins."""
        text = record.key.text()
        known = self.records.get(text)
        if known is None or record.seq >= known.seq:
            self.records[text] = record

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str, path: str | None) -> None:
        self.events.append(Event(type=type_, reason=reason, message=message, path=path))

    def send(self, path: str, op: DispatchOp) -> None:
        """Ask the edge to deliver ``op`` for the job's current key."""
        job = self.jobs[path]
        key = self.key(path)
        if op == "launch":
            self.requests.append(Launch(key=key, path=path, host=self.host_of(path)))
        elif op == "fence":
            self.requests.append(Fence(key=key, path=path, host=self.host_of(path)))
        else:
            self.requests.append(
                Kill(
                    key=key,
                    path=path,
                    host=self.host_of(path),
                    reason=job.kill_reason or "stop",
                    grace_seconds=self.policy.kill_grace_seconds,
                )
            )

    def settle(self, path: str, from_state: JobState, to_state: JobState, by: str | None, message: str) -> None:
        """Record that a person (or the operator, ``AUTO_RESOLVER``) settled a job."""
        self.settlements.append(
            Settlement(path=path, from_state=from_state, to_state=to_state, by=by, at=self.now, message=message)
        )

    def wake_at(self, when: float) -> None:
        """Reconcile again at ``when`` even if nothing happens (retry, timeout, deadline)."""
        self.wakeups.append(when)
