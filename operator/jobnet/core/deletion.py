"""Deletion of a JobRun: its finalizer, the force annotation, and what blocks it (pure).

The operator puts :data:`FINALIZER` on every JobRun it drives. When the run is deleted, the API
server only marks it (``deletionTimestamp``); the operator stops the whole run through the
agents, waits for the kills' results, acknowledges the records, and then removes the finalizer
(the run's snapshot ConfigMap follows by its ownerReference). A job whose host cannot be reached
keeps the deletion waiting (condition :data:`DELETION_BLOCKED`) until the host answers or a
person sets :data:`FORCE_DELETE_ANNOTATION` to ``true``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobnet.core.conditions import Condition, condition
from jobnet.core.scheduler.state import RunRuntime
from jobnet.core.states import JobState

FINALIZER = "jobnet.dev/stop-jobs"
FORCE_DELETE_ANNOTATION = "jobnet.dev/force-delete"
DELETION_BLOCKED = "DeletionBlocked"

JsonPatch = list[dict[str, Any]]


def is_deleting(metadata: Mapping[str, Any]) -> bool:
    """Deleted, and held by our finalizer (so it is ours to release)."""
    return bool(metadata.get("deletionTimestamp")) and FINALIZER in (metadata.get("finalizers") or ())


def is_forced(metadata: Mapping[str, Any]) -> bool:
    value = (metadata.get("annotations") or {}).get(FORCE_DELETE_ANNOTATION, "")
    return str(value).strip().lower() == "true"


def add_finalizer_patch(metadata: Mapping[str, Any]) -> JsonPatch | None:
    """The JSON patch that adds our finalizer (None: it is there, or the run is being deleted,
    when no finalizer may be added)."""
    finalizers: Sequence[str] = metadata.get("finalizers") or ()
    if FINALIZER in finalizers or metadata.get("deletionTimestamp"):
        return None
    if not finalizers:
        return [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
    return [{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]


def remove_finalizer_patch(metadata: Mapping[str, Any]) -> JsonPatch | None:
    """The JSON patch that removes our finalizer, only if it is still where we saw it (a
    ``test``: a list changed meanwhile fails the patch instead of removing another's)."""
    finalizers = list(metadata.get("finalizers") or ())
    if FINALIZER not in finalizers:
        return None
    at = f"/metadata/finalizers/{finalizers.index(FINALIZER)}"
    return [{"op": "test", "path": at, "value": FINALIZER}, {"op": "remove", "path": at}]


#: What a job's state and host are: from the runtime of a live loop, or from a stored status.
JobPlaces = Mapping[str, tuple[str, str | None]]
_UNFINISHED = frozenset({JobState.STARTING, JobState.RUNNING, JobState.STOPPING, JobState.STUCK})


def job_places(runtime: RunRuntime) -> dict[str, tuple[str, str | None]]:
    return {path: (job.state, job.host) for path, job in runtime.jobs.items()}


def stored_job_places(status: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """The same from a (decoded) status' ``jobs``."""
    jobs = status.get("jobs") or {}
    return {path: (str(entry.get("state")), entry.get("host")) for path, entry in jobs.items() if entry}


def unfinished_by_host(jobs: JobPlaces) -> dict[str, list[str]]:
    """Jobs that may still run, by host: launched and not finished (Starting, Running,
    Stopping, Stuck)."""
    hosts: dict[str, list[str]] = {}
    for path, (state, host) in sorted(jobs.items()):
        if state in _UNFINISHED:
            hosts.setdefault(host or "(no host)", []).append(path)
    return hosts


def blocked_condition(runtime: RunRuntime, generation: int | None, now: str) -> Condition | None:
    """``DeletionBlocked`` while Stuck jobs keep the deletion waiting (None: nothing blocks it;
    jobs still Stopping are on their way)."""
    stuck: dict[str, list[str]] = {}
    for path, job in sorted(runtime.jobs.items()):
        if job.state == JobState.STUCK:
            stuck.setdefault(job.host or "(no host)", []).append(f"{path} ({job.reason})")
    if not stuck:
        return None
    reasons = sorted({job.reason or "Stuck" for job in runtime.jobs.values() if job.state == JobState.STUCK})
    where = "; ".join(f"{host}: {', '.join(paths)}" for host, paths in stuck.items())
    message = (
        f"the deletion waits to stop jobs on {', '.join(stuck)} ({where}); it completes when the host "
        f"answers, or annotate {FORCE_DELETE_ANNOTATION}=true to release the JobRun at once "
        "(its jobs may then still run on that host)"
    )
    return condition(DELETION_BLOCKED, "True", reasons[0], message, generation, now)


def forced_message(jobs: JobPlaces) -> str:
    """The Warning a forced deletion posts: which jobs may still run where."""
    hosts = unfinished_by_host(jobs)
    if not hosts:
        return f"deletion forced ({FORCE_DELETE_ANNOTATION}=true): no job was left running"
    where = "; ".join(f"on {host}: {', '.join(paths)}" for host, paths in hosts.items())
    return f"deletion forced ({FORCE_DELETE_ANNOTATION}=true): jobs may still run {where}"
