"""Deletion: a JobRun being deleted stops everything it runs before it lets go.

The deletion is a stop of the whole run (``/``), asked once. A job that went Stuck because its
kill could not be delivered (its host was down) is stopped again as soon as its host answers,
so the deletion completes on its own when the host returns (looked at every retry interval of
the job while the deletion waits: the news that a host answers is its heartbeat, which wakes no
run by itself).
"""

from __future__ import annotations

from jobnet.core.annotations import StopRequest, jobs_under
from jobnet.core.scheduler.delivery import start_kill
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.steering import apply_stop
from jobnet.core.states import JobState

#: Who asks for the stop a deletion makes (the requester of its StopRequested Event).
DELETION_REQUESTER = "the deletion of the JobRun"


def apply_deletion(draft: Draft) -> None:
    root = draft.graph.root
    if root not in draft.stop_scopes:
        apply_stop(draft, StopRequest(path="/", by=DELETION_REQUESTER))
        return
    for path in jobs_under(draft.graph, root):
        job = draft.jobs[path]
        if job.state != JobState.STUCK:
            continue
        if not draft.heard_from_host_since(path, job.since):
            draft.wake_at(draft.now + max(draft.retry(path).interval_seconds, 1.0))
            continue
        record = draft.record_for(path)
        if record is None or not record.terminal:
            draft.event(
                "Normal",
                "DeletionStopRetried",
                f"{path}: {draft.host_of(path)} answers again; stopping the job for the deletion of the run",
                path,
            )
            start_kill(draft, path, "stop")
