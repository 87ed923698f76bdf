"""The two annotations people use to steer a running JobRun, parsed and validated.

* ``jobnet.dev/override: 'PATH=STATE[,PATH=STATE...]'`` settles a Stuck job (Ready = run it
  again as a new attempt, Succeeded, Failed, Stopped) or re-runs/bypasses a Failed one
  (Ready, Succeeded); see :data:`jobnet.core.states.OVERRIDE_TRANSITIONS`. PATH may name a
  sub-jobnet (or ``/`` for the whole run): the override then applies to every job under it
  whose current state allows that transition.
* ``jobnet.dev/override-message: TEXT`` (optional, next to the override) is the reason the person
  gives; it is kept with each job the override settles (status.overrides[].message) and its Event.
* ``jobnet.dev/stop: 'PATH[,PATH...]'`` stops a job, a sub-jobnet, or ``/`` the whole run.

Parsing collects every problem (unknown path, unknown state, illegal transition naming the
current state, ...) so one ``kubectl annotate`` shows all mistakes at once. Pure: no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from jobnet.core.expansion import RunGraph
from jobnet.core.states import (
    OVERRIDE_TARGETS,
    JobState,
    describe_override_rules,
    override_allowed,
)

OVERRIDE_ANNOTATION = "jobnet.dev/override"
OVERRIDE_MESSAGE_ANNOTATION = "jobnet.dev/override-message"
STOP_ANNOTATION = "jobnet.dev/stop"


class OverrideRequest(BaseModel):
    """A person's request to set the job (or every eligible job under a jobnet) at ``path``."""

    model_config = ConfigDict(frozen=True)

    path: str
    state: JobState
    by: str | None = None
    #: The reason the person gave (``jobnet.dev/override-message``).
    message: str | None = None


class StopRequest(BaseModel):
    """A person's request to stop everything at and under ``path``."""

    model_config = ConfigDict(frozen=True)

    path: str
    by: str | None = None


class ParsedOverrides(BaseModel):
    model_config = ConfigDict(frozen=True)

    requests: tuple[OverrideRequest, ...] = ()
    errors: tuple[str, ...] = ()


class ParsedStops(BaseModel):
    model_config = ConfigDict(frozen=True)

    requests: tuple[StopRequest, ...] = ()
    errors: tuple[str, ...] = ()


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def resolve_path(graph: RunGraph, raw: str) -> tuple[str | None, str | None]:
    """``(path, None)`` for a path of the graph (``/`` = the root), else ``(None, error)``."""
    path = raw.strip()
    if path == "/":
        return graph.root, None
    if len(path) > 1:
        path = path.rstrip("/")
    if path in graph.nodes:
        return path, None
    hint = difflib.get_close_matches(path, list(graph.nodes), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; paths look like {graph.root + '/<job>'!r}"
    return None, f"unknown path {raw.strip()!r}: no job or jobnet of this run has it{suggestion}"


def jobs_under(graph: RunGraph, path: str) -> list[str]:
    """The job paths at or under ``path`` (the job itself when ``path`` is a job)."""
    node = graph.nodes[path]
    if node.kind == "job":
        return [path]
    found: list[str] = []
    pending = [path]
    while pending:
        for child in graph.nodes[pending.pop()].children:
            (found if graph.nodes[child].kind == "job" else pending).append(child)
    return found


def scope_of(graph: RunGraph, path: str, stop_scopes: Iterable[str]) -> str | None:
    """The stopped scope (a path in ``stop_scopes``) that contains ``path``, if any."""
    scopes = set(stop_scopes)
    current: str | None = path
    while current is not None:
        if current in scopes:
            return current
        current = graph.nodes[current].parent
    return None


def override_targets(
    graph: RunGraph, states: Mapping[str, JobState], path: str, target: JobState
) -> list[str]:
    """The jobs an override of ``path`` to ``target`` changes: those whose state allows it."""
    return [job for job in jobs_under(graph, path) if override_allowed(states.get(job, JobState.PENDING), target)]


def override_problem(
    graph: RunGraph,
    states: Mapping[str, JobState],
    stop_scopes: Iterable[str],
    path: str,
    target: JobState,
) -> str | None:
    """Why ``path=target`` cannot be applied now (None when it can)."""
    targets = override_targets(graph, states, path, target)
    node = graph.nodes[path]
    if not targets:
        if node.kind == "job":
            return (
                f"{path} is {states.get(path, JobState.PENDING)}; cannot override it to {target} "
                f"(allowed: {describe_override_rules()})"
            )
        present = sorted({str(states.get(job, JobState.PENDING)) for job in jobs_under(graph, path)})
        return (
            f"{path} is a jobnet with no job that can be overridden to {target} "
            f"(its jobs are {', '.join(present)}; allowed: {describe_override_rules()})"
        )
    if target == JobState.READY:
        scope = scope_of(graph, path, stop_scopes) or next(
            (s for s in (scope_of(graph, job, stop_scopes) for job in targets) if s), None
        )
        if scope is not None:
            return f"{path} cannot be re-run: it is inside {scope}, which was stopped"
    return None


def parse_override_annotation(
    text: str,
    graph: RunGraph,
    states: Mapping[str, JobState],
    stop_scopes: Iterable[str] = (),
    by: str | None = None,
    message: str | None = None,
) -> ParsedOverrides:
    """Parse ``PATH=STATE[,PATH=STATE...]`` against the run's current job states.

    ``states`` maps job paths to their states (a job missing from it is Pending; see
    ``jobnet.core.scheduler.job_states``). ``message`` is the person's reason, given to every
    request. Returns the valid requests and every error.
    """
    scopes = tuple(stop_scopes)
    requests: list[OverrideRequest] = []
    errors: list[str] = []
    seen: set[str] = set()
    allowed_names = {str(state).lower(): state for state in OVERRIDE_TARGETS}
    if not text.strip():
        return ParsedOverrides(errors=(f"{OVERRIDE_ANNOTATION} is empty: expected PATH=STATE[,PATH=STATE...]",))
    for item in _items(text):
        if "=" not in item:
            errors.append(f"{item!r} is not PATH=STATE (e.g. {graph.root}/extract=Succeeded)")
            continue
        raw_path, _, raw_state = item.partition("=")
        path, error = resolve_path(graph, raw_path)
        state = allowed_names.get(raw_state.strip().lower())
        if state is None:
            errors.append(
                f"{item!r}: unknown override state {raw_state.strip()!r}; "
                f"use one of {', '.join(sorted(str(s) for s in OVERRIDE_TARGETS))}"
            )
        if error is not None:
            errors.append(error)
        if path is None or state is None:
            continue
        if path in seen:
            errors.append(f"{path} is named twice in one override")
            continue
        seen.add(path)
        problem = override_problem(graph, states, scopes, path, state)
        if problem is not None:
            errors.append(problem)
            continue
        requests.append(OverrideRequest(path=path, state=state, by=by, message=message))
    return ParsedOverrides(requests=tuple(requests), errors=tuple(errors))


def parse_stop_annotation(text: str, graph: RunGraph, by: str | None = None) -> ParsedStops:
    """Parse ``PATH[,PATH...]`` (``/`` = the whole run)."""
    if not text.strip():
        return ParsedStops(errors=(f"{STOP_ANNOTATION} is empty: expected a path such as / or {graph.root}/extract",))
    requests: list[StopRequest] = []
    errors: list[str] = []
    for item in _items(text):
        path, error = resolve_path(graph, item)
        if path is None:
            errors.append(error or f"unknown path {item!r}")
        elif all(request.path != path for request in requests):
            requests.append(StopRequest(path=path, by=by))
    return ParsedStops(requests=tuple(requests), errors=tuple(errors))
