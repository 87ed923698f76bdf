"""The two annotations people use to steer a running JobRun, parsed and validated.

* ``jobnet.dev/override: 'PATH=STATE[@SEEN[#ATTEMPT]][,...]'`` settles a Stuck job (Ready = run
  it again as a new attempt, Succeeded, Failed, Stopped) or re-runs/bypasses a Failed one
  (Ready, Succeeded); see :data:`jobnet.core.states.OVERRIDE_TRANSITIONS`. PATH may name a
  sub-jobnet (or ``/`` for the whole run): the override then applies to every job under it
  whose current state allows that transition. ``@SEEN[#ATTEMPT]`` (a job path only) is the
  state (and attempt) the person saw: the override applies only while the job is still in it
  (:mod:`jobnet.core.precondition`).
* ``jobnet.dev/override-message: TEXT`` (optional, next to the override) is the reason the person
  gives; it is kept with each job the override settles (status.overrides[].message) and its Event.
* ``jobnet.dev/stop: 'PATH[,PATH...]'`` stops a job, a sub-jobnet, or ``/`` the whole run.
* ``jobnet.dev/override-by`` / ``jobnet.dev/stop-by`` name the person who set (or last changed)
  the annotation. Only the operator's mutating admission webhook writes them, from the
  requester the API server authenticated: a value a person supplies is overwritten
  (:func:`requester_stamps`), so the audit trail (status.overrides[].by, the Events) cannot be
  forged through them. The operator removes each stamp together with its annotation.

The admission webhook refuses at once what is wrong whatever the run's state (syntax, unknown
path, unknown state: :func:`static_steering_problems`); what depends on the state (an override
the job's current state does not allow) is decided by the scheduler, which refuses it with a
Warning Event.

Parsing collects every problem (unknown path, unknown state, illegal transition naming the
current state, ...) so one ``kubectl annotate`` shows all mistakes at once. Pure: no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobnet.core.expansion import RunGraph
from jobnet.core.precondition import SEEN_MARK, Precondition, parse_precondition, precondition_problem, shown
from jobnet.core.states import (
    OVERRIDE_TARGETS,
    JobState,
    describe_override_rules,
    override_allowed,
)
from jobnet.core.status import JobStatus

OVERRIDE_ANNOTATION = "jobnet.dev/override"
OVERRIDE_MESSAGE_ANNOTATION = "jobnet.dev/override-message"
STOP_ANNOTATION = "jobnet.dev/stop"
OVERRIDE_BY_ANNOTATION = "jobnet.dev/override-by"
STOP_BY_ANNOTATION = "jobnet.dev/stop-by"
#: Each steering annotation and the annotation that names who set it.
REQUESTER_ANNOTATIONS = {OVERRIDE_ANNOTATION: OVERRIDE_BY_ANNOTATION, STOP_ANNOTATION: STOP_BY_ANNOTATION}


class OverrideRequest(BaseModel):
    """A person's request to set the job (or every eligible job under a jobnet) at ``path``."""

    model_config = ConfigDict(frozen=True)

    path: str
    state: JobState
    by: str | None = None
    #: The reason the person gave (``jobnet.dev/override-message``).
    message: str | None = None
    #: The job's state (and attempt) the person saw: the override applies only while it holds.
    precondition: Precondition | None = None

    def text(self) -> str:
        """The request as an item of ``jobnet.dev/override`` (``PATH=STATE[@SEEN[#ATTEMPT]]``)."""
        return f"{self.path}={self.state}{self.precondition.text() if self.precondition else ''}"


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


def override_targets(graph: RunGraph, states: Mapping[str, JobState], path: str, target: JobState) -> list[str]:
    """The jobs an override of ``path`` to ``target`` changes: those whose state allows it."""
    return [job for job in jobs_under(graph, path) if override_allowed(states.get(job, JobState.PENDING), target)]


def override_problem(
    graph: RunGraph,
    states: Mapping[str, JobState],
    stop_scopes: Iterable[str],
    path: str,
    target: JobState,
    precondition: Precondition | None = None,
    attempts: Mapping[str, int] | None = None,
) -> str | None:
    """Why ``path=target`` (written for the job in ``precondition``) cannot be applied now (None
    when it can). ``attempts`` maps job paths to their current attempts (0 or missing: never
    started)."""
    stale = precondition_problem(states, attempts, path, precondition)
    if stale is not None:
        return stale
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


def _override_items(
    text: str, graph: RunGraph | None
) -> tuple[list[tuple[str, JobState, Precondition | None]], list[str]]:
    """The ``(path, state, precondition)`` items of ``PATH=STATE[@SEEN[#ATTEMPT]][,...]`` and every
    problem that does not depend on the run's state (syntax, unknown path or state, a path named
    twice, a precondition on a jobnet). Without a ``graph`` the paths are taken as written."""
    if not text.strip():
        return [], [f"{OVERRIDE_ANNOTATION} is empty: expected PATH=STATE[,PATH=STATE...]"]
    allowed_names = {str(state).lower(): state for state in OVERRIDE_TARGETS}
    items: list[tuple[str, JobState, Precondition | None]] = []
    errors: list[str] = []
    for item in _items(text):
        if "=" not in item:
            example = f"{graph.root if graph is not None else '/jobnet'}/extract=Succeeded"
            errors.append(f"{item!r} is not PATH=STATE (e.g. {example})")
            continue
        raw_path, _, raw_target = item.partition("=")
        raw_state, mark, raw_seen = raw_target.partition(SEEN_MARK)
        path, error = resolve_path(graph, raw_path) if graph is not None else (raw_path.strip(), None)
        state = allowed_names.get(raw_state.strip().lower())
        if state is None:
            errors.append(
                f"{item!r}: unknown override state {raw_state.strip()!r}; "
                f"use one of {', '.join(sorted(str(s) for s in OVERRIDE_TARGETS))}"
            )
        if error is not None:
            errors.append(error)
        precondition, seen_error = parse_precondition(raw_seen) if mark else (None, None)
        if seen_error is not None:
            errors.append(f"{item!r}: {seen_error}")
        elif precondition is not None and path is not None and graph is not None and graph.nodes[path].kind != "job":
            errors.append(
                f"{item!r}: {path} is a jobnet; a precondition {SEEN_MARK}STATE names one job's state "
                f"(name the job, or leave {precondition.text()!r} out to apply to every job it allows)"
            )
            continue
        if path is None or state is None or seen_error is not None:
            continue
        if any(path == named for named, _, _ in items):
            errors.append(f"{path} is named twice in one override")
            continue
        items.append((path, state, precondition))
    return items, errors


def parse_override_annotation(
    text: str,
    graph: RunGraph,
    states: Mapping[str, JobState],
    stop_scopes: Iterable[str] = (),
    by: str | None = None,
    message: str | None = None,
    attempts: Mapping[str, int] | None = None,
) -> ParsedOverrides:
    """Parse ``PATH=STATE[@SEEN[#ATTEMPT]][,...]`` against the run's current job states.

    ``states`` maps job paths to their states (a job missing from it is Pending; see
    ``jobnet.core.scheduler.job_states``), ``attempts`` to their attempts (missing: 0, never
    started). ``message`` is the person's reason, given to every request. Returns the valid
    requests and every error (an item whose precondition no longer holds is one).
    """
    scopes = tuple(stop_scopes)
    items, errors = _override_items(text, graph)
    requests: list[OverrideRequest] = []
    for path, state, precondition in items:
        problem = override_problem(graph, states, scopes, path, state, precondition, attempts)
        if problem is not None:
            errors.append(problem)
            continue
        requests.append(OverrideRequest(path=path, state=state, by=by, message=message, precondition=precondition))
    return ParsedOverrides(requests=tuple(requests), errors=tuple(errors))


def stale_override_problems(text: str, graph: RunGraph, jobs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The items of a well-formed override whose precondition already does not hold against the
    run's stored status (what admission refuses; whether the job's state allows the transition
    at all is decided when the override is applied). ``jobs``: ``status.jobs`` as stored (large-run
    chunks decoded); only the entries of the jobs named with a precondition are read, so a
    10,000-job status costs no more than a small one. ValueError when such an entry is invalid."""
    problems = []
    for path, _, precondition in _override_items(text, graph)[0]:
        if precondition is not None:
            raw = jobs.get(path)
            state, attempt = shown(JobStatus.model_validate(raw) if raw is not None else None)
            problem = precondition.problem(path, state, attempt)
            if problem is not None:
                problems.append(problem)
    return problems


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


def changed_steering(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The steering annotations ``new`` adds or changes (a removal is no request)."""
    return [key for key in REQUESTER_ANNOTATIONS if key in new and new[key] != old.get(key)]


def static_steering_problems(
    old: Mapping[str, str], new: Mapping[str, str], graph: RunGraph | None
) -> list[tuple[str, str]]:
    """What is wrong, whatever the run's state, with the steering annotations an update adds
    or changes (``old``/``new``: the annotations before and after), as ``(annotation, problem)``.
    Without the run's ``graph`` (its JobNet cannot be expanded now) the paths are not checked:
    the scheduler judges them when it applies the annotation."""
    problems: list[tuple[str, str]] = []
    for key in changed_steering(old, new):
        text = new[key]
        if key == OVERRIDE_ANNOTATION:
            errors = _override_items(text, graph)[1]
        elif graph is not None:
            errors = list(parse_stop_annotation(text, graph).errors)
        else:
            errors = [] if text.strip() else [f"{STOP_ANNOTATION} is empty: expected a path such as /"]
        problems.extend((key, error) for error in errors)
    return problems


def requester_stamps(old: Mapping[str, str], new: Mapping[str, str], requester: str | None) -> dict[str, str | None]:
    """The changes that make ``new``'s requester annotations true (key -> value, None = remove).

    A steering annotation the update adds or changes is stamped with ``requester``; an
    unchanged one keeps the stamp it had (a person cannot rewrite who set it); without the
    steering annotation there is no stamp. Only differences from ``new`` are returned, so the
    operator's own writes (removing applied annotations, its bookkeeping) need no change.
    """
    return steering_stamps(old, new, REQUESTER_ANNOTATIONS, requester or None)


def steering_stamps(
    old: Mapping[str, str], new: Mapping[str, str], stamp_keys: Mapping[str, str], value: str | None
) -> dict[str, str | None]:
    """The changes (key -> value, None = remove) that make the stamp of each steering annotation
    (``stamp_keys``: steering annotation -> its stamp) true in ``new``: ``value`` where the update
    adds or changes the steering annotation, the old stamp where it is unchanged, none without it.
    Only differences from ``new``."""
    changed = set(changed_steering(old, new))
    stamps: dict[str, str | None] = {}
    for key, stamp_key in stamp_keys.items():
        if key not in new:
            wanted = None
        elif key in changed:
            wanted = value
        else:
            wanted = old.get(stamp_key)
        if new.get(stamp_key) != wanted:
            stamps[stamp_key] = wanted
    return stamps
