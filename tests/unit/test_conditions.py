"""status.conditions of JobRuns and JobNets (jobnet.core.conditions), table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from jobnet.core.conditions import jobnet_conditions, jobrun_conditions, with_jobrun_conditions
from jobnet.core.status import JobNetStatus, JobRunStatus

CREATED = "2026-11-22T03:00:00Z"
ENDED = "2026-11-22T03:10:00.250Z"
NOW = "2026-11-22T04:00:00Z"
META = {"creationTimestamp": CREATED, "generation": 1}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # phase, what the run says          -> status, reason, message, lastTransitionTime
        ({"phase": "Pending", "progress": "0/3"}, ("Unknown", "Pending", "0/3 jobs finished", CREATED)),
        (
            {
                "phase": "Running",
                "progress": "1/3",
                "counts": {"Succeeded": 1, "Running": 1, "Pending": 1, "Failed": None},
            },
            ("Unknown", "Running", "1/3 jobs finished (1 Pending, 1 Running, 1 Succeeded)", CREATED),
        ),
        ({"phase": "Stuck", "progress": "2/3"}, ("Unknown", "Stuck", "2/3 jobs finished", CREATED)),
        (
            {"phase": "Succeeded", "progress": "3/3", "finishedAt": ENDED, "counts": {"Succeeded": 3}},
            ("True", "Succeeded", "3/3 jobs finished (3 Succeeded)", ENDED),
        ),
        ({"phase": "Failed", "progress": "3/3", "finishedAt": ENDED}, ("False", "Failed", "3/3 jobs finished", ENDED)),
        (
            {"phase": "Stopped", "progress": "1/3", "finishedAt": ENDED},
            ("False", "Stopped", "1/3 jobs finished", ENDED),
        ),
        (
            {"phase": "Failed", "reason": "InvalidJobNet", "message": "JobNet 'x' not found", "finishedAt": ENDED},
            ("False", "InvalidJobNet", "JobNet 'x' not found", ENDED),
        ),
        ({"phase": "Failed"}, ("False", "Failed", "the run is Failed", NOW)),  # no finishedAt: the time of the write
    ],
)
def test_jobrun_succeeded_condition(status: dict[str, Any], expected: tuple[str, str, str, str]) -> None:
    (succeeded,) = jobrun_conditions(status, META, NOW)
    assert (succeeded["type"], succeeded["observedGeneration"]) == ("Succeeded", 1)
    assert (succeeded["status"], succeeded["reason"], succeeded["message"], succeeded["lastTransitionTime"]) == expected


def test_every_jobrun_status_write_carries_conditions_and_generation_and_fits_the_schema() -> None:
    written = with_jobrun_conditions({"phase": "Succeeded", "progress": "2/2", "finishedAt": ENDED}, META, NOW)
    assert written["observedGeneration"] == 1
    assert [c["status"] for c in written["conditions"]] == ["True"]
    parsed = JobRunStatus.model_validate(written)
    assert parsed.conditions is not None
    assert parsed.conditions[0].last_transition_time == ENDED


def test_a_run_without_a_generation_has_no_observed_generation_in_its_condition() -> None:
    (succeeded,) = jobrun_conditions({"phase": "Running"}, {}, NOW)
    assert "observedGeneration" not in succeeded
    assert succeeded["lastTransitionTime"] == NOW


@pytest.mark.parametrize(
    ("valid", "message", "expected"),
    [
        (True, None, ("True", "Valid", "the JobNet expands cleanly")),
        (
            False,
            "JobNet 'a': job 'x' depends on unknown job 'y'",
            ("False", "InvalidJobNet", "JobNet 'a': job 'x' depends on unknown job 'y'"),
        ),
    ],
)
def test_jobnet_valid_and_ready_conditions(valid: bool, message: str | None, expected: tuple[str, str, str]) -> None:
    conditions = jobnet_conditions(valid, message, 4, NOW, None)
    assert [c["type"] for c in conditions] == ["Valid", "Ready"]
    for c in conditions:
        assert (c["status"], c["reason"], c["message"]) == expected
        assert (c["observedGeneration"], c["lastTransitionTime"]) == (4, NOW)
    JobNetStatus.model_validate({"valid": valid, "conditions": conditions})


def test_jobnet_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    before = jobnet_conditions(True, None, 1, CREATED, None)
    same = jobnet_conditions(True, None, 2, NOW, before)
    assert [c["lastTransitionTime"] for c in same] == [CREATED, CREATED]
    assert [c["observedGeneration"] for c in same] == [2, 2]
    changed = jobnet_conditions(False, "broken", 3, NOW, same)
    assert [c["lastTransitionTime"] for c in changed] == [NOW, NOW]


def test_jobnet_conditions_ignore_malformed_previous_conditions() -> None:
    conditions = jobnet_conditions(True, None, 1, NOW, [{"type": "Valid", "status": "True"}, "junk"])  # type: ignore[list-item]
    assert [c["lastTransitionTime"] for c in conditions] == [NOW, NOW]
