"""Delivery: launch, kill and fence requests, their answers, timeouts and retries.

A request is retried with the same key up to the job's ``retry.dispatchAttempts``; one that
certainly never left fails the job, one that may have arrived makes it Stuck. A launch that
certainly never left because its host could not be reached is retried further, with backoff,
for the policy's ``launch_retry_window_seconds`` (a short reboot of a VM fails no job). A request
interrupted by an operator restart is sent again at once with the same key.
"""

from __future__ import annotations

from jobnet.core.agentproto import KillReason
from jobnet.core.annotations import scope_of
from jobnet.core.hosts import host_id
from jobnet.core.scheduler.draft import ATTEMPT_CLEARED, Draft
from jobnet.core.scheduler.facts import DeliveryResult
from jobnet.core.scheduler.records import make_stuck
from jobnet.core.scheduler.state import Dispatch
from jobnet.core.states import JobState, Reason, StuckReason

S = JobState


def apply_delivery(draft: Draft, result: DeliveryResult) -> None:
    path = result.key.path
    job = draft.jobs.get(path)
    dispatch = job.dispatch if job is not None else None
    if job is None or dispatch is None or job.attempt != result.key.attempt or dispatch.op != result.op:
        return  # stale: about an earlier attempt, or already settled by a record
    if result.outcome == "delivered" and result.op == "fence":
        assert result.record is not None
        draft.remember(result.record)  # settled by apply_record, like the same record seen in a watch
        return
    if result.outcome == "delivered":
        draft.update(path, dispatch=None)
        if result.record is not None:
            draft.remember(result.record)
        elif result.op == "kill":
            draft.update(
                path,
                state=S.STOPPED,
                reason=Reason.STOP_REQUESTED,
                finished_at=draft.now,
                message="stopped: the agent never received the launch, so the script never ran",
            )
            draft.event("Normal", "JobStopped", f"{path}: {draft.jobs[path].message}", path)
        if result.deduplicated and result.op == "launch":
            draft.event(
                "Normal",
                "LaunchDeduplicated",
                f"{path}: the agent had already accepted {result.key}; not started again",
                path,
            )
        return
    draft.update(
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


def unanswered(draft: Draft, path: str, dispatch: Dispatch) -> Dispatch | None:
    """The dispatch once no answer can come any more, or None while one still may."""
    if not dispatch.in_flight:
        return dispatch
    sent_at = dispatch.last_attempt_at
    if dispatch.op == "launch":
        key = draft.key_text(path)
        if key in draft.facts.queued_launches:
            # Not sent yet: its answer is not due. The edge reports its result whatever
            # becomes of it; this later look is only a backstop.
            draft.wake_at(draft.now + draft.policy.dispatch_timeout_seconds)
            return None
        sent_at = max(sent_at, draft.facts.launch_sent_at.get(key, sent_at))
    expires = sent_at + draft.policy.dispatch_timeout_seconds
    if draft.now < expires:
        draft.wake_at(expires)
        return None
    dispatch = dispatch.model_copy(
        update={
            "in_flight": False,
            "unknown_seen": True,
            "last_error": "NoAnswer",
            "last_error_message": f"no answer within {draft.policy.dispatch_timeout_seconds:g}s",
        }
    )
    draft.update(path, dispatch=dispatch)
    return dispatch


def resend_interrupted(draft: Draft, path: str, dispatch: Dispatch) -> None:
    """The request may or may not have reached the agent before its sender stopped: the
    same key again settles it either way (the agent carries it out once, or answers with
    what it did), so the operator's restart never costs a job an attempt or a Stuck. A launch
    under a stopped scope is never sent again: it may have arrived, so a kill by the same key
    settles it instead (the agent kills it, or answers it never saw the key: Stopped)."""
    if dispatch.op == "launch" and scope_of(draft.graph, path, draft.stop_scopes) is not None:
        start_kill(draft, path, "stop")
        return
    draft.update(
        path,
        dispatch=dispatch.model_copy(update={"interrupted": False, "in_flight": True, "last_attempt_at": draft.now}),
    )
    draft.send(path, dispatch.op)
    draft.wake_at(draft.now + draft.policy.dispatch_timeout_seconds)


def check_dispatch(draft: Draft, path: str, pending: Dispatch) -> None:
    dispatch = unanswered(draft, path, pending)
    if dispatch is None:
        return
    retry = draft.retry(path)
    last = dispatch.last_error_message or dispatch.last_error or "unknown error"
    scope = scope_of(draft.graph, path, draft.stop_scopes)
    if dispatch.op == "launch" and scope is not None:
        # Stopped while its launch failed: never launch again under a stopped scope.
        if dispatch.unknown_seen:
            start_kill(draft, path, "stop")  # it may have arrived: a kill by the same key settles it
        else:
            draft.update(
                path,
                state=S.STOPPED,
                reason=Reason.STOP_REQUESTED,
                dispatch=None,
                finished_at=draft.now,
                message=f"not started: {scope} was stopped (the launch never reached the agent)",
            )
        return
    if dispatch.attempts_used < retry.dispatch_attempts:
        due = dispatch.last_attempt_at + retry.interval_seconds
        if draft.now < due:
            draft.wake_at(due)
            return
        draft.update(path, dispatch=dispatch.next_attempt(draft.now))
        draft.event(
            "Warning",
            "DeliveryRetried",
            f"{path}: {dispatch.op} attempt {dispatch.attempts_used} to {draft.host_of(path)} failed ({last}); "
            f"retrying with the same key ({dispatch.attempts_used + 1}/{retry.dispatch_attempts})",
            path,
        )
        draft.send(path, dispatch.op)
        return
    if retry_unreachable_launch(draft, path, dispatch):
        return
    attempts = dispatch.attempts_used
    if dispatch.op == "launch" and not dispatch.unknown_seen:
        code = dispatch.last_error or Reason.HOST_UNREACHABLE
        message = f"could not deliver the launch to {draft.host_of(path)} after {attempts} attempt(s): {last}"
        draft.update(path, state=S.FAILED, reason=code, message=message, dispatch=None, finished_at=draft.now)
        draft.event("Warning", "JobFailed", f"{path} failed ({code}): {message}", path)
    elif dispatch.op == "launch":
        make_stuck(draft, path, StuckReason.LAUNCH_OUTCOME_UNKNOWN, attempts=attempts, detail=last)
    elif not dispatch.unknown_seen and dispatch.last_error == Reason.HOST_UNREACHABLE:
        make_stuck(draft, path, StuckReason.HOST_DOWN, attempts=attempts, detail=last)
    else:
        make_stuck(draft, path, StuckReason.STOP_OUTCOME_UNKNOWN, attempts=attempts, detail=last)


#: Caps the doubling of the backoff (the delay is capped long before).
_MAX_DOUBLINGS = 30


def retry_unreachable_launch(draft: Draft, path: str, dispatch: Dispatch) -> bool:
    """Past the job's own retries, a launch that never left because its host could not be
    reached is retried with the same key, with backoff, until the policy's window (counted from
    the job's first try) ends. True while it is retried (or waits for its next try)."""
    policy = draft.policy
    if dispatch.op != "launch" or dispatch.unknown_seen or dispatch.last_error != Reason.HOST_UNREACHABLE:
        return False
    job = draft.jobs[path]
    first_try = job.since if job.since is not None else dispatch.last_attempt_at
    extra = max(0, dispatch.attempts_used - draft.retry(path).dispatch_attempts)
    delay = min(
        policy.launch_retry_backoff_max_seconds,
        policy.launch_retry_backoff_min_seconds * 2 ** min(extra, _MAX_DOUBLINGS),
    )
    due = dispatch.last_attempt_at + delay
    if due > first_try + policy.launch_retry_window_seconds:
        return False
    if draft.now < due:
        draft.wake_at(due)
        return True
    draft.update(path, dispatch=dispatch.next_attempt(draft.now))
    if extra == 0:  # one Event for the whole window; each try is in the operator log
        draft.event(
            "Warning",
            "LaunchRetrying",
            f"{path}: cannot reach {draft.host_of(path)} ({dispatch.last_error_message or dispatch.last_error}); "
            f"the launch never left: retrying with the same key for up to "
            f"{policy.launch_retry_window_seconds:g}s",
            path,
        )
    draft.send(path, "launch")
    return True


def start_kill(draft: Draft, path: str, reason: KillReason) -> None:
    job = draft.jobs[path]
    kill_reason = job.kill_reason or reason
    draft.update(
        path,
        state=S.STOPPING,
        kill_reason=kill_reason,
        reason=None,
        message=f"kill requested ({kill_reason})",
        dispatch=Dispatch(op="kill", attempts_used=1, last_attempt_at=draft.now),
    )
    draft.send(path, "kill")
    draft.wake_at(draft.now + draft.policy.dispatch_timeout_seconds)


def launch(draft: Draft, path: str) -> None:
    node = draft.node(path)
    job = draft.jobs[path]
    if node.host is None:
        draft.update(
            path,
            state=S.FAILED,
            reason=Reason.NO_HOST,
            finished_at=draft.now,
            message="no host: neither the job nor any enclosing JobNet sets `host`",
        )
        draft.event("Warning", "JobFailed", f"{path} failed ({Reason.NO_HOST}): {draft.jobs[path].message}", path)
        return
    draft.update(
        path,
        state=S.STARTING,
        attempt=job.attempt + 1,
        host=host_id(node.host),
        reason=None,
        message=None,
        dispatch=Dispatch(op="launch", attempts_used=1, last_attempt_at=draft.now),
        **ATTEMPT_CLEARED,
    )
    draft.send(path, "launch")
    draft.wake_at(draft.now + draft.policy.dispatch_timeout_seconds)
