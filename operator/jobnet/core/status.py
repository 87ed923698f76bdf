"""Status models of JobNet and JobRun (the operator writes them; the CRD status schemas are
generated from them by ``jobnet crds``).

Per-job status is deliberately compact (a JobRun of thousands of jobs must stay far below
etcd's 1.5 MiB request limit): short field names, everything but ``state`` optional, and only
a bounded tail of the output (``OUTPUT_TAIL_MAX_CHARS``); full output stays on the VM.
Timestamps are RFC 3339 strings (``2026-11-22T03:00:00Z``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Longest output tail kept in a job's status, in characters.
OUTPUT_TAIL_MAX_CHARS = 2048

#: Earlier attempts one job keeps in its status at most (older ones are only counted).
ATTEMPT_HISTORY_MAX = 5
#: Earlier-attempt records a whole run may keep in its status; each entry gets an equal share.
RUN_ATTEMPT_HISTORY_BUDGET = 1024


def attempt_history_limit(entry_count: int) -> int:
    """Earlier attempts one job of a run with ``entry_count`` entries keeps in the status: an
    equal share of :data:`RUN_ATTEMPT_HISTORY_BUDGET`, at most :data:`ATTEMPT_HISTORY_MAX`
    (5 up to 204 entries, 1 up to 1,024, none beyond: those runs only count them)."""
    return min(ATTEMPT_HISTORY_MAX, RUN_ATTEMPT_HISTORY_BUDGET // max(1, entry_count))


#: How the API spells a :class:`jobnet.core.states.JobState` (the scheduler's vocabulary; the
#: string values are the same, checked by tests/unit/test_states.py). A Literal, so that the
#: CRD schema gets a plain string enum.
JobStateName = Literal[
    "Pending",
    "Ready",
    "Starting",
    "Running",
    "Stopping",
    "Succeeded",
    "Failed",
    "Stopped",
    "Stuck",
    "Skipped",
]
JOB_STATES: tuple[JobStateName, ...] = JobStateName.__args__  # type: ignore[attr-defined]

#: How the API spells a :class:`jobnet.core.states.RunPhase`.
RunPhaseName = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped", "Stuck"]
RUN_PHASES: tuple[RunPhaseName, ...] = RunPhaseName.__args__  # type: ignore[attr-defined]


class StatusModel(BaseModel):
    """Base of the status models: camelCase in the API. Fields it does not know are ignored, so
    that a reader older than the operator that wrote a status (a `kubectl jobnet` plugin not yet
    upgraded) still reads what it knows."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def _time(description: str) -> Any:
    """An optional RFC 3339 time (``format: date-time`` in the CRD, so clients may parse it)."""
    return Field(default=None, description=description, json_schema_extra={"format": "date-time"})


class Condition(StatusModel):
    """A condition as the Kubernetes API conventions define it (``kubectl wait --for=condition=...``)."""

    type: str = Field(description="`Succeeded` (JobRun); `Valid` and `Ready` (JobNet).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="Machine-readable reason, e.g. the phase or `InvalidJobNet`.")
    message: str | None = Field(default=None, description="Explanation for people.")
    last_transition_time: str | None = _time("When the status of the condition last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The metadata.generation it describes.")


class DispatchStatus(StatusModel):
    """Delivery of a launch, kill or fence request to the agent (retried with the same key)."""

    op: Literal["launch", "kill", "fence"] = Field(
        description=(
            "The request being delivered; `fence`: an override to Ready waits until the agent confirms "
            "the current attempt never ran."
        )
    )
    attempts: int = Field(ge=1, description="Delivery attempts made so far.")
    last_attempt_at: str = Field(description="When the last attempt was sent (RFC 3339).")
    in_flight: bool = Field(default=False, description="The last attempt has not been answered yet.")
    outcome_unknown: bool = Field(
        default=False, description="Some attempt may have reached the agent (the connection broke after sending)."
    )
    last_error: str | None = Field(default=None, description="Code of the last delivery failure.")
    last_error_message: str | None = Field(default=None, description="The last delivery failure, for people.")
    override_by: str | None = Field(
        default=None, description="For a fence: who asked for the override to Ready that waits for it."
    )
    override_message: str | None = Field(default=None, description="For a fence: the reason given with that override.")


class EarlierAttemptStatus(StatusModel):
    """How an earlier attempt of a job ended (kept when the job was run again)."""

    attempt: int = Field(ge=1, description="The attempt's number (1 = first run).")
    state: JobStateName = Field(description="The state it was in when the job was run again (Stuck or Failed).")
    reason: str | None = Field(default=None, description="The reason of that state, e.g. `HeartbeatLost`.")
    host: str | None = Field(default=None, description="Address of the VM it ran on.")
    pid: int | None = Field(default=None, description="Process id on the VM.")
    exit_code: int | None = Field(default=None, description="Exit code of the script, when known.")
    started_at: str | None = _time("When it started (RFC 3339).")
    finished_at: str | None = _time("When it finished (RFC 3339), when known.")
    rerun_by: str | None = Field(default=None, description="Who ran the job again.")
    rerun_at: str | None = _time("When the job was run again (RFC 3339).")


class JobStatus(StatusModel):
    """The state of one job (or sub-jobnet) of a run, keyed by its path in `JobRun.status.jobs`."""

    state: JobStateName = Field(
        description="Pending, Ready, Starting, Running, Stopping, Succeeded, Failed, Stopped, Stuck or Skipped."
    )
    attempt: int | None = Field(default=None, ge=1, description="Execution attempt on the VM (1 = first run).")
    host: str | None = Field(default=None, description="Address of the VM the job runs on.")
    pid: int | None = Field(default=None, description="Process id of the job on the VM.")
    exit_code: int | None = Field(default=None, description="Exit code of the script, once it exited.")
    started_at: str | None = _time("When the job started (RFC 3339).")
    finished_at: str | None = _time("When the job finished (RFC 3339).")
    reason: str | None = Field(
        default=None, description="Machine-readable reason of the state, e.g. `ScriptNotFound`, `HeartbeatLost`."
    )
    message: str | None = Field(default=None, description="Explanation for people.")
    output_tail: str | None = Field(
        default=None,
        max_length=OUTPUT_TAIL_MAX_CHARS,
        description=f"The last lines of the job's output (at most {OUTPUT_TAIL_MAX_CHARS} characters).",
    )
    since: str | None = Field(
        default=None, description="When the job entered its current state (RFC 3339; kept while it is not finished)."
    )
    deadline: str | None = Field(
        default=None, description="When the running job is stopped for exceeding its timeout (RFC 3339)."
    )
    kill_reason: Literal["stop", "timeout"] | None = Field(
        default=None, description="Why a kill of the job was requested."
    )
    dispatch: DispatchStatus | None = Field(
        default=None, description="The launch or kill request being delivered to the agent, while undecided."
    )
    relaunching_since: str | None = _time(
        "Since when the operator re-launches the job because its attempts provably never ran (the agent's "
        "supervising process died before the script was let go); the launch retry window counts from here "
        "(RFC 3339; kept while the job is not finished)."
    )
    earlier_attempts: list[EarlierAttemptStatus] | None = Field(
        default=None,
        description=f"The attempts before the current one, oldest first (at most {ATTEMPT_HISTORY_MAX}; fewer in "
        f"large runs, which keep {RUN_ATTEMPT_HISTORY_BUDGET} in all).",
    )
    earlier_attempts_dropped: int | None = Field(
        default=None, ge=1, description="How many attempts older than `earlierAttempts` are no longer kept."
    )


class StateOverride(StatusModel):
    """A state change a person requested with an override annotation (audit trail)."""

    path: str = Field(description="Path of the job or sub-jobnet, e.g. `/nightly/load/step1`.")
    from_state: JobStateName = Field(description="State before the override.")
    to_state: JobStateName = Field(description="State after the override.")
    by: str | None = Field(default=None, description="Who requested it, when known.")
    at: str = Field(description="When it was applied (RFC 3339).")
    message: str | None = Field(default=None, description="The reason given by the person.")


class SnapshotJobNet(StatusModel):
    """One JobNet of a run's snapshot, as it was when the run started."""

    name: str = Field(description="Name of the JobNet.")
    resource_version: str | None = Field(default=None, description="Its `metadata.resourceVersion` at the start.")
    generation: int | None = Field(default=None, description="Its `metadata.generation` at the start.")


class JobNetSnapshotStatus(StatusModel):
    """Where the definition a run started with is kept: the run always executes it, whatever
    happens to the JobNets afterwards (edits apply to the next run; see docs/api.md)."""

    config_map: str = Field(description="Name of the ConfigMap (owned by the JobRun) holding the snapshot.")
    key: str = Field(description="Key of the snapshot in the ConfigMap's `binaryData`.")
    format: str = Field(
        description="Encoding of the snapshot: `gzip-json-v1`, a gzipped JSON object JobNet name -> spec."
    )
    sha256: str = Field(
        description="SHA-256 (hex) of the snapshot bytes; a resumed run refuses a snapshot that differs."
    )
    size_bytes: int = Field(ge=0, description="Size of the snapshot (gzipped), in bytes.")
    job_nets: list[SnapshotJobNet] = Field(
        description="The JobNets the run was expanded from (the root and every JobNet it expands, transitively)."
    )


class AppliedSteering(StatusModel):
    """The identity of the last override and stop request applied (see docs/operations.md,
    "Steering identity"): an annotation whose identity is recorded here is only removed."""

    override: str | None = Field(default=None, description="Identity (`jobnet.dev/override-id`) of the last override.")
    stop: str | None = Field(default=None, description="Identity (`jobnet.dev/stop-id`) of the last stop.")


class JobRunStatus(StatusModel):
    """The observed state of a JobRun."""

    phase: RunPhaseName = Field(default="Pending", description="Pending, Running, Succeeded, Failed, Stopped or Stuck.")
    progress: str | None = Field(default=None, description="Finished jobs out of all jobs, e.g. `12/40`.")
    reason: str | None = Field(default=None, description="Machine-readable reason of the phase, e.g. `InvalidJobNet`.")
    message: str | None = Field(default=None, description="Explanation for people.")
    started_at: str | None = _time("When the run started (RFC 3339).")
    finished_at: str | None = _time("When the run finished (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    conditions: list[Condition] | None = Field(
        default=None,
        description="`Succeeded`: Unknown until the run ends, then True (Succeeded) or False (Failed, Stopped).",
    )
    job_net_snapshot: JobNetSnapshotStatus | None = Field(
        default=None,
        description="The JobNet definitions the run started with (written before anything is launched; "
        "runs started by an operator older than snapshots have none).",
    )
    counts: dict[str, int] = Field(default_factory=dict, description="Number of jobs per state.")
    jobs: dict[str, JobStatus] = Field(
        default_factory=dict,
        description="State of each job and sub-jobnet, keyed by path (runs of at most 256 jobs and jobnets; "
        "larger runs keep them in `jobChunks`).",
    )
    job_chunks: dict[str, str] | None = Field(
        default=None,
        description="Large runs only: the `jobs` entries, in chunks of 256 paths, each a base64 gzip of a JSON "
        "object path -> entry (read them with `kubectl jobnet tree`; see docs/scale.md).",
    )
    overrides: list[StateOverride] = Field(
        default_factory=list,
        description="State overrides applied by people, and Stuck jobs resolved automatically, oldest first.",
    )
    stop_scopes: list[str] = Field(
        default_factory=list,
        description=(
            "Paths stopped with the `jobnet.dev/stop` annotation (the root path when the whole run was stopped)."
        ),
    )
    applied_steering: AppliedSteering | None = Field(
        default=None,
        description="The steering requests applied last, recorded in the same write that applied them: "
        "an annotation whose identity is here is removed, never applied again.",
    )


class JobNetStatus(StatusModel):
    """The observed state of a JobNet."""

    job_count: int | None = Field(default=None, ge=0, description="Number of jobs once all expansions are expanded.")
    valid: bool | None = Field(default=None, description="Whether the JobNet expands cleanly.")
    message: str | None = Field(default=None, description="Why it is not valid, when it is not.")
    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    conditions: list[Condition] | None = Field(
        default=None, description="`Valid` (it expands cleanly) and `Ready` (it can be run)."
    )
