"""Event names, and the Events a run's status implies (pure).

Every Event the runtime posts has a name derived from what it is about (:func:`event_name`), so
that posting it again (a retry after a lost answer, a restarted operator posting what its status
implies) is answered 409 AlreadyExists by the API server instead of storing it twice.

The identity of an Event (what its name is a digest of) is what the status records durably about
the occurrence, the same in the round that posts it and in an operator that reads the status
later (times as the status spells them, RFC 3339 with milliseconds):

* ``RunSucceeded``, ``RunFailed``, ``RunStopped``: the phase and ``finishedAt`` (a run that is
  re-run after it finished finishes again at a new time);
* ``RunStuck``: the Stuck jobs with the time each entered Stuck, and how many settlements and
  stop scopes the run has (the run leaves Stuck and comes back only after something changed);
* ``JobFailed``, ``JobStopped``: the job, its attempt, how often it was run again and
  ``finishedAt``;
* ``JobStuck``: the job, its attempt, how often it was run again, since when it is Stuck and
  its reason (a Stuck job whose reason becomes more precise is reported again);
* any other Event: the round's time and the message. Those are not derived from the status
  after a restart (see :func:`implied_events`), so their name only has to be the same for the
  retries of one post and different between posts.

:func:`implied_events` lists the Events of the first kinds that the status of a run implies
(its terminal Event and each job's Failed/Stopped/Stuck Event), for an operator that may have
died between a status write and its Events: posted again, they cost a 409 when they exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jobnet.core.runstatus import from_rfc3339, to_rfc3339
from jobnet.core.scheduler.actions import Event
from jobnet.core.scheduler.state import JobRuntime, RunRuntime
from jobnet.core.states import JobState, RunPhase

#: Longest object name a real API server accepts (a DNS-1123 subdomain).
EVENT_NAME_MAX = 253
#: Hex characters of the identity's SHA-256 in a name (64 bits: no collision among a run's Events).
DIGEST_CHARS = 16
#: Run phases whose Event is derived from the status again: the run's terminal Events and Stuck.
DERIVED_RUN_PHASES = (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED, RunPhase.STUCK)
#: Job states whose Event is derived from the status again, and the Event's reason.
DERIVED_JOB_REASONS = {JobState.FAILED: "JobFailed", JobState.STOPPED: "JobStopped", JobState.STUCK: "JobStuck"}
#: The reason of a job a person settled with an override (its Event is ``Overridden``), kept
#: when a re-run the person asked for finds the attempt ended (its Event is ``OverrideNotApplied``).
OVERRIDDEN = "Overridden"

EventType = Literal["Normal", "Warning"]


def event_name(involved: str, *identity: str) -> str:
    """``<involved name>.<16 hex of sha256(identity)>``, the involved object's name cut so that
    the whole stays a valid DNS subdomain of at most 253 characters."""
    digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:DIGEST_CHARS]
    prefix = involved[: EVENT_NAME_MAX - DIGEST_CHARS - 1].rstrip(".-")
    return f"{prefix}.{digest}" if prefix else digest


@dataclass(frozen=True)
class JobMark:
    """What the status records of a job's current state, as the status spells it."""

    path: str
    state: str
    attempt: int
    reruns: int
    reason: str | None
    message: str | None
    since: str | None
    started_at: str | None
    finished_at: str | None

    @classmethod
    def of_runtime(cls, path: str, job: JobRuntime) -> JobMark:
        return cls(
            path=path,
            state=str(job.state),
            attempt=job.attempt,
            reruns=len(job.earlier) + job.earlier_dropped,
            reason=job.reason,
            message=job.message,
            since=to_rfc3339(job.since),
            started_at=to_rfc3339(job.started_at),
            finished_at=to_rfc3339(job.finished_at),
        )

    @classmethod
    def of_status(cls, path: str, entry: Mapping[str, Any]) -> JobMark:
        return cls(
            path=path,
            state=str(entry.get("state")),
            attempt=entry.get("attempt") or 0,
            reruns=len(entry.get("earlierAttempts") or ()) + (entry.get("earlierAttemptsDropped") or 0),
            reason=entry.get("reason"),
            message=entry.get("message"),
            since=entry.get("since"),
            started_at=entry.get("startedAt"),
            finished_at=entry.get("finishedAt"),
        )

    @property
    def event_reason(self) -> str | None:
        """The reason of the Event a status with this job implies; None: none is implied (a state
        a person set: its Event is ``Overridden``; a job stopped before it started: often none)."""
        if self.reason == OVERRIDDEN or (self.state == JobState.STOPPED and self.started_at is None):
            return None
        return DERIVED_JOB_REASONS.get(JobState(self.state))

    @property
    def at(self) -> str | None:
        """When the job entered its state."""
        return self.since if self.state == JobState.STUCK else self.finished_at

    def identity(self) -> tuple[str, ...]:
        """The identity of the Event of this job's state (see the module docstring)."""
        detail = (self.reason or "") if self.state == JobState.STUCK else ""
        return ("job", self.path, self.state, str(self.attempt), str(self.reruns), self.at or "", detail)


@dataclass(frozen=True)
class RunMark:
    """What the status records of a run's phase, as the status spells it."""

    phase: str
    finished_at: str | None
    settlements: int
    stop_scopes: int
    #: (path, since) of every Stuck job, sorted
    stuck: tuple[tuple[str, str], ...]

    @classmethod
    def of_runtime(cls, runtime: RunRuntime) -> RunMark:
        stuck = (
            (path, to_rfc3339(job.since) or "") for path, job in runtime.jobs.items() if job.state == JobState.STUCK
        )
        return cls(
            phase=str(runtime.phase),
            finished_at=to_rfc3339(runtime.finished_at),
            settlements=len(runtime.settlements),
            stop_scopes=len(runtime.stop_scopes),
            stuck=tuple(sorted(stuck)),
        )

    @classmethod
    def of_status(cls, status: Mapping[str, Any], jobs: Mapping[str, JobMark]) -> RunMark:
        stuck = ((path, job.since or "") for path, job in jobs.items() if job.state == JobState.STUCK)
        return cls(
            phase=str(status.get("phase")),
            finished_at=status.get("finishedAt"),
            settlements=len(status.get("overrides") or ()),
            stop_scopes=len(status.get("stopScopes") or ()),
            stuck=tuple(sorted(stuck)),
        )

    def identity(self) -> tuple[str, ...]:
        if self.phase == RunPhase.STUCK:
            stuck = tuple(f"{path}@{since}" for path, since in self.stuck)
            return ("run", self.phase, str(self.settlements), str(self.stop_scopes), *stuck)
        return ("run", self.phase, self.finished_at or "")


def event_identity(event: Event, runtime: RunRuntime, now: float) -> tuple[str, ...]:
    """The identity of ``event``, posted after the round (at ``now``) that left ``runtime``."""
    if event.path is None and event.reason == f"Run{runtime.phase}" and runtime.phase in DERIVED_RUN_PHASES:
        return RunMark.of_runtime(runtime).identity()
    job = runtime.jobs.get(event.path) if event.path is not None else None
    if job is not None and job.state in DERIVED_JOB_REASONS:
        mark = JobMark.of_runtime(event.path or "", job)
        if mark.event_reason == event.reason:
            return (event.reason, *mark.identity())
    return ("once", event.reason, event.path or "", event.message, repr(now))


@dataclass(frozen=True)
class ImpliedEvent:
    """An Event a run's status implies: what to post, its identity, and when it happened."""

    type: EventType
    reason: str
    message: str
    identity: tuple[str, ...]
    at: str


def implied_events(status: Mapping[str, Any], not_before: float) -> list[ImpliedEvent]:
    """The Events the decoded status of a run implies, that happened at ``not_before`` or later
    (the Event TTL: older ones are gone from the API server anyway), in the order the run posts
    them (jobs by time, the run's last).

    Derived: each job's ``JobFailed`` and ``JobStuck``, ``JobStopped`` of a job that started, and
    the run's ``RunSucceeded``/``RunFailed``/``RunStopped``/``RunStuck`` (or, for a run that never
    started, the Event that says why). Not derived: the state of a job a person set (reason
    ``Overridden``: its Event is ``Overridden``), a job stopped before it started (no Event is
    posted for most: only when a stop's kill found that the launch never arrived, JobStopped is
    posted and not derived), and every other Event (steering, deliveries, fences, resolutions: the status
    keeps no trace of them that names one occurrence)."""
    entries: Mapping[str, Any] = status.get("jobs") or {}
    jobnets = {path.rpartition("/")[0] for path in entries}
    # Only the jobs whose state has an Event (a 10,000-job run is mostly Succeeded jobs).
    jobs = {
        path: JobMark.of_status(path, entry)
        for path, entry in entries.items()
        if entry.get("state") in DERIVED_JOB_REASONS and path not in jobnets
    }
    implied: list[ImpliedEvent] = []
    for job in jobs.values():
        reason, at = job.event_reason, job.at
        if reason is None or at is None or (from_rfc3339(at) or 0.0) < not_before:
            continue
        implied.append(ImpliedEvent(*_job_event(job, reason), identity=(reason, *job.identity()), at=at))
    implied.sort(key=lambda event: event.at)
    run = RunMark.of_status(status, jobs)
    if run.phase == RunPhase.FAILED and not entries and status.get("reason") and run.finished_at is not None:
        # The run never started (an invalid JobNet): the start's Event says why (kube/app.py).
        if (from_rfc3339(run.finished_at) or 0.0) >= not_before:
            implied.append(
                ImpliedEvent(
                    "Warning",
                    status["reason"],
                    status.get("message") or "",
                    identity=start_failure_identity(run.finished_at),
                    at=run.finished_at,
                )
            )
        return implied
    run_at = run.finished_at if run.phase != RunPhase.STUCK else max((since for _, since in run.stuck), default=None)
    if run.phase in DERIVED_RUN_PHASES and run_at is not None and (from_rfc3339(run_at) or 0.0) >= not_before:
        implied.append(ImpliedEvent(*_run_event(run.phase, status), identity=run.identity(), at=run_at))
    return implied


def start_failure_identity(finished_at: str) -> tuple[str, ...]:
    """The identity of the Event of a run that failed to start at ``finished_at``."""
    return ("run", RunPhase.FAILED, finished_at)


def _job_event(job: JobMark, reason: str) -> tuple[EventType, str, str]:
    """Type, reason and message of a job's Event, as the scheduler words them."""
    if reason == "JobFailed":
        return "Warning", reason, f"{job.path} failed ({job.reason}): {job.message}"
    if reason == "JobStuck":
        return "Warning", reason, f"{job.path} is Stuck ({job.reason}): {job.message}"
    return "Normal", reason, f"{job.path}: {job.message}"


def _run_event(phase: str, status: Mapping[str, Any]) -> tuple[EventType, str, str]:
    """Type, reason and message of the run's Event (core/scheduler/summary.py words them)."""
    counts: Mapping[str, int] = status.get("counts") or {}
    detail = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    warning = phase in (RunPhase.FAILED, RunPhase.STUCK)
    return ("Warning" if warning else "Normal"), f"Run{phase}", f"run is {phase}: {detail}"
