"""The scheduler's runtime <-> the JobRun status the operator persists.

The status *is* the persisted runtime: after a restart the operator rebuilds the scheduler's
state from it (:func:`runtime_from_status`) plus the agents' journals, so nothing is launched
twice and nothing finished meanwhile is lost. Writes are coalesced: :func:`status_patch`
builds one merge patch with only the jobs a decision changed. Bookkeeping that only matters
while a job is undecided (``since``, ``deadline``, ``killReason``, ``dispatch``) is dropped
once the job has finished, to keep 10,000-job runs compact. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from jobnet.core import status as api
from jobnet.core.expansion import RunGraph
from jobnet.core.scheduler import Decision, Dispatch, EarlierAttempt, JobRuntime, RunRuntime, Settlement
from jobnet.core.scheduler.summary import stuck_summary
from jobnet.core.states import TERMINAL_STATES, JobState, RunPhase
from jobnet.core.status import (
    OUTPUT_TAIL_MAX_CHARS,
    DispatchStatus,
    EarlierAttemptStatus,
    JobRunStatus,
    JobStatus,
    StateOverride,
)

#: Runs with at most this many entries (jobs and jobnets) keep every entry plain in ``status.jobs``.
PLAIN_MAX_ENTRIES = 256
#: Entries per compressed chunk of a larger run (a change rewrites only its chunk).
CHUNK_ENTRIES = 256
#: Output tail characters a whole run may keep in its status; each job gets an equal share.
RUN_TAIL_BUDGET_CHARS = 256 * 1024


def _api_state(state: JobState) -> api.JobStateName:
    """The status API spells states as literals; the enum's values are exactly those."""
    return cast(api.JobStateName, str(state))


def to_rfc3339(timestamp: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with milliseconds: ``2026-11-22T03:00:00.250Z``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_rfc3339(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None


def job_status(job: JobRuntime) -> JobStatus:
    """The status entry of one job (the edge adds ``outputTail``)."""
    undecided = job.state not in TERMINAL_STATES
    dispatch = job.dispatch if undecided else None
    return JobStatus(
        state=_api_state(job.state),
        attempt=job.attempt or None,
        host=job.host,
        pid=job.pid,
        exit_code=job.exit_code,
        started_at=to_rfc3339(job.started_at),
        finished_at=to_rfc3339(job.finished_at),
        reason=job.reason,
        message=job.message,
        since=to_rfc3339(job.since) if undecided else None,
        deadline=to_rfc3339(job.deadline) if undecided else None,
        kill_reason=job.kill_reason if undecided else None,
        dispatch=None
        if dispatch is None
        else DispatchStatus(
            op=dispatch.op,
            attempts=dispatch.attempts_used,
            last_attempt_at=to_rfc3339(dispatch.last_attempt_at) or "",
            in_flight=dispatch.in_flight,
            outcome_unknown=dispatch.unknown_seen,
            last_error=dispatch.last_error,
            last_error_message=dispatch.last_error_message,
            override_by=dispatch.override_by,
            override_message=dispatch.override_message,
        ),
        relaunching_since=to_rfc3339(job.relaunching_since) if undecided else None,
        earlier_attempts=[_earlier_status(earlier) for earlier in job.earlier] or None,
        earlier_attempts_dropped=job.earlier_dropped or None,
    )


#: The times of an earlier attempt: Unix seconds in the runtime, RFC 3339 in the status.
_EARLIER_TIMES = ("started_at", "finished_at", "rerun_at")


def _earlier_status(earlier: EarlierAttempt) -> EarlierAttemptStatus:
    fields = earlier.model_dump()
    fields.update({name: to_rfc3339(fields[name]) for name in _EARLIER_TIMES}, state=_api_state(earlier.state))
    return EarlierAttemptStatus.model_validate(fields)


def _earlier_runtime(earlier: EarlierAttemptStatus) -> EarlierAttempt:
    fields = earlier.model_dump()
    fields.update({name: from_rfc3339(fields[name]) for name in _EARLIER_TIMES})
    return EarlierAttempt.model_validate({**fields, "rerun_at": fields["rerun_at"] or 0.0})


def _override(settlement: Settlement) -> StateOverride:
    return StateOverride(
        path=settlement.path,
        from_state=_api_state(settlement.from_state),
        to_state=_api_state(settlement.to_state),
        by=settlement.by,
        at=to_rfc3339(settlement.at) or "",
        message=settlement.message,
    )


def _summary(decision: Decision, *, for_patch: bool) -> dict[str, Any]:
    runtime = decision.runtime
    counts: dict[str, int | None] = dict(decision.counts)
    if for_patch:
        # A merge patch merges maps: a state no job is in any more must be removed explicitly.
        counts = {str(state): counts.get(str(state)) for state in JobState}
    # The run's reason while Stuck: which jobs and why ("": the jobs under every jobnet).
    reason, message = _jobnet_reason(decision, runtime.phase == RunPhase.STUCK, "")
    return {
        "phase": str(runtime.phase),
        "reason": reason,
        "message": message,
        "progress": decision.progress,
        "startedAt": to_rfc3339(runtime.started_at),
        "finishedAt": to_rfc3339(runtime.finished_at),
        "counts": dict(sorted(counts.items())),
        "overrides": [_override(s).model_dump(by_alias=True, exclude_none=True) for s in runtime.settlements],
        "stopScopes": list(runtime.stop_scopes),
    }


def run_status(decision: Decision) -> JobRunStatus:
    """The whole status of a run after ``decision`` (for new runs and small ones)."""
    jobs = {path: job_status(job) for path, job in decision.runtime.jobs.items()}
    jobs.update(
        {
            path: JobStatus.model_validate(_jobnet_entry(decision, path, state))
            for path, state in decision.jobnet_states.items()
        }
    )
    return JobRunStatus.model_validate({**_summary(decision, for_patch=False), "jobs": jobs})


def status_patch(
    decision: Decision, previous_jobnet_states: dict[str, JobState] | None = None, *, full: bool = False
) -> dict[str, Any]:
    """A JSON merge patch of ``status``: the summary plus only the jobs and jobnets that changed.

    ``full=True`` (the first write of a run) includes every job, Pending ones too. Changed
    entries carry explicit nulls, so nothing stale (a finished job's ``dispatch``) survives the
    merge; ``outputTail`` is left to the edge.
    """
    previous = previous_jobnet_states or {}
    jobs: dict[str, Any] = {}
    for path in sorted(decision.runtime.jobs if full else decision.changed):
        jobs[path] = _patch_entry(job_status(decision.runtime.jobs[path]))
    for path, state in decision.jobnet_states.items():
        # A Stuck jobnet's message names its Stuck jobs: it changes with them.
        if full or previous.get(path) != state or (state == JobState.STUCK and _changed_under(decision, path)):
            jobs[path] = _jobnet_entry(decision, path, state, clear=previous.get(path) == JobState.STUCK)
    return {**_summary(decision, for_patch=True), "jobs": jobs}


def _jobnet_entry(decision: Decision, path: str, state: JobState, *, clear: bool = False) -> dict[str, Any]:
    """A jobnet's entry: its state, and while Stuck why (``clear``: the reason and message it had
    are removed by explicit nulls of the merge patch)."""
    reason, message = _jobnet_reason(decision, state == JobState.STUCK, path)
    if reason is None and not clear:
        return {"state": str(state)}
    return {"state": str(state), "reason": reason, "message": message}


def _jobnet_reason(decision: Decision, stuck: bool, path: str) -> tuple[str | None, str | None]:
    """Which jobs keep a Stuck jobnet (or the run, at its root) Stuck, and why."""
    found = stuck_summary(decision.runtime.jobs, path) if stuck else None
    return found if found is not None else (None, None)


def _changed_under(decision: Decision, path: str) -> bool:
    prefix = f"{path}/"
    return any(changed.startswith(prefix) for changed in decision.changed)


def _patch_entry(entry: JobStatus) -> dict[str, Any]:
    """A job's entry for a merge patch: every field, null to remove it, but ``earlierAttempts``
    as stored (a merge patch replaces a list whole: nulls inside it would be kept)."""
    dumped = entry.model_dump(by_alias=True, mode="json", exclude={"output_tail", "earlier_attempts"})
    dumped["earlierAttempts"] = (
        None
        if entry.earlier_attempts is None
        else [earlier.model_dump(by_alias=True, mode="json", exclude_none=True) for earlier in entry.earlier_attempts]
    )
    return dumped


def runtime_from_status(run_uid: str, graph: RunGraph, status: JobRunStatus) -> RunRuntime:
    """Rebuild the scheduler's runtime from a persisted status (operator restart, D04).

    Jobs missing from the status are Pending. Entries of jobnet nodes are derived state and
    ignored. A request that was in flight when the status was written died with its sender: it
    is re-sent at once with the same key (the agent deduplicates). A job found Starting/Stopping
    without delivery bookkeeping (an older status) is treated the same way, its outcome unknown,
    never assumed to have failed.
    """
    jobs: dict[str, JobRuntime] = {}
    for node in graph.jobs():
        entry = status.jobs.get(node.path)
        if entry is None:
            continue
        state = JobState(entry.state)
        since = from_rfc3339(entry.since)
        dispatch: Dispatch | None = None
        if entry.dispatch is not None:
            dispatch = Dispatch(
                op=entry.dispatch.op,
                attempts_used=entry.dispatch.attempts,
                last_attempt_at=from_rfc3339(entry.dispatch.last_attempt_at) or 0.0,
                in_flight=False,
                interrupted=entry.dispatch.in_flight,
                # What became of a request in flight is unknown: it may have reached the agent.
                unknown_seen=entry.dispatch.outcome_unknown or entry.dispatch.in_flight,
                last_error=entry.dispatch.last_error,
                last_error_message=entry.dispatch.last_error_message,
                override_by=entry.dispatch.override_by,
                override_message=entry.dispatch.override_message,
            )
        elif state == JobState.STARTING or (state == JobState.STOPPING and entry.kill_reason is None):
            dispatch = Dispatch(
                op="launch" if state == JobState.STARTING else "kill",
                attempts_used=1,
                last_attempt_at=since or 0.0,
                in_flight=False,
                interrupted=True,
                unknown_seen=True,
            )
        jobs[node.path] = JobRuntime(
            state=state,
            attempt=entry.attempt or 0,
            reason=entry.reason,
            message=entry.message,
            host=entry.host,
            pid=entry.pid,
            exit_code=entry.exit_code,
            started_at=from_rfc3339(entry.started_at),
            finished_at=from_rfc3339(entry.finished_at),
            since=since,
            deadline=from_rfc3339(entry.deadline),
            kill_reason=entry.kill_reason,
            dispatch=dispatch,
            relaunching_since=from_rfc3339(entry.relaunching_since),
            earlier=tuple(_earlier_runtime(earlier) for earlier in entry.earlier_attempts or ()),
            earlier_dropped=entry.earlier_attempts_dropped or 0,
        )
    settlements = tuple(
        Settlement(
            path=o.path,
            from_state=JobState(o.from_state),
            to_state=JobState(o.to_state),
            by=o.by,
            at=from_rfc3339(o.at) or 0.0,
            message=o.message or "",
        )
        for o in status.overrides
    )
    return RunRuntime(
        run_uid=run_uid,
        jobs=jobs,
        stop_scopes=tuple(status.stop_scopes),
        settlements=settlements,
        phase=RunPhase(status.phase),
        started_at=from_rfc3339(status.started_at),
        finished_at=from_rfc3339(status.finished_at),
    )


# ---------------------------------------------------------------- object size (docs/scale.md)


def output_tail_limit(entry_count: int) -> int:
    """Longest output tail one job of a run with ``entry_count`` entries keeps in the status:
    an equal share of :data:`RUN_TAIL_BUDGET_CHARS`, at most :data:`OUTPUT_TAIL_MAX_CHARS`."""
    return min(OUTPUT_TAIL_MAX_CHARS, RUN_TAIL_BUDGET_CHARS // max(1, entry_count))


def _entry_json(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), sort_keys=True)


def _chunk_of_members(members: Iterable[str]) -> str:
    """A chunk from its ``"path":entry`` JSON members, in path order."""
    # Level 1: a fifth of level 6's CPU for about 15% more bytes (docs/scale.md).
    text = "{" + ",".join(members) + "}"
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=1, mtime=0)).decode("ascii")


def _chunk_of_texts(texts: Mapping[str, str]) -> str:
    """A chunk from entries already serialised (path -> compact JSON of the entry)."""
    return _chunk_of_members(f"{json.dumps(path)}:{texts[path]}" for path in sorted(texts))


def encode_chunk(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """Entries (path -> camelCase entry without nulls) as base64 of gzipped compact JSON."""
    return _chunk_of_texts({path: _entry_json(entry) for path, entry in entries.items()})


def decode_chunk(chunk: str) -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(gzip.decompress(base64.b64decode(chunk, validate=True)))
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"a status.jobChunks entry is not base64 gzip JSON: {e}") from None
    if not isinstance(entries, dict):
        raise ValueError("a status.jobChunks entry does not hold an object of path -> job entry")  # noqa: TRY004 - bad data, not a caller's type error
    return entries


def decoded_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` with the entries of ``jobChunks`` merged into ``jobs`` (plain entries win) and
    ``jobChunks`` removed: the shape every reader (recovery, ``kubectl jobnet``) works on."""
    chunks = status.get("jobChunks") or {}
    if not chunks:
        return dict(status)
    jobs: dict[str, Any] = {}
    for index in sorted(chunks, key=lambda key: (len(key), key)):
        if chunks[index] is not None:
            jobs.update(decode_chunk(chunks[index]))
    jobs.update(status.get("jobs") or {})
    return {**{key: value for key, value in status.items() if key != "jobChunks"}, "jobs": jobs}


def _merged(old: Mapping[str, Any] | None, change: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in {**(old or {}), **change}.items() if value is not None}


class StatusEncoder:
    """Keeps every JobRun object far below etcd's limit (docs/scale.md): turns the merge patches
    of :func:`status_patch` (plus the edge's ``outputTail``) into the patch to send.

    Every output tail is cut to the run's share (:func:`output_tail_limit`). A run of at most
    :data:`PLAIN_MAX_ENTRIES` entries keeps them plain in ``status.jobs``; a larger run keeps
    them in ``status.jobChunks``: the run's node paths, sorted, in fixed chunks of
    :data:`CHUNK_ENTRIES`, each rewritten only when one of its entries changed. The encoder
    holds the last stored entry of every path of a chunked run, with its JSON (it rewrites whole
    chunks, and serialises only the entries that changed): call :meth:`commit` once the patch of
    :meth:`encode` was stored.
    """

    def __init__(self, paths: Iterable[str], status: Mapping[str, Any] | None = None) -> None:
        ordered = sorted(paths)
        self.tail_limit = output_tail_limit(len(ordered))
        self.chunked = len(ordered) > PLAIN_MAX_ENTRIES
        self._chunk_of = {path: index // CHUNK_ENTRIES for index, path in enumerate(ordered)}
        #: each chunk's paths in order, with their JSON (a rewritten chunk serialises no path again)
        self._chunk_paths = (
            [
                [(path, json.dumps(path)) for path in ordered[start : start + CHUNK_ENTRIES]]
                for start in range(0, len(ordered), CHUNK_ENTRIES)
            ]
            if self.chunked
            else []
        )
        self._chunk_count = (len(ordered) + CHUNK_ENTRIES - 1) // CHUNK_ENTRIES
        self._entries: dict[int, dict[str, dict[str, Any]]] = {}
        self._texts: dict[int, dict[str, str]] = {}
        self._pending: dict[int, tuple[dict[str, dict[str, Any]], dict[str, str]]] = {}
        # Chunks of the stored status this encoder never writes (the run's graph changed since, or
        # it is now plain): a full write removes them.
        written = {str(index) for index in range(self._chunk_count)} if self.chunked else set()
        self._stale_chunks = sorted(set((status or {}).get("jobChunks") or {}) - written)
        if self.chunked:
            for path, entry in (decoded_status(status or {}).get("jobs") or {}).items():
                if path in self._chunk_of:
                    index = self._chunk_of[path]
                    self._entries.setdefault(index, {})[path] = stored = _merged(None, entry)
                    self._texts.setdefault(index, {})[path] = _entry_json(stored)

    def _cut_tail(self, entry: dict[str, Any]) -> dict[str, Any]:
        tail = entry.get("outputTail")
        if isinstance(tail, str) and len(tail) > self.tail_limit:
            return {**entry, "outputTail": tail[len(tail) - self.tail_limit :] if self.tail_limit else None}
        return entry

    def encode(self, patch: Mapping[str, Any], *, full: bool = False) -> dict[str, Any]:
        """The patch to send for ``patch`` (``full``: it is the first write, holding every entry;
        a chunked run then also clears whatever else the stored status had). Until :meth:`commit`,
        the encoder still describes the stored status: a refused patch is simply encoded again."""
        jobs = {path: self._cut_tail(entry) for path, entry in (patch.get("jobs") or {}).items()}
        stale: dict[str, str | None] = dict.fromkeys(self._stale_chunks) if full else {}
        if not self.chunked:
            return {**patch, "jobs": jobs, **({"jobChunks": stale} if stale else {})}
        touched: set[int] = set(range(self._chunk_count)) if full else set()
        pending: dict[int, tuple[dict[str, dict[str, Any]], dict[str, str]]] = {}
        for path, entry in jobs.items():
            index = self._chunk_of.get(path)
            if index is None:
                raise ValueError(f"status patch names {path!r}, which is not a node of this run")
            if index not in pending:
                pending[index] = (dict(self._entries.get(index, {})), dict(self._texts.get(index, {})))
            entries, texts = pending[index]
            entries[path] = merged = _merged(entries.get(path), entry)
            texts[path] = _entry_json(merged)
            touched.add(index)
        self._pending = pending
        encoded = {key: value for key, value in patch.items() if key != "jobs"}
        if full:
            encoded["jobs"] = None  # plain entries of an older status would shadow the chunks
        chunks = {
            **stale,
            **{
                str(index): self._chunk(index, pending[index][1] if index in pending else self._texts.get(index, {}))
                for index in sorted(touched)
            },
        }
        if chunks:
            encoded["jobChunks"] = chunks
        return encoded

    def _chunk(self, index: int, texts: Mapping[str, str]) -> str:
        return _chunk_of_members(
            f"{quoted}:{texts[path]}" for path, quoted in self._chunk_paths[index] if path in texts
        )

    def commit(self) -> None:
        """The patch of the last :meth:`encode` was stored."""
        for index, (entries, texts) in self._pending.items():
            self._entries[index], self._texts[index] = entries, texts
        self._pending = {}
