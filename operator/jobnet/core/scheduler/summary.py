"""The summary: the run's phase, counts, progress and next wake-up, and the decision."""

from __future__ import annotations

from collections.abc import Mapping

from jobnet.core.scheduler.actions import Decision
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.state import JobRuntime, RunRuntime
from jobnet.core.states import TERMINAL_STATES, JobState, RunPhase, run_phase

#: How many Stuck jobs a jobnet's message names (the others are counted).
STUCK_NAMED = 3
#: The reason of a jobnet whose Stuck jobs are Stuck for different reasons.
MIXED_STUCK_REASONS = "JobsStuck"


def decide(draft: Draft, root_state: JobState) -> Decision:
    phase = run_phase(root_state)
    old = draft.runtime
    started_at = old.started_at
    if started_at is None and phase != RunPhase.PENDING:
        started_at = draft.now
    finished = phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)
    finished_at = (old.finished_at or draft.now) if finished else None
    counts = state_counts(draft)
    if phase != old.phase and phase not in (RunPhase.PENDING, RunPhase.RUNNING):
        detail = ", ".join(f"{count} {state}" for state, count in counts.items())
        stuck = stuck_summary(draft.jobs, draft.graph.root) if phase == RunPhase.STUCK else None
        if stuck is not None:
            detail = f"{detail}; {stuck[1]}"
        draft.event(
            "Warning" if phase in (RunPhase.FAILED, RunPhase.STUCK) else "Normal",
            f"Run{phase}",
            f"run is {phase}: {detail}",
            None,
        )
    runtime = RunRuntime(
        run_uid=old.run_uid,
        jobs=draft.jobs,
        stop_scopes=tuple(draft.stop_scopes),
        settlements=tuple(draft.settlements),
        phase=phase,
        started_at=started_at,
        finished_at=finished_at,
    )
    done = sum(count for state, count in counts.items() if state in TERMINAL_STATES)
    future = [time for time in draft.wakeups if time > draft.now]
    return Decision(
        runtime=runtime,
        actions=(*draft.requests, *draft.acks, *draft.events),
        holds_for_output_tails=finished and bool(draft.facts.tails_fetching),
        changed=frozenset(draft.changed),
        jobnet_states=draft.jobnet_states,
        progress=f"{done}/{len(draft.jobs)}",
        counts=counts,
        next_wakeup_at=min(future) if future else None,
        consumed_annotations=draft.consumed,
    )


def state_counts(draft: Draft) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in draft.jobs.values():
        counts[job.state] = counts.get(job.state, 0) + 1
    return {str(state): count for state, count in sorted(counts.items())}


def stuck_summary(jobs: Mapping[str, JobRuntime], jobnet: str) -> tuple[str, str] | None:
    """Why jobnet ``jobnet`` (a sub-jobnet or the root) is Stuck: the reason and a message naming
    its Stuck jobs and why; None when no job under it is Stuck."""
    prefix = f"{jobnet}/"
    stuck = sorted((path, job) for path, job in jobs.items() if job.state == JobState.STUCK and path.startswith(prefix))
    if not stuck:
        return None
    reasons = {job.reason or "Stuck" for _, job in stuck}
    reason = reasons.pop() if len(reasons) == 1 else MIXED_STUCK_REASONS
    if len(stuck) == 1:
        path, job = stuck[0]
        return reason, f"{path} is Stuck ({job.reason}): {job.message}"
    named = ", ".join(f"{path} ({job.reason})" for path, job in stuck[:STUCK_NAMED])
    more = f" and {len(stuck) - STUCK_NAMED} more" if len(stuck) > STUCK_NAMED else ""
    return reason, f"{len(stuck)} jobs are Stuck: {named}{more}"
