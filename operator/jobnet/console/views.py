"""What the console's screens show, computed without I/O: run list rows, the changes a person may
make to a job, its attempts, its environment, and event list rows.

Everything here takes API bodies (plain dicts as the API returns them), parsed statuses, run
graphs and a clock, and returns plain data the templates render. The rules come from the core
(:data:`jobnet.core.states.OVERRIDE_TRANSITIONS`, :func:`jobnet.core.env.job_environment`), so the
console offers exactly what the operator accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobnet.core.env import job_environment
from jobnet.core.expansion import RunGraph
from jobnet.core.runstatus import decoded_status
from jobnet.core.states import OVERRIDE_TRANSITIONS, JobState
from jobnet.core.status import EarlierAttemptStatus, JobRunStatus, JobStatus, StateOverride
from jobnet.plugin.tree import elapsed, format_duration
from jobnet.plugin.view import event_time

Body = dict[str, Any]

#: A symbol per state, so that state never depends on colour alone.
STATE_ICONS: Mapping[str, str] = {
    "Pending": "○",
    "Ready": "◔",
    "Starting": "◑",
    "Running": "▶",
    "Stopping": "◼",
    "Succeeded": "✔",
    "Failed": "✖",
    "Stopped": "■",
    "Stuck": "⚠",
    "Skipped": "↷",
}
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Stopped"})
#: The order the job monitor offers the override targets in (docs/job-states.md).
OVERRIDE_ORDER = (JobState.READY, JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)
#: A job or jobnet path as Events name it (``/nightly/load/step1``).
PATH_IN_TEXT = re.compile(r"(?<![\w/])/[a-z0-9][-a-z0-9.]*(?:/[a-z0-9][-a-z0-9.]*)*")


def icon(state: str) -> str:
    return STATE_ICONS.get(state, "?")


def parse_status(body: Body) -> JobRunStatus:
    """A JobRun's status, its large-run chunks merged (ValueError when it cannot be read)."""
    return JobRunStatus.model_validate(decoded_status(body.get("status") or {}))


def parse_status_lazily(body: Body) -> tuple[JobRunStatus, dict[str, Body]]:
    """A JobRun's status without its job entries, and the entries as stored (path -> entry).
    Validating 10,000 entries takes longer than a monitor may; it validates only those it draws
    (:func:`job_entries`). ValueError when the status cannot be read."""
    raw = decoded_status(body.get("status") or {})
    jobs = raw.pop("jobs", None) or {}
    if not isinstance(jobs, dict):
        raise ValueError("status.jobs is not a mapping")
    return JobRunStatus.model_validate(raw), jobs


def job_entries(jobs: Mapping[str, Body], paths: Iterable[str]) -> dict[str, JobStatus]:
    """The validated entries of ``paths`` (those that have one)."""
    return {path: JobStatus.model_validate(jobs[path]) for path in paths if path in jobs}


def job_list_rows(paths: Iterable[str], jobs: Mapping[str, Body]) -> list[list[Any]]:
    """The monitor's job list, one row per path in order: path, state, its icon, attempt, start,
    end, reason (the browser computes durations for the rows in view)."""
    rows: list[list[Any]] = []
    for path in paths:
        entry = jobs.get(path) or {}
        state = str(entry.get("state") or "Pending")
        rows.append(
            [
                path,
                state,
                icon(state),
                entry.get("attempt") or "",
                entry.get("startedAt") or "",
                entry.get("finishedAt") or "",
                entry.get("reason") or "",
            ]
        )
    return rows


# ------------------------------------------------------------------ run list


@dataclass(frozen=True)
class RunFilter:
    """The run list's filters; empty means any."""

    jobnet: str = ""
    phase: str = ""
    search: str = ""


@dataclass(frozen=True)
class RunRow:
    namespace: str
    name: str
    jobnet: str
    phase: str
    progress: str
    started_at: str
    finished_at: str
    duration: str
    stuck: bool
    message: str


def run_row(body: Body, now: float) -> RunRow:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    started, finished = status.get("startedAt"), status.get("finishedAt")
    return RunRow(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        jobnet=str((body.get("spec") or {}).get("jobNetRef") or ""),
        phase=phase,
        progress=str(status.get("progress") or "-"),
        started_at=str(started or "-"),
        finished_at=str(finished or "-"),
        duration=format_duration(elapsed(started, finished, now)),
        stuck=phase == "Stuck",
        message=str(status.get("message") or ""),
    )


def run_rows(bodies: Iterable[Body], wanted: RunFilter, now: float) -> list[RunRow]:
    """The rows that pass ``wanted``: Stuck runs first (a person is needed), then the newest first."""
    search = wanted.search.strip().lower()
    rows = []
    for body in bodies:
        row = run_row(body, now)
        if wanted.jobnet and row.jobnet != wanted.jobnet:
            continue
        if wanted.phase and row.phase != wanted.phase:
            continue
        if search and search not in f"{row.name} {row.jobnet} {row.phase} {row.message}".lower():
            continue
        rows.append(row)
    rows.sort(key=lambda row: row.name)
    rows.sort(key=lambda row: row.started_at if row.started_at != "-" else "~", reverse=True)
    rows.sort(key=lambda row: not row.stuck)
    return rows


def startable_first(jobnets: Iterable[Body]) -> list[str]:
    """JobNet names for the start form: those no other JobNet expands first (what people start),
    then the ones made to be expanded; each group by name."""
    jobnets = list(jobnets)
    names = [str(item["metadata"]["name"]) for item in jobnets]
    expanded = {
        job.get("expand")
        for item in jobnets
        for job in [*((item.get("spec") or {}).get("jobs") or []), *((item.get("spec") or {}).get("finally") or [])]
        if isinstance(job, dict)
    }
    return sorted(names, key=lambda name: (name in expanded, name))


def parse_env_lines(text: str) -> tuple[dict[str, str], list[str]]:
    """``KEY=VALUE`` lines (blank lines ignored) as a dict, and every line that is not one."""
    env: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, equals, value = line.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            problems.append(f"line {number}: {line.strip()!r} is not KEY=VALUE (KEY: letters, digits, _)")
            continue
        env[key.strip()] = value
    return env, problems


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    jobnet: str
    next_time: str
    last_run: str
    last_run_phase: str
    suspended: bool


def schedule_rows(items: Iterable[Body]) -> list[ScheduleRow]:
    """The run list's schedules (JobSchedule objects), the next due first, suspended ones last."""
    rows = []
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        rows.append(
            ScheduleRow(
                name=str((item.get("metadata") or {}).get("name") or ""),
                jobnet=str(spec.get("jobNetRef") or ""),
                next_time=str(status.get("nextScheduleTime") or "-"),
                last_run=str(status.get("lastRun") or ""),
                last_run_phase=str(status.get("lastRunPhase") or ""),
                suspended=bool(spec.get("suspend")),
            )
        )
    return sorted(rows, key=lambda row: (row.suspended, row.next_time == "-", row.next_time, row.name))


# ------------------------------------------------------------------ job monitor


def override_choices(state: str) -> list[str]:
    """The states a person may set a job in ``state`` to, in the order the monitor shows them."""
    try:
        allowed = OVERRIDE_TRANSITIONS.get(JobState(state), frozenset())
    except ValueError:
        return []
    return [str(target) for target in OVERRIDE_ORDER if target in allowed]


def stoppable(state: str, phase: str) -> bool:
    """Whether stopping a job (or jobnet) in ``state`` of a run in ``phase`` can change anything."""
    return phase not in FINISHED_PHASES and state not in ("Succeeded", "Failed", "Stopped", "Skipped")


@dataclass(frozen=True)
class AttemptRow:
    number: int | None
    state: str
    host: str
    pid: str
    exit_code: str
    started_at: str
    finished_at: str
    note: str


def attempts(job: JobStatus | None) -> list[AttemptRow]:
    """The job's attempts kept in its status, oldest first: the earlier ones (how each ended and
    who ran the job again; why is in the overrides), then the current one. Older ones than the
    status keeps are only counted (``job.earlier_attempts_dropped``)."""
    if job is None:
        return []
    rows = [
        _attempt_row(
            earlier.attempt,
            earlier,
            " · ".join(
                part
                for part in (earlier.reason, f"run again by {earlier.rerun_by or 'unknown'}", earlier.rerun_at)
                if part
            ),
        )
        for earlier in job.earlier_attempts or ()
    ]
    if job.attempt is not None:
        rows.append(_attempt_row(job.attempt, job, job.reason or ""))
    return rows


def _attempt_row(number: int, entry: JobStatus | EarlierAttemptStatus, note: str) -> AttemptRow:
    return AttemptRow(
        number=number,
        state=entry.state,
        host=entry.host or "-",
        pid=_text(entry.pid),
        exit_code=_text(entry.exit_code),
        started_at=entry.started_at or "-",
        finished_at=entry.finished_at or "-",
        note=note,
    )


def _text(number: int | None) -> str:
    return "-" if number is None else str(number)


def steering_history(path: str, graph: RunGraph | None, overrides: Iterable[StateOverride]) -> list[StateOverride]:
    """The overrides that applied to ``path`` or to a jobnet containing it, oldest first."""
    enclosing = {path}
    if graph is not None and path in graph.nodes:
        enclosing.update(node.path for node in graph.ancestors(path))
    return [entry for entry in overrides if entry.path in enclosing]


def environment_of(graph: RunGraph, path: str, body: Body, attempt: int) -> dict[str, str]:
    """The environment job ``path`` got (or gets) for ``attempt``, sorted by name."""
    node = graph.node(path)
    metadata = body.get("metadata") or {}
    environment = job_environment(
        graph,
        path,
        run_uid=str(metadata.get("uid") or ""),
        run_name=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or ""),
        run_env=(body.get("spec") or {}).get("env") or {},
        attempt=attempt,
        server_name=node.host.address if node.host is not None else "",
    )
    return dict(sorted(environment.items()))


# ------------------------------------------------------------------ event list


@dataclass(frozen=True)
class EventFilter:
    type: str = ""
    reason: str = ""
    run: str = ""
    path: str = ""


@dataclass(frozen=True)
class EventRow:
    namespace: str
    run: str
    type: str
    reason: str
    count: int
    last_seen: str
    message: str
    paths: tuple[str, ...]


def event_rows(events: Iterable[Body], wanted: EventFilter) -> list[EventRow]:
    """The JobRun Events that pass ``wanted``, newest first; ``paths`` are the job paths each names."""
    rows: list[tuple[EventRow, int]] = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "JobRun":
            continue
        message = " ".join(str(event.get("message") or "").split())
        row = EventRow(
            namespace=str(involved.get("namespace") or (event.get("metadata") or {}).get("namespace") or ""),
            run=str(involved.get("name") or ""),
            type=str(event.get("type") or ""),
            reason=str(event.get("reason") or ""),
            count=int(event.get("count") or 1),
            last_seen=event_time(event),
            message=message,
            paths=tuple(dict.fromkeys(PATH_IN_TEXT.findall(message))),
        )
        if wanted.type and row.type != wanted.type:
            continue
        if wanted.reason and row.reason != wanted.reason:
            continue
        if wanted.run and row.run != wanted.run:
            continue
        if wanted.path and not any(p == wanted.path or p.startswith(wanted.path + "/") for p in row.paths):
            continue
        rows.append((row, _write_order(event)))
    # Events of one second share a timestamp: the order the API server stored them decides.
    rows.sort(key=lambda pair: (pair[0].last_seen, pair[1]), reverse=True)
    return [row for row, _ in rows]


def _write_order(event: Body) -> int:
    """The Event's resourceVersion as a number (etcd's revision; 0 where it is not one)."""
    version = str((event.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else 0
