"""Fencing: before attempt N+1 of a job may run, make sure attempt N never will.

An override to Ready (or the operator's own auto resolution) of a job whose launch the agent
never confirmed first claims the old key on the agent as never to run; the agent's answer
decides: fenced, the re-run goes ahead; found, the job takes its real state.
"""

from __future__ import annotations

from jobnet.core.agentproto import JobRecord
from jobnet.core.outcome import describe_record, record_outcome
from jobnet.core.scheduler.delivery import unanswered
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.records import (
    enter_running,
    finish,
    make_stuck,
    settle_by_override,
    take_record,
    with_reason,
)
from jobnet.core.scheduler.state import AUTO_RESOLVER, Dispatch
from jobnet.core.states import JobState, Reason, StuckReason

S = JobState


def launch_unconfirmed(draft: Draft, path: str) -> bool:
    """The agent never confirmed the current attempt: its launch may still reach the agent.

    That is a job Stuck LaunchOutcomeUnknown, or one a person then set Failed (no pid, never
    started). (A job Stuck HostDown before any record was being stopped: its scope refuses Ready.)
    """
    job = draft.jobs[path]
    if job.attempt == 0 or draft.record_for(path) is not None:
        return False
    if job.state == S.STUCK:
        return job.reason == StuckReason.LAUNCH_OUTCOME_UNKNOWN
    return job.state == S.FAILED and job.reason == Reason.OVERRIDDEN and job.pid is None and job.started_at is None


def awaits_auto_fence(draft: Draft, path: str) -> bool:
    """Stuck LaunchOutcomeUnknown under stuckResolution Auto, no fence on its way yet."""
    job = draft.jobs[path]
    return (
        job.state == S.STUCK
        and job.reason == StuckReason.LAUNCH_OUTCOME_UNKNOWN
        and job.dispatch is None
        and draft.resolution(path) == "Auto"
    )


def fence_if_provably_missing(draft: Draft, path: str) -> None:
    """The agent, heard with a caught-up heartbeat since the job went Stuck (its journal
    replay is complete), has no record of the key: the operator fences it itself and re-sends
    the job once the agent confirms. Until heard, look again: a heartbeat alone wakes no one."""
    if draft.heard_from_host_since(path, draft.jobs[path].since):
        start_fence(draft, path, AUTO_RESOLVER, None)
    else:
        draft.wake_at(draft.now + draft.policy.heartbeat_deadline_seconds / 3)


def start_fence(draft: Draft, path: str, by: str | None, reason: str | None) -> None:
    """Before attempt N+1 may run, make sure attempt N never will (the job stays Stuck, or
    Ready after a re-run of a Failed job, meanwhile)."""
    job = draft.jobs[path]
    pending = job.dispatch
    if pending is not None and pending.op == "fence":
        if pending.override_by == AUTO_RESOLVER and by != AUTO_RESOLVER:
            # A person's override to Ready replaces the automatic one: theirs is recorded.
            draft.update(path, dispatch=pending.model_copy(update={"override_by": by, "override_message": reason}))
        return  # the same override again: the fence is already on its way
    draft.update(
        path,
        dispatch=Dispatch(
            op="fence", attempts_used=1, last_attempt_at=draft.now, override_by=by, override_message=reason
        ),
    )
    draft.send(path, "fence")
    draft.wake_at(draft.now + draft.policy.dispatch_timeout_seconds)
    if by == AUTO_RESOLVER:
        why = (
            f"{path}: {draft.host_of(path)} is heard again with its journal caught up and has no record of "
            f"attempt {job.attempt}; fencing it (its launch may still arrive there) before re-sending the job "
            f"as attempt {job.attempt + 1}"
        )
    else:
        why = (
            f"{path}: the override to Ready by {by or 'an override annotation'} waits until attempt {job.attempt} "
            f"is fenced on {draft.host_of(path)} (its launch may still arrive there); attempt {job.attempt + 1} "
            "runs only once the agent confirms it never ran"
        )
    draft.event("Normal", "FenceRequested", with_reason(why, reason), path)


def settle_fence(draft: Draft, path: str, record: JobRecord) -> None:
    """The agent's answer about the fenced key decides the waiting override to Ready."""
    job = draft.jobs[path]
    assert job.dispatch is not None and job.dispatch.op == "fence"
    by = job.dispatch.override_by
    if record.fenced:
        if job.state == S.READY:
            draft.update(path, dispatch=None)  # the re-run was applied already: it launches now
        elif by == AUTO_RESOLVER:
            resend_after_fence(draft, path)
        else:
            settle_by_override(draft, path, S.READY, by, job.dispatch.override_message)
        return
    if by == AUTO_RESOLVER:
        # The key did reach the agent: the job takes its real state (auto resolution).
        draft.update(path, dispatch=None)
        take_record(draft, path, record)
        return
    found = describe_record(record)
    who = by or "an override annotation"
    message = f"override to Ready by {who} not applied: attempt {job.attempt} was found {found} on the VM"
    if job.state == S.READY:
        # A re-run of a job a person had set Failed: it stays Failed (settle it again, now knowing).
        message = f"{message}; it stays Failed as set before"
        draft.update(path, state=S.FAILED, message=message, finished_at=draft.now, dispatch=None)
        draft.settle(path, S.READY, S.FAILED, AUTO_RESOLVER, message)
        draft.event("Warning", "OverrideNotApplied", f"{path}: {message}", path)
        return
    outcome = record_outcome(record, kill_reason=job.kill_reason)
    if outcome is not None and outcome.state == S.STUCK:
        draft.update(path, dispatch=None)
        make_stuck(draft, path, StuckReason.SUPERVISOR_LOST, detail=record.message or record.state)
    elif outcome is not None:
        finish(draft, path, record)
    else:
        enter_running(draft, path, record)
    target = draft.jobs[path].state
    if target != S.STUCK:
        draft.settle(path, S.STUCK, target, AUTO_RESOLVER, message)
    draft.event("Warning", "OverrideNotApplied", f"{path}: {message}; the job is {target}", path)


def resend_after_fence(draft: Draft, path: str) -> None:
    """The agent confirmed the fence of a launch that never reached it: run the job again as
    the next attempt, an automatic settlement (Stuck -> Ready) like a person's override."""
    job = draft.jobs[path]
    message = (
        f"resolved automatically: the launch of attempt {job.attempt} never reached {draft.host_of(path)} "
        f"(the agent confirms it fenced the key); re-sent as attempt {job.attempt + 1} "
        f"(was Stuck: {job.reason})"
    )
    draft.rerun(path, None, message)
    draft.settle(path, S.STUCK, S.READY, AUTO_RESOLVER, message)
    draft.event("Normal", "StuckResolved", f"{path}: {message}", path)


def check_fence(draft: Draft, path: str, pending: Dispatch) -> None:
    """A fence is retried until the agent answers, however long: the re-run waits for it."""
    dispatch = unanswered(draft, path, pending)
    if dispatch is None:
        return
    due = dispatch.last_attempt_at + draft.retry(path).interval_seconds
    if draft.now < due:
        draft.wake_at(due)
        return
    if dispatch.attempts_used == 1:
        draft.event(
            "Warning",
            "FenceRetried",
            f"{path}: the fence of attempt {draft.jobs[path].attempt} did not reach {draft.host_of(path)} "
            f"({dispatch.last_error_message or dispatch.last_error}); the job stays Stuck and the fence is "
            f"retried every {draft.retry(path).interval_seconds:g}s until the agent answers",
            path,
        )
    draft.update(path, dispatch=dispatch.next_attempt(draft.now))
    draft.send(path, "fence")
