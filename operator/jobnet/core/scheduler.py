"""The reconcile decision of a JobRun: facts in, new state and actions out.

Modelled on Tekton's reconciler: the edge *fetches* (JobRun status, the agents' journals,
heartbeats, the results of the deliveries it made), this module turns those *pure facts* into
a decision, and the edge *acts* (launch, kill, ack, post Events, patch status)::

    decision = reconcile(graph, runtime, facts, policy, now, annotations=jobrun.metadata.annotations)
    patch_status(runstatus.status_patch(decision))   # first: a crash after it loses no decision
    remove_annotations(decision.consumed_annotations)
    perform(decision.actions)          # Launch/Kill are idempotent by JobKey on the agent

Nothing here reads a clock or does I/O; ``now`` is passed in (unix seconds) and the same
inputs always give the same decision.

How a job is identified on a VM: ``JobKey(run=<run uid>, path, attempt)``. A delivery that
certainly did not reach the agent (connect refused, authentication, host key) and one whose
outcome is unknown (the connection broke after the request left) are both retried with the
SAME key (the agent deduplicates), up to the job's ``retry.dispatchAttempts``. Only a person's
override to Ready makes a new attempt (a new key). Hence a script never runs twice unless a
person asked for it. When the agent never confirmed the current attempt (its launch may still
sit in a TCP buffer), that override first *fences* the old key on the agent (claims it as never
to run) and launches the new attempt only once the agent confirms the old one never ran; if it
did run, the job takes its real state instead (see docs/job-states.md, Fencing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobnet.core.agentproto import TERMINAL_RECORD_STATES, JobKey, JobRecord, KillReason, key_text
from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    OVERRIDE_BY_ANNOTATION,
    OVERRIDE_MESSAGE_ANNOTATION,
    STOP_ANNOTATION,
    STOP_BY_ANNOTATION,
    OverrideRequest,
    StopRequest,
    jobs_under,
    override_problem,
    override_targets,
    parse_override_annotation,
    parse_stop_annotation,
    resolve_path,
    scope_of,
)
from jobnet.core.expansion import RunGraph, RunNode
from jobnet.core.hosts import host_id
from jobnet.core.models import RetrySpec, StuckResolution
from jobnet.core.outcome import describe_record, record_outcome
from jobnet.core.states import (
    TERMINAL_STATES,
    UNDELIVERED_REASONS,
    UNLAUNCHED_STATES,
    JobState,
    Reason,
    RunPhase,
    StuckReason,
    automatic_transition_allowed,
    derive_jobnet_state,
    override_allowed,
    run_phase,
    stuck_message,
)

S = JobState
DispatchOp = Literal["launch", "kill", "fence"]
#: ``by`` of a settlement the operator made itself from the agent's journal.
AUTO_RESOLVER = "jobnet-operator (auto)"
_DEFAULT_RETRY = RetrySpec()
_LIVE_STATES = frozenset({S.STARTING, S.RUNNING, S.STOPPING, S.STUCK})
_HEARTBEAT_WATCHED = frozenset({S.RUNNING, S.STOPPING})
#: Separates a Stuck job's message from what became known later under stuckResolution Manual.
_KNOWN_MARKER = " | now known: "


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


# ---------------------------------------------------------------- runtime state (persisted)


class Dispatch(_Frozen):
    """Bookkeeping of the delivery of a launch, kill or fence request for the job's current key."""

    op: DispatchOp
    attempts_used: int = Field(ge=1)
    last_attempt_at: float
    in_flight: bool = True
    #: In flight when the operator (or this run's loop) stopped, so no answer will ever come to
    #: it: re-sent at once with the same key, as the same delivery attempt.
    interrupted: bool = False
    #: Some delivery may have reached the agent: giving up is then Stuck, never Failed.
    unknown_seen: bool = False
    last_error: str | None = None
    last_error_message: str | None = None
    #: For a fence: who asked for the override to Ready that waits for it, and their reason.
    override_by: str | None = None
    override_message: str | None = None


class JobRuntime(_Frozen):
    """What the scheduler knows and remembers about one job (persisted in JobRun status)."""

    state: JobState = S.PENDING
    #: The attempt launched last (0 = never); a launch after an override to Ready is attempt+1.
    attempt: int = Field(default=0, ge=0)
    reason: str | None = None
    message: str | None = None
    host: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: When the job entered its current state.
    since: float | None = None
    #: When a Running job is killed for exceeding its timeout.
    deadline: float | None = None
    kill_reason: KillReason | None = None
    dispatch: Dispatch | None = None


#: The runtime of every job never launched (frozen, so one instance serves them all).
_NEVER_LAUNCHED = JobRuntime()


class Settlement(_Frozen):
    """A Stuck/Failed job settled by a person (override) or by the operator (auto resolution)."""

    path: str
    from_state: JobState
    to_state: JobState
    by: str | None
    at: float
    message: str


class RunRuntime(_Frozen):
    """The scheduler's whole persisted state of one run."""

    run_uid: str = Field(min_length=1)
    #: One entry per job path of the graph; a missing entry means Pending, never launched.
    jobs: dict[str, JobRuntime] = Field(default_factory=dict)
    stop_scopes: tuple[str, ...] = ()
    settlements: tuple[Settlement, ...] = ()
    phase: RunPhase = RunPhase.PENDING
    started_at: float | None = None
    finished_at: float | None = None


# ---------------------------------------------------------------- facts (fetched by the edge)


class DeliveryResult(_Frozen):
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


class AgentFacts(_Frozen):
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


class SchedulerPolicy(_Frozen):
    heartbeat_deadline_seconds: float = Field(default=30.0, gt=0)
    #: A delivery without any answer this long after its request left counts as outcome unknown
    #: (a launch the edge still queues has not left; after an operator restart the deliveries in
    #: flight when it died count from their decision and are retried with the same key).
    dispatch_timeout_seconds: float = Field(default=30.0, gt=0)
    kill_grace_seconds: float = Field(default=10.0, ge=0)
    #: ``spec.stuckResolution`` per JobNet name; the nearest enclosing JobNet decides.
    stuck_resolution: Mapping[str, StuckResolution] = Field(default_factory=dict)
    default_stuck_resolution: StuckResolution = "Auto"


# ---------------------------------------------------------------- decision (acted on by the edge)


class Launch(_Frozen):
    """Send ``launch`` for ``key`` to the agent on ``host`` (node details: ``graph.nodes[path]``)."""

    kind: Literal["launch"] = "launch"
    key: JobKey
    path: str
    host: str


class Kill(_Frozen):
    kind: Literal["kill"] = "kill"
    key: JobKey
    path: str
    host: str
    reason: KillReason
    grace_seconds: float


class Fence(_Frozen):
    """Send ``fence`` for ``key``: the agent claims it as never to run unless it already has it."""

    kind: Literal["fence"] = "fence"
    key: JobKey
    path: str
    host: str


class Ack(_Frozen):
    """Tell the agent its final record is stored; only after the status patch succeeded."""

    kind: Literal["ack"] = "ack"
    key: JobKey
    path: str
    host: str


class Event(_Frozen):
    """A Kubernetes Event to post on the JobRun (and log)."""

    kind: Literal["event"] = "event"
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    path: str | None = None


Action = Launch | Kill | Fence | Ack | Event


class Decision(_Frozen):
    runtime: RunRuntime
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
    #: Annotation keys that were applied (or refused with an Event): remove them after the
    #: status patch succeeded.
    consumed_annotations: tuple[str, ...] = ()


class IllegalTransition(RuntimeError):
    """The scheduler tried a transition the table forbids: a bug, never bad input."""


# ---------------------------------------------------------------- the reconcile


def reconcile(
    graph: RunGraph,
    runtime: RunRuntime,
    facts: AgentFacts,
    policy: SchedulerPolicy,
    now: float,
    *,
    annotations: Mapping[str, str] | None = None,
    annotated_by: str | None = None,
    overrides: Iterable[OverrideRequest] = (),
    stops: Iterable[StopRequest] = (),
) -> Decision:
    """Decide what the run does next. Pure and deterministic.

    ``annotations`` are the JobRun's annotations: ``jobnet.dev/stop`` and
    ``jobnet.dev/override`` are parsed against the current state (stops first), every problem
    becomes a Warning Event, and :attr:`Decision.consumed_annotations` names the keys the edge
    removes once the status is persisted. Who asked is ``jobnet.dev/stop-by`` /
    ``jobnet.dev/override-by`` (stamped by the admission webhook), else ``annotated_by``. ``overrides``/``stops`` are the same requests already
    parsed (they are validated again here).
    """
    reconciler = _Reconciler(graph, runtime, facts, policy, now)
    return reconciler.run(dict(annotations or {}), annotated_by, tuple(overrides), tuple(stops))


def _with_reason(message: str, reason: str | None) -> str:
    """An override's message, followed by the reason the person gave (if any)."""
    return f"{message}: {reason}" if reason else message


def job_states(graph: RunGraph, runtime: RunRuntime) -> dict[str, JobState]:
    """The state of every job of the graph (Pending when the runtime has no entry yet)."""
    return {
        node.path: runtime.jobs[node.path].state if node.path in runtime.jobs else S.PENDING for node in graph.jobs()
    }


class _Reconciler:
    def __init__(
        self, graph: RunGraph, runtime: RunRuntime, facts: AgentFacts, policy: SchedulerPolicy, now: float
    ) -> None:
        self.graph = graph
        self.runtime = runtime
        self.facts = facts
        self.policy = policy
        self.now = now
        known = runtime.jobs
        self.jobs: dict[str, JobRuntime] = {node.path: known.get(node.path, _NEVER_LAUNCHED) for node in graph.jobs()}
        self.stop_scopes: list[str] = list(runtime.stop_scopes)
        self.settlements: list[Settlement] = list(runtime.settlements)
        self.records: dict[str, JobRecord] = dict(facts.records)
        self.actions: list[Action] = []
        self.changed: set[str] = set()
        self.wakeups: list[float] = []
        self.heard_floors: dict[str, float] = {}
        self.jobnet_states: dict[str, JobState] = {}
        self.consumed: tuple[str, ...] = ()

    # -------------------------------------------------------------- helpers

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
        parent = self.node(path).parent
        while parent is not None:
            jobnet = self.node(parent)
            if jobnet.expanded_from is not None and jobnet.expanded_from in self.policy.stuck_resolution:
                return self.policy.stuck_resolution[jobnet.expanded_from]
            parent = jobnet.parent
        return self.policy.default_stuck_resolution

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str, path: str | None) -> None:
        self.actions.append(Event(type=type_, reason=reason, message=message, path=path))

    def update(self, path: str, *, override: bool = False, **changes: object) -> JobRuntime:
        job = self.jobs[path]
        new_state = changes.get("state", job.state)
        assert isinstance(new_state, JobState)
        if new_state != job.state:
            allowed = override_allowed if override else automatic_transition_allowed
            if not allowed(job.state, new_state):
                raise IllegalTransition(f"{path}: {job.state} -> {new_state} is not allowed")
            # Only an undecided job needs to know since when (heartbeat and freshness checks).
            changes["since"] = None if new_state in TERMINAL_STATES else self.now
        updated = job.model_copy(update=changes)
        if updated != job:
            self.jobs[path] = updated
            self.changed.add(path)
        return updated

    def host_of(self, path: str) -> str:
        job = self.jobs[path]
        if job.host is not None:
            return job.host
        host = self.node(path).host
        return host_id(host) if host is not None else "(no host)"

    def record_for(self, path: str) -> JobRecord | None:
        job = self.jobs[path]
        if job.attempt == 0:
            return None
        return self.records.get(self.key_text(path))

    def heard_floor(self, host: str) -> float:
        """Since when the host's jobs are known alive: its last heartbeat, but never before this
        operator started watching (an outage of the operator is not the host's silence)."""
        floor = self.heard_floors.get(host)
        if floor is None:
            beat = self.facts.heartbeats.get(host)
            floor = self.heard_floors[host] = max(beat or float("-inf"), self.facts.watching_since or float("-inf"))
        return floor

    def heard_from_host_since(self, path: str, since: float | None) -> bool:
        beat = self.facts.heartbeats.get(self.host_of(path))
        return beat is not None and (since is None or beat > since)

    # -------------------------------------------------------------- the steps

    def run(
        self,
        annotations: dict[str, str],
        annotated_by: str | None,
        overrides: tuple[OverrideRequest, ...],
        stops: tuple[StopRequest, ...],
    ) -> Decision:
        if STOP_ANNOTATION in annotations:
            parsed_stops = parse_stop_annotation(
                annotations[STOP_ANNOTATION], self.graph, annotations.get(STOP_BY_ANNOTATION) or annotated_by
            )
            for error in parsed_stops.errors:
                self.event("Warning", "StopRejected", f"{STOP_ANNOTATION}: {error}", None)
            stops = parsed_stops.requests + stops
        for stop in stops:
            self.apply_stop(stop)
        if OVERRIDE_ANNOTATION in annotations:
            parsed = parse_override_annotation(
                annotations[OVERRIDE_ANNOTATION],
                self.graph,
                {path: job.state for path, job in self.jobs.items()},
                self.stop_scopes,
                annotations.get(OVERRIDE_BY_ANNOTATION) or annotated_by,
                annotations.get(OVERRIDE_MESSAGE_ANNOTATION),
            )
            for error in parsed.errors:
                self.event("Warning", "OverrideRejected", f"{OVERRIDE_ANNOTATION}: {error}", None)
            overrides = parsed.requests + overrides
        # The message and the requester go with their annotation (a message alone waits for the
        # override it explains).
        consumable = (
            (STOP_ANNOTATION, OVERRIDE_ANNOTATION)
            + ((OVERRIDE_MESSAGE_ANNOTATION, OVERRIDE_BY_ANNOTATION) if OVERRIDE_ANNOTATION in annotations else ())
            + ((STOP_BY_ANNOTATION,) if STOP_ANNOTATION in annotations else ())
        )
        self.consumed = tuple(key for key in consumable if key in annotations)
        for override in overrides:
            self.apply_override(override)
        for delivery in self.facts.deliveries:
            self.apply_delivery(delivery)
        # Only launched, undecided jobs can learn anything from the agents or time out.
        live = [
            path
            for path, job in self.jobs.items()
            if job.state in _LIVE_STATES
            or (job.state == S.READY and job.dispatch is not None)  # a re-run waiting for its fence
        ]
        for path in live:
            self.apply_record(path)
        for path in live:
            self.check_liveness(path)
        root_state = self.walk(
            self.graph.root, gate_open=True, blocked=None, scope=self.scope_here(self.graph.root, None)
        )
        self.jobnet_states[self.graph.root] = root_state
        self.ack_settled_records()
        return self.decide(root_state)

    def ack_settled_records(self) -> None:
        """Acknowledge every ended, unacknowledged record the run is done with: its job's current
        attempt once the job is settled (finished, or set by a person while Stuck), and any
        attempt a newer one replaced (a fenced key, an earlier run). The agent then forgets it
        after its retention instead of reporting it to every operator start as news. Asked every
        round until the acknowledged record comes back; the edge sends one ack per record.
        Runs after the walk, so that a re-run launched this round already supersedes its key."""
        # Cheapest tests first: this looks at every record of a large run each round.
        ended = [
            record
            for record in self.records.values()
            if not record.acknowledged and record.state in TERMINAL_RECORD_STATES
        ]
        for record in ended:
            path = record.key.path
            job = self.jobs.get(path)
            if job is None:
                continue
            superseded = record.key.attempt < job.attempt
            settled = record.key.attempt == job.attempt and job.state in TERMINAL_STATES
            if superseded or settled:
                self.actions.append(Ack(key=record.key, path=path, host=self.host_of(path)))

    def scope_here(self, path: str, inherited: str | None) -> str | None:
        return inherited or (path if path in self.stop_scopes else None)

    def apply_stop(self, stop: StopRequest) -> None:
        scope, error = resolve_path(self.graph, stop.path)
        if scope is None:
            self.event("Warning", "StopRejected", f"cannot stop: {error}", stop.path)
            return
        if scope not in self.stop_scopes:
            self.stop_scopes.append(scope)
        who = f" by {stop.by}" if stop.by else ""
        self.event("Normal", "StopRequested", f"stop of {scope} requested{who}", scope)
        for path in jobs_under(self.graph, scope):
            # A repeated stop re-delivers the kill to Stuck jobs that may still run (F02, F10);
            # one whose process the agent reports ended has nothing left to kill.
            record = self.record_for(path)
            if self.jobs[path].state == S.STUCK and (record is None or not record.terminal):
                self.start_kill(path, "stop")

    def apply_override(self, request: OverrideRequest) -> None:
        states = {path: job.state for path, job in self.jobs.items()}
        target, problem = resolve_path(self.graph, request.path)
        if target is not None:
            problem = override_problem(self.graph, states, self.stop_scopes, target, request.state)
        if target is None or problem is not None:
            self.event(
                "Warning",
                "OverrideRejected",
                f"override {request.path}={request.state} refused: {problem}",
                request.path,
            )
            return
        for path in override_targets(self.graph, states, target, request.state):
            if request.state == S.READY and self.launch_unconfirmed(path):
                if self.jobs[path].state == S.FAILED:
                    # Failed by a person: the re-run is applied at once but waits, Ready, for the fence.
                    self.settle_by_override(path, S.READY, request.by, request.message)
                self.start_fence(path, request.by, request.message)
            else:
                self.settle_by_override(path, request.state, request.by, request.message)

    def settle_by_override(self, path: str, state: JobState, by: str | None, reason: str | None) -> None:
        job = self.jobs[path]
        who = by or "an override annotation"
        was = f"{job.state}" + (f" ({job.reason})" if job.reason else "")
        if state == S.READY:
            message = _with_reason(
                f"re-run requested by {who} (was {was}); it runs as attempt {job.attempt + 1}", reason
            )
            self.update(
                path,
                override=True,
                state=S.READY,
                reason=Reason.OVERRIDDEN,
                message=message,
                pid=None,
                exit_code=None,
                started_at=None,
                finished_at=None,
                deadline=None,
                kill_reason=None,
                dispatch=None,
            )
        else:
            message = _with_reason(f"set to {state} by {who} (was {was})", reason)
            self.update(
                path,
                override=True,
                state=state,
                reason=Reason.OVERRIDDEN,
                message=message,
                finished_at=self.now,
                dispatch=None,
            )
        self.settlements.append(
            Settlement(path=path, from_state=job.state, to_state=state, by=by, at=self.now, message=message)
        )
        self.event("Normal", "Overridden", f"{path}: {message}", path)

    def launch_unconfirmed(self, path: str) -> bool:
        """The agent never confirmed the current attempt: its launch may still reach the agent.

        That is a job Stuck LaunchOutcomeUnknown, or one a person then set Failed (no pid, never
        started). (A job Stuck HostDown before any record was being stopped: its scope refuses Ready.)
        """
        job = self.jobs[path]
        if job.attempt == 0 or self.record_for(path) is not None:
            return False
        if job.state == S.STUCK:
            return job.reason == StuckReason.LAUNCH_OUTCOME_UNKNOWN
        return job.state == S.FAILED and job.reason == Reason.OVERRIDDEN and job.pid is None and job.started_at is None

    def awaits_auto_fence(self, path: str) -> bool:
        """Stuck LaunchOutcomeUnknown under stuckResolution Auto, no fence on its way yet."""
        job = self.jobs[path]
        return (
            job.state == S.STUCK
            and job.reason == StuckReason.LAUNCH_OUTCOME_UNKNOWN
            and job.dispatch is None
            and self.resolution(path) == "Auto"
        )

    def fence_if_provably_missing(self, path: str) -> None:
        """The agent, heard with a caught-up heartbeat since the job went Stuck (its journal
        replay is complete), has no record of the key: the operator fences it itself and re-sends
        the job once the agent confirms. Until heard, look again: a heartbeat alone wakes no one."""
        if self.heard_from_host_since(path, self.jobs[path].since):
            self.start_fence(path, AUTO_RESOLVER, None)
        else:
            self.wakeups.append(self.now + self.policy.heartbeat_deadline_seconds / 3)

    def start_fence(self, path: str, by: str | None, reason: str | None) -> None:
        """Before attempt N+1 may run, make sure attempt N never will (the job stays Stuck, or
        Ready after a re-run of a Failed job, meanwhile)."""
        job = self.jobs[path]
        pending = job.dispatch
        if pending is not None and pending.op == "fence":
            if pending.override_by == AUTO_RESOLVER and by != AUTO_RESOLVER:
                # A person's override to Ready replaces the automatic one: theirs is recorded.
                self.update(path, dispatch=pending.model_copy(update={"override_by": by, "override_message": reason}))
            return  # the same override again: the fence is already on its way
        self.update(
            path,
            dispatch=Dispatch(
                op="fence", attempts_used=1, last_attempt_at=self.now, override_by=by, override_message=reason
            ),
        )
        self.send(path, "fence")
        self.wakeups.append(self.now + self.policy.dispatch_timeout_seconds)
        if by == AUTO_RESOLVER:
            why = (
                f"{path}: {self.host_of(path)} is heard again with its journal caught up and has no record of "
                f"attempt {job.attempt}; fencing it (its launch may still arrive there) before re-sending the job "
                f"as attempt {job.attempt + 1}"
            )
        else:
            why = (
                f"{path}: the override to Ready by {by or 'an override annotation'} waits until attempt {job.attempt} "
                f"is fenced on {self.host_of(path)} (its launch may still arrive there); attempt {job.attempt + 1} "
                "runs only once the agent confirms it never ran"
            )
        self.event("Normal", "FenceRequested", _with_reason(why, reason), path)

    def settle_fence(self, path: str, record: JobRecord) -> None:
        """The agent's answer about the fenced key decides the waiting override to Ready."""
        job = self.jobs[path]
        assert job.dispatch is not None and job.dispatch.op == "fence"
        by = job.dispatch.override_by
        if record.fenced:
            if job.state == S.READY:
                self.update(path, dispatch=None)  # the re-run was applied already: it launches now
            elif by == AUTO_RESOLVER:
                self.resend_after_fence(path)
            else:
                self.settle_by_override(path, S.READY, by, job.dispatch.override_message)
            return
        if by == AUTO_RESOLVER:
            # The key did reach the agent: the job takes its real state (auto resolution).
            self.update(path, dispatch=None)
            self.apply_record(path)
            return
        found = describe_record(record)
        message = f"override to Ready by {by or 'an override annotation'} not applied: attempt {job.attempt} was found {found} on the VM"
        if job.state == S.READY:
            # A re-run of a job a person had set Failed: it stays Failed (settle it again, now knowing).
            message = f"{message}; it stays Failed as set before"
            self.update(path, state=S.FAILED, message=message, finished_at=self.now, dispatch=None)
            self.settlements.append(
                Settlement(
                    path=path, from_state=S.READY, to_state=S.FAILED, by=AUTO_RESOLVER, at=self.now, message=message
                )
            )
            self.event("Warning", "OverrideNotApplied", f"{path}: {message}", path)
            return
        outcome = record_outcome(record, kill_reason=job.kill_reason)
        if outcome is not None and outcome.state == S.STUCK:
            self.update(path, dispatch=None)
            self.make_stuck(path, StuckReason.SUPERVISOR_LOST, detail=record.message or record.state)
        elif outcome is not None:
            self.finish(path, record)
        else:
            self.enter_running(path, record)
        target = self.jobs[path].state
        if target != S.STUCK:
            self.settlements.append(
                Settlement(
                    path=path, from_state=S.STUCK, to_state=target, by=AUTO_RESOLVER, at=self.now, message=message
                )
            )
        self.event("Warning", "OverrideNotApplied", f"{path}: {message}; the job is {target}", path)

    def resend_after_fence(self, path: str) -> None:
        """The agent confirmed the fence of a launch that never reached it: run the job again as
        the next attempt, an automatic settlement (Stuck -> Ready) like a person's override."""
        job = self.jobs[path]
        message = (
            f"resolved automatically: the launch of attempt {job.attempt} never reached {self.host_of(path)} "
            f"(the agent confirms it fenced the key); re-sent as attempt {job.attempt + 1} "
            f"(was Stuck: {job.reason})"
        )
        self.update(
            path,
            override=True,
            state=S.READY,
            reason=None,
            message=message,
            pid=None,
            exit_code=None,
            started_at=None,
            finished_at=None,
            deadline=None,
            kill_reason=None,
            dispatch=None,
        )
        self.settlements.append(
            Settlement(path=path, from_state=S.STUCK, to_state=S.READY, by=AUTO_RESOLVER, at=self.now, message=message)
        )
        self.event("Normal", "StuckResolved", f"{path}: {message}", path)

    def apply_delivery(self, result: DeliveryResult) -> None:
        path = result.key.path
        job = self.jobs.get(path)
        dispatch = job.dispatch if job is not None else None
        if job is None or dispatch is None or job.attempt != result.key.attempt or dispatch.op != result.op:
            return  # stale: about an earlier attempt, or already settled by a record
        if result.outcome == "delivered" and result.op == "fence":
            assert result.record is not None
            self.remember(result.record)  # settled by apply_record, like the same record seen in a watch
            return
        if result.outcome == "delivered":
            self.update(path, dispatch=None)
            if result.record is not None:
                self.remember(result.record)
            elif result.op == "kill":
                self.update(
                    path,
                    state=S.STOPPED,
                    reason=Reason.STOP_REQUESTED,
                    finished_at=self.now,
                    message="stopped: the agent never received the launch, so the script never ran",
                )
                self.event("Normal", "JobStopped", f"{path}: {self.jobs[path].message}", path)
            if result.deduplicated and result.op == "launch":
                self.event(
                    "Normal",
                    "LaunchDeduplicated",
                    f"{path}: the agent had already accepted {result.key}; not started again",
                    path,
                )
            return
        self.update(
            path,
            dispatch=dispatch.model_copy(
                update={
                    "in_flight": False,
                    "unknown_seen": dispatch.unknown_seen or result.outcome == "unknown",
                    "last_error": result.error_code or "ConnectionLost",
                    "last_error_message": result.error_message,
                }
            ),
        )

    def remember(self, record: JobRecord) -> None:
        text = record.key.text()
        known = self.records.get(text)
        if known is None or record.seq >= known.seq:
            self.records[text] = record

    def apply_record(self, path: str) -> None:
        job = self.jobs[path]
        record = self.record_for(path)
        if record is None:
            if job.state in (S.RUNNING, S.STOPPING) and self.key_text(path) in self.facts.absent_keys:
                self.make_stuck(path, StuckReason.AGENT_LOST, detail=f"key {self.key(path)}")
            elif self.awaits_auto_fence(path):
                self.fence_if_provably_missing(path)
            return
        if job.dispatch is not None and job.dispatch.op == "fence":
            self.settle_fence(path, record)
            return
        outcome = record_outcome(record, kill_reason=job.kill_reason)
        if outcome is not None and outcome.state == S.STUCK:
            # A final record that proves nothing (`lost`): only a person can settle it.
            if job.state != S.STUCK or job.reason != outcome.reason:
                self.make_stuck(path, StuckReason.SUPERVISOR_LOST, detail=record.message or record.state)
            return
        if job.state == S.STUCK:
            self.resolve_stuck(path, record)
            return
        if outcome is not None:
            self.finish(path, record)
        elif job.state == S.STARTING:
            self.enter_running(path, record)
        elif record.pid is not None and record.pid != job.pid:
            self.update(path, pid=record.pid, started_at=record.started_at or job.started_at)

    def enter_running(self, path: str, record: JobRecord) -> None:
        timeout = self.node(path).timeout_seconds
        job = self.jobs[path]
        self.update(
            path,
            state=S.RUNNING,
            reason=None,
            message=None,
            dispatch=None,
            pid=record.pid,
            started_at=record.started_at or self.now,
            deadline=job.deadline or (self.now + timeout if timeout else None),
        )

    def finish(self, path: str, record: JobRecord) -> None:
        job = self.jobs[path]
        outcome = record_outcome(record, kill_reason=job.kill_reason)
        assert outcome is not None
        self.update(
            path,
            state=outcome.state,
            reason=outcome.reason,
            message=outcome.message,
            exit_code=outcome.exit_code,
            pid=record.pid or job.pid,
            dispatch=None,
            started_at=record.started_at or job.started_at,
            finished_at=record.ended_at or self.now,
        )
        if outcome.state == S.FAILED:
            self.event("Warning", "JobFailed", f"{path} failed ({outcome.reason}): {outcome.message}", path)
        elif outcome.state == S.STOPPED:
            self.event("Normal", "JobStopped", f"{path}: {outcome.message}", path)

    def resolve_stuck(self, path: str, record: JobRecord) -> None:
        job = self.jobs[path]
        outcome = record_outcome(record, kill_reason=job.kill_reason)
        fresh = self.heard_from_host_since(path, job.since)
        if outcome is None:
            # A live record only proves something when the agent spoke after we got stuck
            # (an old `running` record from before a cut proves nothing).
            if not fresh:
                return
            if job.reason in (StuckReason.STOP_OUTCOME_UNKNOWN, StuckReason.HOST_DOWN):
                if not record.kill_requested:
                    return  # the kill never arrived: the person stops it again (F02)
                target, why = S.STOPPING, "the agent confirms the kill was delivered"
            else:
                target, why = S.RUNNING, f"the agent reports the job {describe_record(record)}"
        else:
            target, why = outcome.state, f"the agent reports the job {describe_record(record)}"
        if self.resolution(path) == "Manual":
            stuck_text = (job.message or "").split(_KNOWN_MARKER)[0]
            message = f"{stuck_text}{_KNOWN_MARKER}{why}; settle it with an override (stuckResolution: Manual)"
            if message != job.message:
                self.update(path, message=message)
                self.event("Normal", "StuckOutcomeKnown", f"{path}: {why}; waiting for an override", path)
            return
        message = f"resolved automatically: {why} (was Stuck: {job.reason})"
        if outcome is not None:
            self.finish(path, record)
        elif target == S.RUNNING:
            self.enter_running(path, record)
        else:
            self.update(path, state=S.STOPPING, dispatch=None, reason=None, message=None)
        outcome_message = outcome.message if outcome is not None else None
        self.update(path, message=f"{outcome_message}; {message}" if outcome_message else message)
        self.settlements.append(
            Settlement(path=path, from_state=S.STUCK, to_state=target, by=AUTO_RESOLVER, at=self.now, message=message)
        )
        self.event("Normal", "StuckResolved", f"{path}: {message}", path)

    def make_stuck(self, path: str, reason: StuckReason, *, attempts: int = 0, detail: str = "") -> None:
        message = stuck_message(reason, host=self.host_of(path), attempts=attempts, detail=detail)
        if self.jobs[path].state == S.STUCK:
            # Already Stuck; what the agent says now is more precise: the reason changes, and the
            # job stays Stuck since the same moment.
            self.update(path, reason=reason, message=message)
        else:
            self.update(path, state=S.STUCK, reason=reason, message=message, dispatch=None)
        self.event("Warning", "JobStuck", f"{path} is Stuck ({reason}): {message}", path)

    def check_liveness(self, path: str) -> None:
        job = self.jobs[path]
        dispatch = job.dispatch
        if dispatch is not None and dispatch.interrupted:
            self.resend_interrupted(path, dispatch)
            return
        if dispatch is not None and dispatch.op == "fence":
            self.check_fence(path, dispatch)
            return
        if dispatch is not None and job.state in (S.STARTING, S.STOPPING):
            self.check_dispatch(path, dispatch)
            return
        if job.state in _HEARTBEAT_WATCHED:
            reference = max(self.heard_floor(self.host_of(path)), job.since or self.now)
            limit = reference + self.policy.heartbeat_deadline_seconds
            if self.now > limit:
                self.make_stuck(path, StuckReason.HEARTBEAT_LOST, detail=f"{self.now - reference:.0f}s")
                return
            self.wakeups.append(limit)
        if job.state == S.RUNNING and job.deadline is not None:
            if self.now >= job.deadline:
                self.event(
                    "Warning",
                    "JobTimedOut",
                    f"{path} exceeded its timeout of {self.node(path).timeout_seconds}s; stopping it",
                    path,
                )
                self.start_kill(path, "timeout")
            else:
                self.wakeups.append(job.deadline)

    def resend_interrupted(self, path: str, dispatch: Dispatch) -> None:
        """The request may or may not have reached the agent before its sender stopped: the
        same key again settles it either way (the agent carries it out once, or answers with
        what it did), so the operator's restart never costs a job an attempt or a Stuck. A launch
        under a stopped scope is never sent again: it may have arrived, so a kill by the same key
        settles it instead (the agent kills it, or answers it never saw the key: Stopped)."""
        if dispatch.op == "launch" and scope_of(self.graph, path, self.stop_scopes) is not None:
            self.start_kill(path, "stop")
            return
        self.update(
            path,
            dispatch=dispatch.model_copy(update={"interrupted": False, "in_flight": True, "last_attempt_at": self.now}),
        )
        self.send(path, dispatch.op)
        self.wakeups.append(self.now + self.policy.dispatch_timeout_seconds)

    def unanswered(self, path: str, dispatch: Dispatch) -> Dispatch | None:
        """The dispatch once no answer can come any more, or None while one still may."""
        if not dispatch.in_flight:
            return dispatch
        sent_at = dispatch.last_attempt_at
        if dispatch.op == "launch":
            key = self.key_text(path)
            if key in self.facts.queued_launches:
                # Not sent yet: its answer is not due. The edge reports its result whatever
                # becomes of it; this later look is only a backstop.
                self.wakeups.append(self.now + self.policy.dispatch_timeout_seconds)
                return None
            sent_at = max(sent_at, self.facts.launch_sent_at.get(key, sent_at))
        expires = sent_at + self.policy.dispatch_timeout_seconds
        if self.now < expires:
            self.wakeups.append(expires)
            return None
        dispatch = dispatch.model_copy(
            update={
                "in_flight": False,
                "unknown_seen": True,
                "last_error": "NoAnswer",
                "last_error_message": f"no answer within {self.policy.dispatch_timeout_seconds:g}s",
            }
        )
        self.update(path, dispatch=dispatch)
        return dispatch

    def check_fence(self, path: str, pending: Dispatch) -> None:
        """A fence is retried until the agent answers, however long: the re-run waits for it."""
        dispatch = self.unanswered(path, pending)
        if dispatch is None:
            return
        due = dispatch.last_attempt_at + self.retry(path).interval_seconds
        if self.now < due:
            self.wakeups.append(due)
            return
        if dispatch.attempts_used == 1:
            self.event(
                "Warning",
                "FenceRetried",
                f"{path}: the fence of attempt {self.jobs[path].attempt} did not reach {self.host_of(path)} "
                f"({dispatch.last_error_message or dispatch.last_error}); the job stays Stuck and the fence is "
                f"retried every {self.retry(path).interval_seconds:g}s until the agent answers",
                path,
            )
        self.update(
            path,
            dispatch=dispatch.model_copy(
                update={"attempts_used": dispatch.attempts_used + 1, "last_attempt_at": self.now, "in_flight": True}
            ),
        )
        self.send(path, "fence")

    def check_dispatch(self, path: str, pending: Dispatch) -> None:
        dispatch = self.unanswered(path, pending)
        if dispatch is None:
            return
        retry = self.retry(path)
        last = dispatch.last_error_message or dispatch.last_error or "unknown error"
        scope = scope_of(self.graph, path, self.stop_scopes)
        if dispatch.op == "launch" and scope is not None:
            # Stopped while its launch failed: never launch again under a stopped scope.
            if dispatch.unknown_seen:
                self.start_kill(path, "stop")  # it may have arrived: a kill by the same key settles it
            else:
                self.update(
                    path,
                    state=S.STOPPED,
                    reason=Reason.STOP_REQUESTED,
                    dispatch=None,
                    finished_at=self.now,
                    message=f"not started: {scope} was stopped (the launch never reached the agent)",
                )
            return
        if dispatch.attempts_used < retry.dispatch_attempts:
            due = dispatch.last_attempt_at + retry.interval_seconds
            if self.now < due:
                self.wakeups.append(due)
                return
            self.update(
                path,
                dispatch=dispatch.model_copy(
                    update={"attempts_used": dispatch.attempts_used + 1, "last_attempt_at": self.now, "in_flight": True}
                ),
            )
            self.event(
                "Warning",
                "DeliveryRetried",
                f"{path}: {dispatch.op} attempt {dispatch.attempts_used} to {self.host_of(path)} failed ({last}); "
                f"retrying with the same key ({dispatch.attempts_used + 1}/{retry.dispatch_attempts})",
                path,
            )
            self.send(path, dispatch.op)
            return
        attempts = dispatch.attempts_used
        if dispatch.op == "launch" and not dispatch.unknown_seen:
            code = dispatch.last_error or Reason.HOST_UNREACHABLE
            message = f"could not deliver the launch to {self.host_of(path)} after {attempts} attempt(s): {last}"
            self.update(path, state=S.FAILED, reason=code, message=message, dispatch=None, finished_at=self.now)
            self.event("Warning", "JobFailed", f"{path} failed ({code}): {message}", path)
        elif dispatch.op == "launch":
            self.make_stuck(path, StuckReason.LAUNCH_OUTCOME_UNKNOWN, attempts=attempts, detail=last)
        elif not dispatch.unknown_seen and dispatch.last_error == Reason.HOST_UNREACHABLE:
            self.make_stuck(path, StuckReason.HOST_DOWN, attempts=attempts, detail=last)
        else:
            self.make_stuck(path, StuckReason.STOP_OUTCOME_UNKNOWN, attempts=attempts, detail=last)

    def send(self, path: str, op: DispatchOp) -> None:
        job = self.jobs[path]
        key = self.key(path)
        if op == "launch":
            self.actions.append(Launch(key=key, path=path, host=self.host_of(path)))
        elif op == "fence":
            self.actions.append(Fence(key=key, path=path, host=self.host_of(path)))
        else:
            self.actions.append(
                Kill(
                    key=key,
                    path=path,
                    host=self.host_of(path),
                    reason=job.kill_reason or "stop",
                    grace_seconds=self.policy.kill_grace_seconds,
                )
            )

    def start_kill(self, path: str, reason: KillReason) -> None:
        job = self.jobs[path]
        kill_reason = job.kill_reason or reason
        self.update(
            path,
            state=S.STOPPING,
            kill_reason=kill_reason,
            reason=None,
            message=f"kill requested ({kill_reason})",
            dispatch=Dispatch(op="kill", attempts_used=1, last_attempt_at=self.now),
        )
        self.send(path, "kill")
        self.wakeups.append(self.now + self.policy.dispatch_timeout_seconds)

    def launch(self, path: str) -> None:
        node = self.node(path)
        job = self.jobs[path]
        if node.host is None:
            self.update(
                path,
                state=S.FAILED,
                reason=Reason.NO_HOST,
                finished_at=self.now,
                message="no host: neither the job nor any enclosing JobNet sets `host`",
            )
            self.event("Warning", "JobFailed", f"{path} failed ({Reason.NO_HOST}): {self.jobs[path].message}", path)
            return
        self.update(
            path,
            state=S.STARTING,
            attempt=job.attempt + 1,
            host=host_id(node.host),
            reason=None,
            message=None,
            pid=None,
            exit_code=None,
            started_at=None,
            finished_at=None,
            deadline=None,
            kill_reason=None,
            dispatch=Dispatch(op="launch", attempts_used=1, last_attempt_at=self.now),
        )
        self.send(path, "launch")
        self.wakeups.append(self.now + self.policy.dispatch_timeout_seconds)

    # -------------------------------------------------------------- gates (the DAG walk)

    def walk(self, jobnet: str, *, gate_open: bool, blocked: str | None, scope: str | None) -> JobState:
        """Schedule the children of ``jobnet`` in topological order; return its derived state."""
        nodes, jobs, stop_scopes = self.graph.nodes, self.jobs, self.stop_scopes
        states: dict[str, JobState] = {}
        normal_ended: bool | None = None  # known once the first finally child comes (they come last)
        for child_path in nodes[jobnet].children:
            child = nodes[child_path]
            if child.is_finally and normal_ended is None:
                normal_ended = all(state in TERMINAL_STATES for state in states.values())
            after_succeeded = True
            child_blocked = blocked
            for dep in child.after:
                dep_state = states[dep]
                if dep_state != S.SUCCEEDED:
                    after_succeeded = False
                    if dep_state in TERMINAL_STATES:
                        child_blocked = child_blocked or f"upstream {dep} is {dep_state}"
                        break
            child_open = (
                gate_open
                and child_blocked is None
                and after_succeeded
                and (not child.is_finally or normal_ended is True)
            )
            child_scope = scope or (child_path if child_path in stop_scopes else None)
            if child.kind == "job":
                state = jobs[child_path].state
                # Only a job not yet launched, or one under a stopped scope, may change here; a
                # Pending job whose gate stays closed (most of a large run) does not either.
                if child_scope is not None or (
                    state in UNLAUNCHED_STATES and (child_open or child_blocked is not None or state != S.PENDING)
                ):
                    state = self.schedule_job(child_path, child_open, child_blocked, child_scope)
                states[child_path] = state
            else:
                state = self.walk(child_path, gate_open=child_open, blocked=child_blocked, scope=child_scope)
                self.jobnet_states[child_path] = states[child_path] = state
        return derive_jobnet_state(states.values())

    def schedule_job(self, path: str, gate_open: bool, blocked: str | None, scope: str | None) -> JobState:
        job = self.jobs[path]
        if job.state in UNLAUNCHED_STATES:
            if scope is not None:
                self.update(
                    path,
                    state=S.STOPPED,
                    reason=Reason.STOP_REQUESTED,
                    finished_at=self.now,
                    message=f"not started: {scope} was stopped",
                    dispatch=None,
                )
            elif blocked is not None:
                self.update(
                    path,
                    state=S.SKIPPED,
                    reason=Reason.UPSTREAM_NOT_SUCCEEDED,
                    message=f"not run: {blocked}",
                    dispatch=None,
                )
            elif job.dispatch is not None:
                pass  # a re-run waiting for the fence of the previous attempt
            elif gate_open:
                self.launch(path)
            elif job.state == S.SKIPPED:
                self.update(path, state=S.PENDING, reason=None, message=None)
        elif job.state == S.RUNNING and scope is not None:
            self.start_kill(path, "stop")
        return self.jobs[path].state

    # -------------------------------------------------------------- summary

    def decide(self, root_state: JobState) -> Decision:
        phase = run_phase(root_state)
        old = self.runtime
        started_at = old.started_at
        if started_at is None and phase != RunPhase.PENDING:
            started_at = self.now
        finished = phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)
        finished_at = (old.finished_at or self.now) if finished else None
        counts = self.counts()
        if phase != old.phase and phase not in (RunPhase.PENDING, RunPhase.RUNNING):
            detail = ", ".join(f"{count} {state}" for state, count in counts.items())
            self.event(
                "Warning" if phase in (RunPhase.FAILED, RunPhase.STUCK) else "Normal",
                f"Run{phase}",
                f"run is {phase}: {detail}",
                None,
            )
        runtime = RunRuntime(
            run_uid=old.run_uid,
            jobs=self.jobs,
            stop_scopes=tuple(self.stop_scopes),
            settlements=tuple(self.settlements),
            phase=phase,
            started_at=started_at,
            finished_at=finished_at,
        )
        done = sum(count for state, count in counts.items() if state in TERMINAL_STATES)
        future = [time for time in self.wakeups if time > self.now]
        return Decision(
            runtime=runtime,
            actions=tuple(self.actions),
            changed=frozenset(self.changed),
            jobnet_states=self.jobnet_states,
            progress=f"{done}/{len(self.jobs)}",
            counts=counts,
            next_wakeup_at=min(future) if future else None,
            consumed_annotations=self.consumed,
        )

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.state] = counts.get(job.state, 0) + 1
        return {str(state): count for state, count in sorted(counts.items())}


def new_runtime(run_uid: str) -> RunRuntime:
    """The runtime of a run that has not started: every job Pending."""
    return RunRuntime(run_uid=run_uid)
