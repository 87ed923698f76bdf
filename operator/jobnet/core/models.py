"""The user-facing API of jobnet-operator: group ``jobnet.dev``, version ``v1alpha1``.

These pydantic models are the single source of truth: the CRDs in ``crds/`` are generated
from them (``jobnet crds``), the admission webhook, ``jobnet lint`` and the operator parse
manifests with them, and ``kubectl explain`` shows their docstrings and field descriptions.

Field names are the camelCase names users write in YAML; Python code uses snake_case.
Unknown fields are rejected (a typo such as ``aftr:`` must not silently drop a dependency).
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "jobnet.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

#: A job or JobNet name: a lowercase RFC 1123 label (it becomes a segment of a job path).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 63

#: Environment variable names a job may be given.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

JobName = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH)]
EnvMap = dict[str, str]


class ApiModel(BaseModel):
    """Base for every API model: camelCase in YAML, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class HostSpec(ApiModel):
    """Where a job runs: an external VM reached over SSH, with the watchdog agent on it."""

    address: str = Field(
        min_length=1,
        description="Host name or IP address of the VM's sshd.",
    )
    port: int = Field(default=22, ge=1, le=65535, description="sshd port.")
    user: str = Field(min_length=1, description="Unix user the job runs as (SSH login user).")
    credentials_secret: str = Field(
        min_length=1,
        description=(
            "Name of a Secret in the same namespace holding the SSH credentials: "
            "`privateKey` or `ssh-privatekey` (PEM/OpenSSH private key) or `password`, and `knownHosts` "
            "(known_hosts lines; host keys are always verified, never trusted on first use)."
        ),
    )


class RetrySpec(ApiModel):
    """How often the operator tries to deliver a launch or kill request to the agent.

    A retried delivery is deduplicated by the agent (same run, job path and attempt),
    so retrying never runs a job twice."""

    dispatch_attempts: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Total delivery attempts (1 = no retry). When all fail with an unknown outcome the job goes Stuck.",
    )
    interval_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds between delivery attempts.",
    )


class JobSpec(ApiModel):
    """One node of a JobNet: either a script run on a VM, or the expansion of another root JobNet."""

    name: JobName = Field(description="Job name, unique within its JobNet (lowercase RFC 1123 label).")
    script: str | None = Field(
        default=None,
        min_length=1,
        description="Absolute path of the executable on the VM. Exactly one of `script` or `expand`.",
    )
    expand: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Name of a root JobNet in the same namespace, embedded here as a sub-jobnet. "
            "Exactly one of `script` or `expand`."
        ),
    )
    args: list[str] = Field(default_factory=list, description="Arguments passed to the script (script jobs only).")
    env: EnvMap = Field(
        default_factory=dict,
        description=(
            "Environment variables for the script. They override the env of the JobNets around the job; "
            "the JobRun's env overrides them. On an `expand` job: env for every job of the embedded JobNet."
        ),
    )
    after: list[str] = Field(
        default_factory=list,
        description="Names of jobs in the same JobNet that must succeed before this one starts.",
    )
    host: HostSpec | None = Field(
        default=None,
        description=(
            "Overrides the JobNet's default host. On an `expand` job: the default host of the embedded "
            "JobNet's jobs when that JobNet sets none."
        ),
    )
    working_dir: str | None = Field(
        default=None,
        description="Working directory on the VM (default: the login user's home directory; script jobs only).",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Force-stop the job after this many seconds (overrides the JobNet default).",
    )
    retry: RetrySpec | None = Field(default=None, description="Overrides the JobNet's delivery retry policy.")


StuckResolution = Literal["Auto", "Manual"]


class JobNetSpec(ApiModel):
    """A job network: a DAG of jobs, plus `finally` jobs that run at the end whatever the outcome."""

    description: str | None = Field(default=None, description="Free text shown to people.")
    host: HostSpec | None = Field(default=None, description="Default host for this JobNet's jobs.")
    timeout_seconds: int | None = Field(default=None, ge=1, description="Default timeout per job, in seconds.")
    retry: RetrySpec | None = Field(default=None, description="Default delivery retry policy for this JobNet's jobs.")
    env: EnvMap = Field(default_factory=dict, description="Environment variables for every job of this JobNet.")
    stuck_resolution: StuckResolution = Field(
        default="Auto",
        description=(
            "`Auto`: a Stuck job is resolved automatically once the agent's journal knows its outcome. "
            "`Manual`: a Stuck job always waits for a person's override annotation."
        ),
    )
    jobs: list[JobSpec] = Field(min_length=1, description="The jobs of the DAG.")
    finally_: list[JobSpec] = Field(
        default_factory=list,
        alias="finally",
        description=(
            "Jobs that run after all `jobs` have finished, whatever their outcome. "
            "They may depend on each other with `after`, not on `jobs`."
        ),
    )


class ScheduleSlotSpec(ApiModel):
    """The schedule slot a run was started for (set by the operator for scheduled runs and by
    `kubectl jobnet run SCHEDULE`); its jobs see it as `JOBNET_SCHEDULE`, `JOBNET_SCHEDULED_TIME`
    and `JOBNET_BUSINESS_DATE`."""

    schedule: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, description="Name of the JobSchedule.")
    scheduled_time: str = Field(
        min_length=1, description="When the slot was due (RFC 3339 with the schedule's UTC offset)."
    )
    business_date: datetime.date = Field(
        description="The business day the slot is for (its calendar's base time and shift rule applied)."
    )


class JobRunSpec(ApiModel):
    """One execution of a JobNet."""

    job_net_ref: str = Field(min_length=1, description="Name of the root JobNet to run (same namespace).")
    env: EnvMap = Field(
        default_factory=dict,
        description="Environment variables for every job of this run; they override JobNet and job env.",
    )
    slot: ScheduleSlotSpec | None = Field(
        default=None, description="The schedule slot this run is for; absent for runs started by hand from a JobNet."
    )


Weekday = Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS: tuple[Weekday, ...] = Weekday.__args__  # type: ignore[attr-defined]
ShiftRule = Literal["Skip", "Previous", "Next"]
ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]

#: ``HH:MM``, 00:00 to 23:59.
BASE_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class PublicHolidaysSpec(ApiModel):
    """A country's public holidays (from the `holidays` package) as closed days."""

    country: str = Field(min_length=2, max_length=3, description="ISO 3166-1 country code, e.g. `JP`, `US`, `DE`.")
    subdivision: str | None = Field(
        default=None, min_length=1, description="ISO 3166-2 subdivision (state, prefecture) whose holidays apply too."
    )


class JobCalendarSpec(ApiModel):
    """Business days: which days are closed, when a business day begins, and what becomes of a
    schedule slot on a closed day. Reusable by many JobSchedules of the namespace."""

    closed_weekdays: list[Weekday] = Field(
        default_factory=list, description="Weekdays that are always closed, e.g. `[Saturday, Sunday]`."
    )
    closed_dates: list[datetime.date] = Field(
        default_factory=list, description="Extra closed days (`YYYY-MM-DD`), e.g. a company holiday."
    )
    open_dates: list[datetime.date] = Field(
        default_factory=list,
        description="Days that are operating days whatever the other rules say (they win over every closure).",
    )
    public_holidays: PublicHolidaysSpec | None = Field(
        default=None, description="Close the public holidays of this country (and subdivision)."
    )
    base_time: str = Field(
        default="00:00",
        pattern=BASE_TIME_PATTERN,
        description=(
            "Local time (`HH:MM`, in the schedule's time zone) at which the business day changes: with `05:00`, "
            "a slot at 02:00 belongs to the previous day's business date."
        ),
    )
    shift: ShiftRule = Field(
        default="Skip",
        description=(
            "A slot whose business date is closed: `Skip` (no run), `Previous` or `Next` (runs at the same time of "
            "day on the nearest operating day before or after; its business date stays the closed day it is for)."
        ),
    )


class JobScheduleSpec(ApiModel):
    """Runs a JobNet on a schedule: cron expressions in a time zone, optionally on a calendar's
    business days. Each due slot creates exactly one JobRun."""

    job_net_ref: str = Field(min_length=1, description="Name of the root JobNet to run (same namespace).")
    schedules: list[str] = Field(
        min_length=1,
        description=(
            "Cron expressions (5 fields: minute hour day-of-month month day-of-week, or `@hourly`, `@daily`, "
            "`@weekly`, `@monthly`, `@yearly`); a time matched by several runs once."
        ),
    )
    time_zone: str = Field(default="UTC", min_length=1, description="IANA time zone of the cron expressions.")
    calendar_ref: str | None = Field(
        default=None, min_length=1, description="Name of a JobCalendar in the same namespace (business days)."
    )
    env: EnvMap = Field(default_factory=dict, description="Environment variables for every job of the runs.")
    concurrency_policy: ConcurrencyPolicy = Field(
        default="Allow",
        description=(
            "A slot due while an earlier run of this schedule is still active: `Allow` (both run), `Forbid` "
            "(the slot is skipped, with an Event), `Replace` (the active runs are stopped, as by a stop of `/`)."
        ),
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=0,
        description=(
            "A slot not started within this many seconds of its time (the operator was down, or the schedule "
            "suspended) is missed: reported in status and an Event, never run. Default: no deadline."
        ),
    )
    successful_runs_history_limit: int = Field(
        default=3, ge=0, description="Succeeded runs of this schedule kept; older ones are deleted."
    )
    failed_runs_history_limit: int = Field(
        default=1,
        ge=0,
        description="Finished runs that did not succeed (Failed, Stopped) kept; older ones are deleted.",
    )
    suspend: bool = Field(default=False, description="Create no runs while true (slots passing meanwhile are missed).")


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata that validation needs."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    generate_name: str | None = Field(default=None, alias="generateName")
    namespace: str | None = None
    uid: str | None = None


class JobNetManifest(BaseModel):
    """A whole JobNet object as written in YAML."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["jobnet.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["JobNet"]
    metadata: ObjectMeta
    spec: JobNetSpec


class JobRunManifest(BaseModel):
    """A whole JobRun object as written in YAML (status is the operator's)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["jobnet.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["JobRun"]
    metadata: ObjectMeta
    spec: JobRunSpec
    status: dict[str, object] | None = None
