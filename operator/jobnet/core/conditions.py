"""``status.conditions`` of JobRuns and JobNets, as the Kubernetes API conventions (and Tekton,
Knative) define them, so that ``kubectl wait --for=condition=Succeeded jobrun/X`` works.

* A JobRun has one condition, ``Succeeded``: ``Unknown`` while it has not ended (Pending,
  Running, and Stuck, which waits for a person or the agent's journal), ``True`` when it
  succeeded, ``False`` when it failed or was stopped. Its reason is the run's reason, or the
  phase when the run has none; its message the run's message, or its progress.
* A JobNet has ``Valid`` (it expands cleanly) and ``Ready`` (everything it needs holds: today
  exactly ``Valid``; ``Ready`` is the summary condition tools wait for, as in Knative).

``lastTransitionTime`` changes only when a condition's status changes. Pure: the caller passes
the time and what the status was before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from jobnet.core.states import RunPhase

ConditionStatus = Literal["True", "False", "Unknown"]
Condition = dict[str, Any]

SUCCEEDED = "Succeeded"
VALID = "Valid"
READY = "Ready"
INVALID_JOBNET = "InvalidJobNet"

#: Phase -> the status of ``Succeeded`` (phases not named here have not ended: Unknown).
_SUCCEEDED_STATUS: Mapping[str, ConditionStatus] = {
    str(RunPhase.SUCCEEDED): "True",
    str(RunPhase.FAILED): "False",
    str(RunPhase.STOPPED): "False",
}


def condition(
    kind: str, status: ConditionStatus, reason: str, message: str, generation: int | None, now: str
) -> Condition:
    """One condition; ``now`` is its ``lastTransitionTime`` unless :func:`keep_transition_times`
    finds the same status in the previous conditions."""
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        **({"observedGeneration": generation} if generation is not None else {}),
    }


def keep_transition_times(
    conditions: Iterable[Condition], previous: Iterable[Mapping[str, Any]] | None
) -> list[Condition]:
    """``conditions`` with the ``lastTransitionTime`` of a previous condition of the same type
    and status (the time it *became* that status, not the time of this write)."""
    before = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    kept = []
    for current in conditions:
        old = before.get(current["type"])
        if old is not None and old.get("status") == current["status"] and old.get("lastTransitionTime"):
            current = {**current, "lastTransitionTime": old["lastTransitionTime"]}
        kept.append(current)
    return kept


def jobrun_conditions(status: Mapping[str, Any], metadata: Mapping[str, Any], now: str) -> list[Condition]:
    """The conditions of a JobRun whose status (summary) is ``status``.

    A run's ``Succeeded`` changes status once at most (Unknown from its creation until it ends),
    so its ``lastTransitionTime`` follows from the status itself: the end of the run, or its
    creation while it has not ended (``now`` only if those are missing)."""
    phase = str(status.get("phase") or RunPhase.PENDING)
    verdict = _SUCCEEDED_STATUS.get(phase, "Unknown")
    since = status.get("finishedAt") if verdict != "Unknown" else metadata.get("creationTimestamp")
    succeeded = condition(
        SUCCEEDED,
        verdict,
        str(status.get("reason") or phase),
        str(status.get("message") or _progress_message(status, phase)),
        metadata.get("generation"),
        str(since or now),
    )
    return [succeeded]


def _progress_message(status: Mapping[str, Any], phase: str) -> str:
    progress = status.get("progress")
    if not progress:
        return f"the run is {phase}"
    counts = status.get("counts") or {}
    states = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()) if count)
    return f"{progress} jobs finished" + (f" ({states})" if states else "")


def with_jobrun_conditions(status: Mapping[str, Any], metadata: Mapping[str, Any], now: str) -> dict[str, Any]:
    """A JobRun status (or status merge patch carrying the run's summary) with its conditions and
    ``observedGeneration``: every status write of a run goes through here."""
    return {
        **status,
        "observedGeneration": metadata.get("generation"),
        "conditions": jobrun_conditions(status, metadata, now),
    }


def jobnet_conditions(
    valid: bool, message: str | None, generation: int | None, now: str, previous: Iterable[Mapping[str, Any]] | None
) -> list[Condition]:
    """The conditions of a JobNet: ``Valid`` and the summary ``Ready``."""
    status: ConditionStatus = "True" if valid else "False"
    reason = VALID if valid else INVALID_JOBNET
    text = message or ("the JobNet expands cleanly" if valid else "the JobNet is not valid")
    return keep_transition_times(
        [
            condition(VALID, status, reason, text, generation, now),
            condition(READY, status, reason, text, generation, now),
        ],
        previous,
    )
