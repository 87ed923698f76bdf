"""Status model of JobSchedule (the operator writes it; the CRD status schema is generated from
it by ``jobnet crds``). A JobCalendar has no status: it is read where a schedule uses it.
Timestamps are RFC 3339 strings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jobnet.core.status import RunPhaseName, StatusModel


class ScheduleCondition(StatusModel):
    """A condition of a JobSchedule, as Kubernetes conventions have them."""

    type: Literal["Ready"] = Field(description="`Ready`: the schedule is valid and its calendar usable.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable reason, e.g. `Scheduled`, `Suspended`, `InvalidSchedule`.")
    message: str = Field(default="", description="Explanation for people.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")


class JobScheduleStatus(StatusModel):
    """The observed state of a JobSchedule."""

    last_schedule_time: str | None = Field(
        default=None,
        description="Run time of the last slot handled (started, skipped or missed); later slots are due after it.",
    )
    next_schedule_time: str | None = Field(default=None, description="When the next run is due (calendar applied).")
    active: list[str] = Field(default_factory=list, description="Names of this schedule's runs not finished yet.")
    last_run: str | None = Field(default=None, description="Name of the last run this schedule started.")
    last_run_phase: RunPhaseName | None = Field(default=None, description="Phase of that run.")
    missed_slots: int = Field(
        default=0, ge=0, description="Slots never run because they were past `startingDeadlineSeconds` (total)."
    )
    last_missed_time: str | None = Field(default=None, description="The most recent missed slot.")
    conditions: list[ScheduleCondition] = Field(default_factory=list, description="`Ready`.")
