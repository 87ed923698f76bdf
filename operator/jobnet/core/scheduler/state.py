"""The scheduler's persisted state of a run: what it knows and remembers about each job.

Written to the JobRun status after every decision (:mod:`jobnet.core.runstatus`) and rebuilt
from it after an operator restart. Pure data: no I/O.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobnet.core.agentproto import KillReason
from jobnet.core.expansion import RunGraph
from jobnet.core.states import JobState, RunPhase

DispatchOp = Literal["launch", "kill", "fence"]
#: ``by`` of a settlement the operator made itself from the agent's journal.
AUTO_RESOLVER = "jobnet-operator (auto)"


class FrozenModel(BaseModel):
    """Base of the scheduler's models: immutable, so a decision never changes its inputs."""

    model_config = ConfigDict(frozen=True)


class Dispatch(FrozenModel):
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

    def next_attempt(self, now: float) -> Dispatch:
        """The same request sent again (same key) at ``now``: one more delivery attempt, in flight."""
        return self.model_copy(
            update={"attempts_used": self.attempts_used + 1, "last_attempt_at": now, "in_flight": True}
        )


class EarlierAttempt(FrozenModel):
    """How an earlier attempt of a job ended: kept when the job is run again (an override to
    Ready, or the operator's own re-send after a fence)."""

    attempt: int = Field(ge=1)
    #: The state the attempt was in when the job was run again (Stuck or Failed).
    state: JobState
    reason: str | None = None
    host: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: Who ran the job again, and when.
    rerun_by: str | None = None
    rerun_at: float


class JobRuntime(FrozenModel):
    """What the scheduler knows and remembers about one job (persisted in JobRun status)."""

    state: JobState = JobState.PENDING
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
    #: Since when the operator re-launches the job on its own because its attempts provably never
    #: ran (:mod:`jobnet.core.scheduler.relaunch`): the start of the launch retry window.
    relaunching_since: float | None = None
    #: The attempts before the current one, oldest first (at most
    #: :func:`jobnet.core.status.attempt_history_limit`), and how many older ones were dropped.
    earlier: tuple[EarlierAttempt, ...] = ()
    earlier_dropped: int = Field(default=0, ge=0)


#: The runtime of every job never launched (frozen, so one instance serves them all).
NEVER_LAUNCHED = JobRuntime()


class Settlement(FrozenModel):
    """A Stuck/Failed job settled by a person (override) or by the operator (auto resolution)."""

    path: str
    from_state: JobState
    to_state: JobState
    by: str | None
    at: float
    message: str


class RunRuntime(FrozenModel):
    """The scheduler's whole persisted state of one run."""

    run_uid: str = Field(min_length=1)
    #: One entry per job path of the graph; a missing entry means Pending, never launched.
    jobs: dict[str, JobRuntime] = Field(default_factory=dict)
    stop_scopes: tuple[str, ...] = ()
    settlements: tuple[Settlement, ...] = ()
    phase: RunPhase = RunPhase.PENDING
    started_at: float | None = None
    finished_at: float | None = None


def new_runtime(run_uid: str) -> RunRuntime:
    """The runtime of a run that has not started: every job Pending."""
    return RunRuntime(run_uid=run_uid)


def job_states(graph: RunGraph, runtime: RunRuntime) -> dict[str, JobState]:
    """The state of every job of the graph (Pending when the runtime has no entry yet)."""
    return {
        node.path: runtime.jobs[node.path].state if node.path in runtime.jobs else JobState.PENDING
        for node in graph.jobs()
    }
