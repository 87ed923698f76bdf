"""Test support for the pure scheduler: build run graphs from JobNet dicts and drive reconciles.

:class:`Run` plays the edge: it keeps the runtime, feeds the agent facts (records, heartbeats,
delivery results) the test chooses into :func:`jobnet.core.scheduler.reconcile`, and keeps the
decisions for assertions. Nothing is faked inside the scheduler; only its inputs are chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.annotations import OverrideRequest, StopRequest
from jobnet.core.expansion import RunGraph, expand
from jobnet.core.models import JobNetSpec
from jobnet.core.scheduler import (
    Ack,
    AgentFacts,
    Decision,
    DeliveryResult,
    Event,
    Fence,
    Kill,
    Launch,
    RunRuntime,
    SchedulerPolicy,
    new_runtime,
    reconcile,
)
from jobnet.core.states import JobState, RunPhase

HOST = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
HOST_ID = "batch@vm1.batch.example:22"
RUN_UID = "uid-1"


def graph(root: str, **jobnets: Mapping[str, Any]) -> RunGraph:
    """Expand ``root`` from JobNets given as spec dicts (a default host is added)."""
    catalog = {name: JobNetSpec.model_validate({"host": HOST, **spec}) for name, spec in jobnets.items()}
    return expand(root, catalog, run_id=RUN_UID)


def job(name: str, *after: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "script": f"/opt/{name}.sh", "after": list(after), **extra}


def sub(name: str, jobnet: str, *after: str) -> dict[str, Any]:
    return {"name": name, "expand": jobnet, "after": list(after)}


class Run:
    """One JobRun driven through reconciles with facts the test chooses."""

    def __init__(self, run_graph: RunGraph, policy: SchedulerPolicy | None = None, now: float = 1000.0) -> None:
        self.graph = run_graph
        self.policy = policy or SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20)
        self.now = now
        self.runtime: RunRuntime = new_runtime(RUN_UID)
        self.records: dict[str, JobRecord] = {}
        self.heartbeats: dict[str, float] = {}
        self.absent: set[str] = set()
        self.deliveries: list[DeliveryResult] = []
        self.decisions: list[Decision] = []
        self.seq = 0
        self.watching_since: float | None = None
        #: the edge's launch queue: keys held back by the per-host window, and when each left
        self.queued_launches: set[str] = set()
        self.launch_sent_at: dict[str, float] = {}
        #: the JobRun is being deleted (reconcile(deleting=...))
        self.deleting = False

    # ---------------------------------------------------------- driving

    def reconcile(
        self,
        overrides: Iterable[OverrideRequest] = (),
        stops: Iterable[StopRequest] = (),
        annotations: Mapping[str, str] | None = None,
        annotated_by: str | None = None,
    ) -> Decision:
        facts = AgentFacts(
            records=dict(self.records),
            heartbeats=dict(self.heartbeats),
            absent_keys=frozenset(self.absent),
            deliveries=tuple(self.deliveries),
            watching_since=self.watching_since,
            queued_launches=frozenset(self.queued_launches),
            launch_sent_at=dict(self.launch_sent_at),
        )
        self.deliveries = []
        decision = reconcile(
            self.graph,
            self.runtime,
            facts,
            self.policy,
            self.now,
            overrides=overrides,
            stops=stops,
            annotations=annotations,
            annotated_by=annotated_by,
            deleting=self.deleting,
        )
        self.runtime = decision.runtime
        self.decisions.append(decision)
        return decision

    def override(self, path: str, state: JobState, by: str = "alice") -> Decision:
        return self.reconcile(overrides=[OverrideRequest(path=path, state=state, by=by)])

    def stop(self, path: str) -> Decision:
        return self.reconcile(stops=[StopRequest(path=path, by="alice")])

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def queue_launch(self, *paths: str) -> None:
        """The edge holds the launches of ``paths`` back (the host's launch window is full)."""
        self.queued_launches.update(self.key(path).text() for path in paths)

    def send_launch(self, *paths: str) -> None:
        """The edge sends the queued launches of ``paths`` now."""
        for path in paths:
            text = self.key(path).text()
            self.queued_launches.discard(text)
            self.launch_sent_at[text] = self.now

    def beat(self) -> None:
        self.heartbeats[HOST_ID] = self.now

    # ---------------------------------------------------------- agent facts

    def key(self, path: str, attempt: int | None = None) -> JobKey:
        return JobKey(run=RUN_UID, path=path, attempt=attempt or self.runtime.jobs[path].attempt)

    def record(self, path: str, state: str, *, attempt: int | None = None, **fields: Any) -> JobRecord:
        """The agent journals a new state for the job's (current) key."""
        self.seq += 1
        key = self.key(path, attempt)
        defaults: dict[str, Any] = {"pid": 100 + self.seq if state != "failedToStart" else None}
        if state not in ("accepted", "running"):
            defaults["ended_at"] = self.now
        record = JobRecord(key=key, seq=self.seq, state=state, started_at=self.now, **{**defaults, **fields})
        self.records[key.text()] = record
        return record

    def exited(self, path: str, code: int = 0) -> JobRecord:
        return self.record(path, "exited", exit_code=code)

    def deliver_launch(
        self,
        path: str,
        outcome: str = "delivered",
        *,
        error_code: str | None = None,
        state: str = "running",
        deduplicated: bool = False,
        **fields: Any,
    ) -> None:
        record = self.record(path, state, **fields) if outcome == "delivered" else None
        self.deliveries.append(
            DeliveryResult(
                key=self.key(path),
                op="launch",
                outcome=outcome,
                record=record,
                deduplicated=deduplicated,
                error_code=error_code,
                error_message=error_code,
            )
        )

    def deliver_kill(
        self,
        path: str,
        outcome: str = "delivered",
        *,
        state: str | None = "killed",
        error_code: str | None = None,
        **fields: Any,
    ) -> None:
        record = None
        if outcome == "delivered" and state == "failedToStart":
            # The agent never saw the key; the edge fenced it and reports the fenced record.
            record = self.record(path, state, reason="Fenced", message="fenced before it was launched", **fields)
        elif outcome == "delivered" and state is not None:
            record = self.record(path, state, kill_requested={"reason": "stop"}, **fields)
        self.deliveries.append(
            DeliveryResult(
                key=self.key(path),
                op="kill",
                outcome=outcome,
                record=record,
                error_code=error_code,
                error_message=error_code,
            )
        )

    def deliver_fence(
        self,
        path: str,
        outcome: str = "delivered",
        *,
        state: str = "failedToStart",
        error_code: str | None = None,
        **fields: Any,
    ) -> None:
        """The agent answers the fence of the job's current key: by default, it fenced it."""
        record = None
        if outcome == "delivered":
            if state == "failedToStart":
                fields = {"reason": "Fenced", "message": "fenced before it was launched", **fields}
            record = self.record(path, state, **fields)
        self.deliveries.append(
            DeliveryResult(
                key=self.key(path),
                op="fence",
                outcome=outcome,
                record=record,
                error_code=error_code,
                error_message=error_code,
            )
        )

    def override_ready_fenced(self, path: str) -> Decision:
        """A person overrides a job whose launch is unconfirmed to Ready; the agent fences the old key."""
        self.override(path, JobState.READY)
        assert [fence.path for fence in self.fences()] == [path]
        self.deliver_fence(path)
        return self.reconcile()

    # ---------------------------------------------------------- looking

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    def state(self, path: str) -> JobState:
        job = self.runtime.jobs.get(path)
        if job is not None:
            return job.state
        return self.last.jobnet_states[path]

    def reason(self, path: str) -> str | None:
        return self.runtime.jobs[path].reason

    @property
    def phase(self) -> RunPhase:
        return self.runtime.phase

    def launched(self, decision: Decision | None = None) -> list[str]:
        return [a.path for a in (decision or self.last).actions if isinstance(a, Launch)]

    def launches(self) -> list[Launch]:
        return [a for d in self.decisions for a in d.actions if isinstance(a, Launch)]

    def kills(self, decision: Decision | None = None) -> list[Kill]:
        return [a for a in (decision or self.last).actions if isinstance(a, Kill)]

    def fences(self, decision: Decision | None = None) -> list[Fence]:
        return [a for a in (decision or self.last).actions if isinstance(a, Fence)]

    def acks(self, decision: Decision | None = None) -> list[Ack]:
        return [a for a in (decision or self.last).actions if isinstance(a, Ack)]

    def events(self, reason: str | None = None) -> list[Event]:
        return [
            a
            for d in self.decisions
            for a in d.actions
            if isinstance(a, Event) and (reason is None or a.reason == reason)
        ]

    def start_and_run(self, *paths: str) -> None:
        """The launches of ``paths`` were delivered and the jobs run."""
        for path in paths:
            self.deliver_launch(path)
        self.beat()
        self.reconcile()

    def finish(self, *paths: str, code: int = 0) -> Decision:
        for path in paths:
            self.exited(path, code)
        self.beat()
        return self.reconcile()


def failed_chain() -> Run:
    """A run of ``net``: ``a`` then ``b``, where ``a`` exited 1 in attempt 1 (Failed, ``b`` waits)."""
    run = Run(graph("net", net={"jobs": [job("a"), job("b", "a")]}))
    run.reconcile()
    run.start_and_run("/net/a")
    run.finish("/net/a", code=1)
    assert run.state("/net/a") == JobState.FAILED
    return run
