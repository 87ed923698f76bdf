"""Re-launch of an attempt that provably never ran: like a launch that never left.

The agent lets a job's script go only once its ``running`` record is durable; a job whose
supervising process died before that (or whose VM rebooted before it) ends ``failedToStart``
with reason ``SupervisorLost`` (``HostRebooted``): its script never ran. That is knowable, so the
job is not Failed at once: the operator runs it again as the next attempt (a new key; the old
one has its final record), with backoff, for the policy's ``launch_retry_window_seconds``
counted from the job's first try, like a launch that never left because its host could not be
reached (:func:`jobnet.core.scheduler.delivery.retry_unreachable_launch`). A Warning Event
``Relaunching`` (and so an operator log line) says why, every time. Only when the window is
spent is the job Failed with the record's reason. Pure: no I/O.
"""

from __future__ import annotations

from jobnet.core.agentproto import JobRecord
from jobnet.core.annotations import scope_of
from jobnet.core.outcome import Outcome
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.facts import SchedulerPolicy
from jobnet.core.scheduler.state import JobRuntime
from jobnet.core.states import JobState

S = JobState

#: Reasons of a ``failedToStart`` record that prove the script never ran for a reason that is
#: not the job's own (a missing script or a bad working directory would fail again).
NEVER_RAN_REASONS: frozenset[str] = frozenset({"SupervisorLost", "HostRebooted"})


def never_ran(record: JobRecord) -> bool:
    """The record proves the attempt's script never ran, through no fault of the job."""
    return record.state == "failedToStart" and record.reason in NEVER_RAN_REASONS


def relaunch_delay(window_start: float, failed_at: float, policy: SchedulerPolicy) -> float:
    """How long after the failure at ``failed_at`` the next attempt launches: as long as the
    series has lasted so far, within the policy's backoff bounds (so the delays about double,
    and a window holds a bounded number of attempts)."""
    elapsed = failed_at - window_start
    return min(policy.launch_retry_backoff_max_seconds, max(policy.launch_retry_backoff_min_seconds, elapsed))


def relaunch_at(window_start: float, failed_at: float, policy: SchedulerPolicy) -> float | None:
    """When the next attempt launches, or None when that would be past the window."""
    due = failed_at + relaunch_delay(window_start, failed_at, policy)
    return None if due > window_start + policy.launch_retry_window_seconds else due


def held_until(job: JobRuntime, policy: SchedulerPolicy) -> float | None:
    """When a job Ready for its re-launch may launch (None: it is not one)."""
    if job.state != S.READY or job.relaunching_since is None or job.since is None:
        return None
    return job.since + relaunch_delay(job.relaunching_since, job.since, policy)


def relaunch_if_never_ran(draft: Draft, path: str, record: JobRecord) -> bool:
    """The record of the job's current attempt proves it never ran: make the job Ready for its
    next attempt, launched after the backoff, while the window lasts. True if it did so."""
    job = draft.jobs[path]
    if not never_ran(record) or scope_of(draft.graph, path, draft.stop_scopes) is not None:
        return False
    window_start = job.relaunching_since if job.relaunching_since is not None else job.since
    if window_start is None:
        window_start = draft.now
    due = relaunch_at(window_start, draft.now, draft.policy)
    if due is None:
        return False
    why = record.message or "its supervising process died before the script was let go"
    message = (
        f"attempt {job.attempt} on {draft.host_of(path)} never ran ({record.reason}: {why}); re-launched as "
        f"attempt {job.attempt + 1} in {due - draft.now:g}s (within the launch retry window of "
        f"{draft.policy.launch_retry_window_seconds:g}s after its first try)"
    )
    # The attempt's end, as its history keeps it; then the next attempt, as the operator decides.
    draft.update(
        path,
        state=S.FAILED,
        reason=record.reason,
        message=message,
        dispatch=None,
        finished_at=record.ended_at or draft.now,
    )
    draft.rerun(path, record.reason, message, relaunching_since=window_start)
    draft.event("Warning", "Relaunching", f"{path}: {message}", path)
    draft.wake_at(due)
    return True


def not_relaunched(draft: Draft, path: str, record: JobRecord, outcome: Outcome) -> Outcome:
    """The outcome of an attempt that never ran yet was not re-launched (its window is spent):
    its message says why."""
    window = draft.policy.launch_retry_window_seconds
    if not never_ran(record) or window == 0 or scope_of(draft.graph, path, draft.stop_scopes) is not None:
        return outcome
    spent = f"not re-launched: the launch retry window of {window:g}s after its first try is spent"
    return outcome.model_copy(update={"message": f"{outcome.message}; {spent}"})
