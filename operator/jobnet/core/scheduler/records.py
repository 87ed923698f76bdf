"""Records and settlements: what the agent's record of a job, or a person, makes of it.

A record that proves an outcome finishes the job (one that proves the attempt never ran, through
no fault of the job, first makes it run again: :mod:`jobnet.core.scheduler.relaunch`); a live
one makes it Running; a ``lost`` one
makes it Stuck; a Stuck job is resolved from a record (``stuckResolution: Auto``) or the record
is noted for the person who settles it (``Manual``); a ``lost`` record that carries the exit code
the job's wrapper recorded is such a record too. A person's override settles a job here
too, and ended records the run is done with are acknowledged.
"""

from __future__ import annotations

from jobnet.core.agentproto import TERMINAL_RECORD_STATES, JobRecord
from jobnet.core.outcome import Outcome, describe_record, record_outcome, recorded_outcome
from jobnet.core.scheduler.actions import Ack
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.relaunch import not_relaunched, relaunch_if_never_ran
from jobnet.core.scheduler.state import AUTO_RESOLVER, JobRuntime
from jobnet.core.states import TERMINAL_STATES, JobState, Reason, StuckReason, stuck_message

S = JobState

#: Separates a Stuck job's message from what became known later under stuckResolution Manual.
_KNOWN_MARKER = " | now known: "


def with_reason(message: str, reason: str | None) -> str:
    """An override's message, followed by the reason the person gave (if any)."""
    return f"{message}: {reason}" if reason else message


def settle_by_override(draft: Draft, path: str, state: JobState, by: str | None, reason: str | None) -> None:
    job = draft.jobs[path]
    who = by or "an override annotation"
    was = f"{job.state}" + (f" ({job.reason})" if job.reason else "")
    if state == S.READY:
        message = with_reason(f"re-run requested by {who} (was {was}); it runs as attempt {job.attempt + 1}", reason)
        draft.rerun(path, Reason.OVERRIDDEN, message, by=by)
    else:
        message = with_reason(f"set to {state} by {who} (was {was})", reason)
        draft.update(
            path,
            override=True,
            state=state,
            reason=Reason.OVERRIDDEN,
            message=message,
            finished_at=draft.now,
            dispatch=None,
        )
    draft.settle(path, job.state, state, by, message)
    draft.event("Normal", "Overridden", f"{path}: {message}", path)


def lost_before_fenced(job: JobRuntime, record: JobRecord) -> bool:
    """A fenced record of an attempt the agent had reported running (its pid or start time is
    known): the agent lost the attempt's record (its state was wiped) before a kill found nothing
    and fenced the key. The fence proves that nothing runs under the key now and that no late
    launch will, not that the script never ran: whether and how it ran is unknown (AgentLost)."""
    return record.fenced and (job.pid is not None or job.started_at is not None)


def take_record(draft: Draft, path: str, record: JobRecord) -> None:
    """The job takes what the record of its current attempt says."""
    job = draft.jobs[path]
    if lost_before_fenced(job, record):
        if job.state != S.STUCK or job.reason != StuckReason.AGENT_LOST:
            detail = f"key {draft.key(path)}: the kill found nothing to kill and fenced the key"
            make_stuck(draft, path, StuckReason.AGENT_LOST, detail=detail)
        return
    outcome = record_outcome(record, kill_reason=job.kill_reason)
    if outcome is not None and outcome.state == S.STUCK:
        # A `lost` record: Stuck; resolved at once from the exit code the wrapper recorded, if any
        # (Auto), else only a person can settle it.
        if job.state != S.STUCK or job.reason != outcome.reason:
            make_stuck(draft, path, StuckReason.SUPERVISOR_LOST, detail=record.message or record.state)
        if record.exit_code is not None:
            resolve_stuck(draft, path, record)
        return
    if job.state == S.STUCK:
        resolve_stuck(draft, path, record)
        return
    if outcome is not None:
        if relaunch_if_never_ran(draft, path, record):
            return
        finish(draft, path, record, not_relaunched(draft, path, record, outcome))
    elif job.state == S.STARTING:
        enter_running(draft, path, record)
    elif record.pid is not None and record.pid != job.pid:
        draft.update(path, pid=record.pid, started_at=record.started_at or job.started_at)


def make_stuck(draft: Draft, path: str, reason: StuckReason, *, attempts: int = 0, detail: str = "") -> None:
    message = stuck_message(reason, host=draft.host_of(path), attempts=attempts, detail=detail)
    if draft.jobs[path].state == S.STUCK:
        # Already Stuck; what the agent says now is more precise: the reason changes, and the
        # job stays Stuck since the same moment.
        draft.update(path, reason=reason, message=message)
    else:
        draft.update(path, state=S.STUCK, reason=reason, message=message, dispatch=None)
    draft.event("Warning", "JobStuck", f"{path} is Stuck ({reason}): {message}", path)


def finish(draft: Draft, path: str, record: JobRecord, outcome: Outcome | None = None) -> None:
    job = draft.jobs[path]
    outcome = outcome or record_outcome(record, kill_reason=job.kill_reason)
    assert outcome is not None
    draft.update(
        path,
        state=outcome.state,
        reason=outcome.reason,
        message=outcome.message,
        exit_code=outcome.exit_code,
        pid=record.pid or job.pid,
        dispatch=None,
        started_at=record.started_at or job.started_at,
        finished_at=record.ended_at or draft.now,
    )
    if outcome.state == S.FAILED:
        draft.event("Warning", "JobFailed", f"{path} failed ({outcome.reason}): {outcome.message}", path)
    elif outcome.state == S.STOPPED:
        draft.event("Normal", "JobStopped", f"{path}: {outcome.message}", path)


def enter_running(draft: Draft, path: str, record: JobRecord) -> None:
    timeout = draft.node(path).timeout_seconds
    job = draft.jobs[path]
    draft.update(
        path,
        state=S.RUNNING,
        reason=None,
        message=None,
        dispatch=None,
        pid=record.pid,
        started_at=record.started_at or draft.now,
        deadline=job.deadline or (draft.now + timeout if timeout else None),
    )


def resolve_stuck(draft: Draft, path: str, record: JobRecord) -> None:
    job = draft.jobs[path]
    outcome = recorded_outcome(record) or record_outcome(record, kill_reason=job.kill_reason)
    fresh = draft.heard_from_host_since(path, job.since)
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
    if draft.resolution(path) == "Manual":
        stuck_text = (job.message or "").split(_KNOWN_MARKER)[0]
        message = f"{stuck_text}{_KNOWN_MARKER}{why}; settle it with an override (stuckResolution: Manual)"
        if message != job.message:
            draft.update(path, message=message)
            draft.event("Normal", "StuckOutcomeKnown", f"{path}: {why}; waiting for an override", path)
        return
    message = f"resolved automatically: {why} (was Stuck: {job.reason})"
    if outcome is not None:
        finish(draft, path, record, outcome)
    elif target == S.RUNNING:
        enter_running(draft, path, record)
    else:
        draft.update(path, state=S.STOPPING, dispatch=None, reason=None, message=None)
    outcome_message = outcome.message if outcome is not None else None
    draft.update(path, message=f"{outcome_message}; {message}" if outcome_message else message)
    draft.settle(path, S.STUCK, target, AUTO_RESOLVER, message)
    draft.event("Normal", "StuckResolved", f"{path}: {message}", path)


def ack_settled_records(draft: Draft) -> None:
    """Acknowledge every ended, unacknowledged record the run is done with: its job's current
    attempt once the job is settled (finished, or set by a person while Stuck), and any
    attempt a newer one replaced (a fenced key, an earlier run). The agent then forgets it
    after its retention instead of reporting it to every operator start as news. Asked every
    round until the acknowledged record comes back, but once per record (an agent that cannot
    be reached now gets it after the next operator start, or forgets it after its retention;
    a busy loop of acks to a host that is down would be worse). An ack waits while the job's
    output tail is being fetched: an acknowledged record gets no tail fetch after an operator
    restart. Runs after the walk, so that a re-run launched this round already supersedes its key."""
    facts = draft.facts
    # Cheapest tests first: this looks at every record of a large run each round.
    ended = [
        record
        for record in draft.records.values()
        if not record.acknowledged and record.state in TERMINAL_RECORD_STATES
    ]
    for record in ended:
        path = record.key.path
        job = draft.jobs.get(path)
        if job is None:
            continue
        superseded = record.key.attempt < job.attempt
        settled = record.key.attempt == job.attempt and job.state in TERMINAL_STATES
        if not (superseded or settled):
            continue
        text = record.key.text()
        if text in facts.tails_fetching or facts.acks_sent.get(text) == record.seq:
            continue
        draft.acks.append(Ack(key=record.key, path=path, host=draft.host_of(path), seq=record.seq))
