"""Liveness: every launched, undecided job learns from its record and is checked for its
deadlines (delivery answers, heartbeats, its timeout) each round."""

from __future__ import annotations

from jobnet.core.scheduler.delivery import check_dispatch, resend_interrupted, start_kill
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.fencing import awaits_auto_fence, check_fence, fence_if_provably_missing, settle_fence
from jobnet.core.scheduler.records import make_stuck, take_record
from jobnet.core.scheduler.state import JobRuntime
from jobnet.core.states import JobState, StuckReason

S = JobState
_LIVE_STATES = frozenset({S.STARTING, S.RUNNING, S.STOPPING, S.STUCK})
_HEARTBEAT_WATCHED = frozenset({S.RUNNING, S.STOPPING})


def agent_may_have_lost(job: JobRuntime) -> bool:
    """The agent confirmed the job's current attempt (it ran, or went silent while it ran): if the
    agent answers that it does not know the key, it lost it (its state was wiped, the VM
    reinstalled). A Stopping job counts only once the agent confirmed it: it had reported the
    attempt running, or answered its kill with its record. One stopped while its launch was
    unconfirmed (Starting) is not: its launch may never have arrived, so the agent not knowing
    the key proves nothing, and the kill's answer settles it (fenced: never started)."""
    if job.state == S.STOPPING:
        return job.dispatch is None or job.pid is not None or job.started_at is not None
    return job.state == S.RUNNING or (job.state == S.STUCK and job.reason == StuckReason.HEARTBEAT_LOST)


def live_paths(draft: Draft) -> list[str]:
    """Only launched, undecided jobs can learn anything from the agents or time out."""
    return [
        path
        for path, job in draft.jobs.items()
        if job.state in _LIVE_STATES
        or (job.state == S.READY and job.dispatch is not None)  # a re-run waiting for its fence
    ]


def apply_record(draft: Draft, path: str) -> None:
    """What the agent knows of the job's current attempt (or that it knows nothing)."""
    job = draft.jobs[path]
    record = draft.record_for(path)
    if record is None:
        killing = job.dispatch is not None and job.dispatch.op == "kill"  # its answer will tell
        if agent_may_have_lost(job) and not killing and draft.key_text(path) in draft.facts.absent_keys:
            make_stuck(draft, path, StuckReason.AGENT_LOST, detail=f"key {draft.key(path)}")
        elif awaits_auto_fence(draft, path):
            fence_if_provably_missing(draft, path)
        return
    if job.dispatch is not None and job.dispatch.op == "fence":
        settle_fence(draft, path, record)
        return
    take_record(draft, path, record)


def check_liveness(draft: Draft, path: str) -> None:
    job = draft.jobs[path]
    dispatch = job.dispatch
    if dispatch is not None and dispatch.interrupted:
        resend_interrupted(draft, path, dispatch)
        return
    if dispatch is not None and dispatch.op == "fence":
        check_fence(draft, path, dispatch)
        return
    if dispatch is not None and job.state in (S.STARTING, S.STOPPING):
        check_dispatch(draft, path, dispatch)
        return
    if job.state in _HEARTBEAT_WATCHED:
        reference = max(draft.facts.alive_floor(draft.host_of(path)), job.since or draft.now)
        limit = reference + draft.policy.heartbeat_deadline_seconds
        if draft.now > limit:
            make_stuck(draft, path, StuckReason.HEARTBEAT_LOST, detail=f"{draft.now - reference:.0f}s")
            return
        draft.wake_at(limit)
    if job.state == S.RUNNING and job.deadline is not None:
        if draft.now >= job.deadline:
            draft.event(
                "Warning",
                "JobTimedOut",
                f"{path} exceeded its timeout of {draft.node(path).timeout_seconds}s; stopping it",
                path,
            )
            start_kill(draft, path, "timeout")
        else:
            draft.wake_at(job.deadline)
