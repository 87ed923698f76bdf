"""Steering: a person's stop and override requests (annotations, or already parsed)."""

from __future__ import annotations

from collections.abc import Mapping

from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    OVERRIDE_BY_ANNOTATION,
    OVERRIDE_MESSAGE_ANNOTATION,
    STOP_ANNOTATION,
    STOP_BY_ANNOTATION,
    OverrideRequest,
    StopRequest,
    jobs_under,
    override_problem,
    override_targets,
    parse_override_annotation,
    parse_stop_annotation,
    resolve_path,
)
from jobnet.core.scheduler.delivery import start_kill
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.fencing import launch_unconfirmed, start_fence
from jobnet.core.scheduler.records import settle_by_override
from jobnet.core.states import JobState

S = JobState


def apply_stop(draft: Draft, stop: StopRequest) -> None:
    scope, error = resolve_path(draft.graph, stop.path)
    if scope is None:
        draft.event("Warning", "StopRejected", f"cannot stop: {error}", stop.path)
        return
    if scope not in draft.stop_scopes:
        draft.stop_scopes.append(scope)
    who = f" by {stop.by}" if stop.by else ""
    draft.event("Normal", "StopRequested", f"stop of {scope} requested{who}", scope)
    for path in jobs_under(draft.graph, scope):
        # A repeated stop re-delivers the kill to Stuck jobs that may still run (F02, F10);
        # one whose process the agent reports ended has nothing left to kill.
        record = draft.record_for(path)
        if draft.jobs[path].state == S.STUCK and (record is None or not record.terminal):
            start_kill(draft, path, "stop")


def _attempts(draft: Draft) -> dict[str, int]:
    return {path: job.attempt for path, job in draft.jobs.items()}


def apply_override(draft: Draft, request: OverrideRequest) -> None:
    states = {path: job.state for path, job in draft.jobs.items()}
    target, problem = resolve_path(draft.graph, request.path)
    if target is not None:
        problem = override_problem(
            draft.graph, states, draft.stop_scopes, target, request.state, request.precondition, _attempts(draft)
        )
    if target is None or problem is not None:
        draft.event("Warning", "OverrideRejected", f"override {request.text()} refused: {problem}", request.path)
        return
    for path in override_targets(draft.graph, states, target, request.state):
        if request.state == S.READY and launch_unconfirmed(draft, path):
            if draft.jobs[path].state == S.FAILED:
                # Failed by a person: the re-run is applied at once but waits, Ready, for the fence.
                settle_by_override(draft, path, S.READY, request.by, request.message)
            start_fence(draft, path, request.by, request.message)
        else:
            settle_by_override(draft, path, request.state, request.by, request.message)


def apply_requests(
    draft: Draft,
    annotations: Mapping[str, str],
    annotated_by: str | None,
    overrides: tuple[OverrideRequest, ...],
    stops: tuple[StopRequest, ...],
) -> None:
    """Stops first, then overrides: from the annotations (every problem a Warning Event) and
    already parsed; the annotation keys applied or refused become :attr:`Draft.consumed`."""
    if STOP_ANNOTATION in annotations:
        parsed_stops = parse_stop_annotation(
            annotations[STOP_ANNOTATION], draft.graph, annotations.get(STOP_BY_ANNOTATION) or annotated_by
        )
        for error in parsed_stops.errors:
            draft.event("Warning", "StopRejected", f"{STOP_ANNOTATION}: {error}", None)
        stops = parsed_stops.requests + stops
    for stop in stops:
        apply_stop(draft, stop)
    if OVERRIDE_ANNOTATION in annotations:
        parsed = parse_override_annotation(
            annotations[OVERRIDE_ANNOTATION],
            draft.graph,
            {path: job.state for path, job in draft.jobs.items()},
            draft.stop_scopes,
            annotations.get(OVERRIDE_BY_ANNOTATION) or annotated_by,
            annotations.get(OVERRIDE_MESSAGE_ANNOTATION),
            _attempts(draft),
        )
        for error in parsed.errors:
            draft.event("Warning", "OverrideRejected", f"{OVERRIDE_ANNOTATION}: {error}", None)
        overrides = parsed.requests + overrides
    # The message and the requester go with their annotation (a message alone waits for the
    # override it explains).
    consumable = (
        (STOP_ANNOTATION, OVERRIDE_ANNOTATION)
        + ((OVERRIDE_MESSAGE_ANNOTATION, OVERRIDE_BY_ANNOTATION) if OVERRIDE_ANNOTATION in annotations else ())
        + ((STOP_BY_ANNOTATION,) if STOP_ANNOTATION in annotations else ())
    )
    draft.consumed = tuple(key for key in consumable if key in annotations)
    for override in overrides:
        apply_override(draft, override)
