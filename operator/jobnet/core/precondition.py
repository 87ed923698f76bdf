"""An override's precondition: the state (and attempt) of the job the person saw.

``jobnet.dev/override: '/nightly/extract=Ready@Stuck#2'`` asks to run ``/nightly/extract`` again
*if it is still Stuck in attempt 2*, the state the person looked at when they decided. Between
that look and the moment the operator applies the override the job may move on by itself (the
agent's journal resolves it Failed, a re-sent attempt starts...); an override written for a state
that is gone is not applied (a Warning Event ``OverrideRejected`` says what the job is now) instead
of re-running a job whose run had moved on. The admission webhook refuses one whose precondition
already does not hold, and the operator checks it again when it applies the override.

The grammar of one item is ``PATH=STATE[@SEEN[#ATTEMPT]]``: ``SEEN`` is any job state,
``ATTEMPT`` the job's attempt (``status.jobs[PATH].attempt``, 1 = the first run). An item without
``@`` applies to whatever the job's state is (as before preconditions existed). A precondition
names one job's state: a sub-jobnet path (or ``/``) takes none. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from jobnet.core.expansion import RunGraph
from jobnet.core.states import JobState
from jobnet.core.status import JobRunStatus, JobStatus

SEEN_MARK = "@"
ATTEMPT_MARK = "#"
_STATE_NAMES = {str(state).lower(): state for state in JobState}


class Precondition(BaseModel):
    """The job's state (and attempt) an override was written for."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    attempt: int | None = Field(default=None, ge=1)

    def text(self) -> str:
        """``@Stuck`` or ``@Stuck#2``: the suffix of an override item."""
        return SEEN_MARK + str(self.state) + (f"{ATTEMPT_MARK}{self.attempt}" if self.attempt is not None else "")

    def problem(self, path: str, state: JobState, attempt: int) -> str | None:
        """Why the precondition does not hold for the job at ``path``, now ``state`` in ``attempt``
        (0 = never launched); None when it holds."""
        if state == self.state and (self.attempt is None or attempt == self.attempt):
            return None
        now = f"{state} (attempt {attempt})" if attempt else f"{state} (never started)"
        return (
            f"{path} is {now} now, not {self.state}{f' in attempt {self.attempt}' if self.attempt else ''} "
            f"as the override expects ({self.text()}): it changed after the override was written; "
            "look at it again and annotate anew"
        )


def seen(state: str | JobState, attempt: int | None) -> Precondition:
    """The precondition for a job shown as ``state`` in ``attempt`` (None or 0: never started)."""
    return Precondition(state=JobState(state), attempt=attempt or None)


def parse_precondition(raw: str) -> tuple[Precondition | None, str | None]:
    """``Stuck`` or ``Stuck#2`` (the text after ``@``) as ``(precondition, None)``, else ``(None, error)``."""
    raw_state, mark, raw_attempt = raw.strip().partition(ATTEMPT_MARK)
    state = _STATE_NAMES.get(raw_state.strip().lower())
    if state is None:
        return None, (
            f"unknown state {raw_state.strip()!r} after {SEEN_MARK!r}; "
            f"use one of {', '.join(str(s) for s in JobState)} (optionally {ATTEMPT_MARK}ATTEMPT)"
        )
    if not mark:
        return Precondition(state=state), None
    text = raw_attempt.strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        return None, f"attempt {text!r} after {ATTEMPT_MARK!r} is not a number of 1 or more"
    return Precondition(state=state, attempt=int(text)), None


def shown(entry: JobStatus | None) -> tuple[JobState, int]:
    """A job's state and attempt as its status entry shows them (no entry: Pending, attempt 0 =
    never started)."""
    if entry is None:
        return JobState.PENDING, 0
    return JobState(entry.state), entry.attempt or 0


def jobs_shown(graph: RunGraph, status: JobRunStatus) -> tuple[dict[str, JobState], dict[str, int]]:
    """Each job's state and attempt as ``status`` shows them (:func:`shown`), for checking
    overrides against what a person sees."""
    states: dict[str, JobState] = {}
    attempts: dict[str, int] = {}
    for node in graph.jobs():
        states[node.path], attempts[node.path] = shown(status.jobs.get(node.path))
    return states, attempts


def precondition_problem(
    states: Mapping[str, JobState], attempts: Mapping[str, int] | None, path: str, precondition: Precondition | None
) -> str | None:
    """Why ``precondition`` does not hold for the job at ``path`` (None when it holds or there is none)."""
    if precondition is None:
        return None
    return precondition.problem(path, states.get(path, JobState.PENDING), (attempts or {}).get(path, 0))
