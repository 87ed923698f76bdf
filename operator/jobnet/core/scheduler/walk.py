"""The walk: the DAG in topological order, opening gates, skipping, stopping and launching."""

from __future__ import annotations

from jobnet.core.scheduler.delivery import launch, start_kill
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.relaunch import held_until
from jobnet.core.states import TERMINAL_STATES, UNLAUNCHED_STATES, JobState, Reason, derive_jobnet_state

S = JobState


def walk(draft: Draft, jobnet: str, *, gate_open: bool, blocked: str | None, scope: str | None) -> JobState:
    """Schedule the children of ``jobnet`` in topological order; return its derived state."""
    nodes, jobs, stop_scopes = draft.graph.nodes, draft.jobs, draft.stop_scopes
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
            gate_open and child_blocked is None and after_succeeded and (not child.is_finally or normal_ended is True)
        )
        child_scope = scope or (child_path if child_path in stop_scopes else None)
        if child.kind == "job":
            state = jobs[child_path].state
            # Only a job not yet launched, or one under a stopped scope, may change here; a
            # Pending job whose gate stays closed (most of a large run) does not either.
            if child_scope is not None or (
                state in UNLAUNCHED_STATES and (child_open or child_blocked is not None or state != S.PENDING)
            ):
                state = schedule_job(draft, child_path, child_open, child_blocked, child_scope)
            states[child_path] = state
        else:
            state = walk(draft, child_path, gate_open=child_open, blocked=child_blocked, scope=child_scope)
            draft.jobnet_states[child_path] = states[child_path] = state
    return derive_jobnet_state(states.values())


def schedule_job(draft: Draft, path: str, gate_open: bool, blocked: str | None, scope: str | None) -> JobState:
    job = draft.jobs[path]
    if job.state in UNLAUNCHED_STATES:
        if scope is not None:
            draft.update(
                path,
                state=S.STOPPED,
                reason=Reason.STOP_REQUESTED,
                finished_at=draft.now,
                message=f"not started: {scope} was stopped",
                dispatch=None,
            )
        elif blocked is not None:
            draft.update(
                path,
                state=S.SKIPPED,
                reason=Reason.UPSTREAM_NOT_SUCCEEDED,
                message=f"not run: {blocked}",
                dispatch=None,
            )
        elif job.dispatch is not None:
            pass  # a re-run waiting for the fence of the previous attempt
        elif gate_open:
            held = held_until(job, draft.policy)
            if held is not None and draft.now < held:
                draft.wake_at(held)  # a re-launch of an attempt that never ran, after its backoff
            else:
                launch(draft, path)
        elif job.state == S.SKIPPED:
            draft.update(path, state=S.PENDING, reason=None, message=None)
    elif job.state == S.RUNNING and scope is not None:
        start_kill(draft, path, "stop")
    return draft.jobs[path].state


def scope_here(draft: Draft, path: str, inherited: str | None) -> str | None:
    return inherited or (path if path in draft.stop_scopes else None)
