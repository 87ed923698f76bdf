"""The job state machine as data: states, transition tables, derived jobnet state, run phase."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from jobnet.core import status
from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.outcome import record_outcome, recorded_outcome
from jobnet.core.states import (
    ACTIVE_STATES,
    AUTOMATIC_TRANSITIONS,
    OVERRIDE_TARGETS,
    OVERRIDE_TRANSITIONS,
    STUCK_MESSAGES,
    TERMINAL_STATES,
    JobState,
    Reason,
    RunPhase,
    StuckReason,
    automatic_transition_allowed,
    derive_jobnet_state,
    is_active,
    is_terminal,
    override_allowed,
    run_phase,
    stuck_message,
)

S = JobState


def test_state_names_match_the_status_api_literals() -> None:
    assert [str(state) for state in JobState] == list(status.JOB_STATES)
    assert sorted(str(phase) for phase in RunPhase) == sorted(status.RUN_PHASES)


def test_predicates() -> None:
    assert [state for state in JobState if is_terminal(state)] == [S.SUCCEEDED, S.FAILED, S.STOPPED, S.SKIPPED]
    assert [state for state in JobState if is_active(state)] == [S.READY, S.STARTING, S.RUNNING, S.STOPPING]


def test_every_state_has_a_row_in_the_automatic_table() -> None:
    assert set(AUTOMATIC_TRANSITIONS) == set(JobState)


def test_terminal_and_active_states_are_disjoint_and_terminal_states_only_change_by_override() -> None:
    assert not TERMINAL_STATES & ACTIVE_STATES
    assert S.STUCK not in TERMINAL_STATES | ACTIVE_STATES
    for state in (S.SUCCEEDED, S.FAILED, S.STOPPED):
        assert AUTOMATIC_TRANSITIONS[state] == frozenset()


def test_override_rules_are_exactly_the_documented_ones() -> None:
    assert OVERRIDE_TRANSITIONS == {
        S.STUCK: {S.READY, S.SUCCEEDED, S.FAILED, S.STOPPED},
        S.FAILED: {S.READY, S.SUCCEEDED},
    }
    assert OVERRIDE_TARGETS == {S.READY, S.SUCCEEDED, S.FAILED, S.STOPPED}


@pytest.mark.parametrize("state", [S.RUNNING, S.STARTING, S.SUCCEEDED, S.STOPPED, S.SKIPPED, S.PENDING])
def test_no_override_of_a_state_that_is_active_or_already_settled(state: JobState) -> None:
    assert not any(override_allowed(state, target) for target in JobState)


def test_automatic_transitions_never_reach_ready_from_a_launched_job() -> None:
    # Only a person re-runs a job: a new attempt is never the scheduler's own idea.
    for state in (S.STARTING, S.RUNNING, S.STOPPING, S.STUCK, S.FAILED, S.SUCCEEDED, S.STOPPED):
        assert not automatic_transition_allowed(state, S.READY)
        assert S.STARTING not in AUTOMATIC_TRANSITIONS[state]


@pytest.mark.parametrize("reason", list(StuckReason))
def test_every_stuck_reason_has_a_message_that_names_the_host(reason: StuckReason) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(STUCK_MESSAGES[reason]) if name}
    assert fields <= {"host", "attempts", "detail"}
    message = stuck_message(reason, host="batch@vm1:22", attempts=3, detail="connection reset")
    assert "batch@vm1:22" in message


@pytest.mark.parametrize(
    ("children", "expected"),
    [
        ([S.SUCCEEDED, S.SUCCEEDED], S.SUCCEEDED),
        ([S.SUCCEEDED, S.RUNNING, S.FAILED], S.RUNNING),  # still something runs under it
        ([S.SUCCEEDED, S.FAILED, S.SKIPPED], S.FAILED),
        ([S.FAILED, S.STOPPED], S.FAILED),
        ([S.SUCCEEDED, S.STOPPED], S.STOPPED),
        ([S.STUCK, S.FAILED, S.PENDING], S.STUCK),
        ([S.STUCK, S.STARTING], S.RUNNING),
        ([S.STOPPING, S.SUCCEEDED], S.STOPPING),
        ([S.PENDING, S.PENDING], S.PENDING),
        ([S.STOPPED, S.PENDING], S.PENDING),  # stopped inside before the jobnet could start
        ([S.SKIPPED, S.SKIPPED], S.SKIPPED),
    ],
)
def test_jobnet_state_is_derived_from_its_children(children: list[JobState], expected: JobState) -> None:
    assert derive_jobnet_state(children) == expected


@pytest.mark.parametrize(
    ("root", "phase"),
    [
        (S.PENDING, RunPhase.PENDING),
        (S.RUNNING, RunPhase.RUNNING),
        (S.STOPPING, RunPhase.RUNNING),
        (S.STUCK, RunPhase.STUCK),
        (S.SUCCEEDED, RunPhase.SUCCEEDED),
        (S.FAILED, RunPhase.FAILED),
        (S.STOPPED, RunPhase.STOPPED),
    ],
)
def test_run_phase_follows_the_root_jobnet(root: JobState, phase: RunPhase) -> None:
    assert run_phase(root) == phase


KEY = JobKey(run="u", path="/n/a", attempt=1)


def _record(state: str, **fields: object) -> JobRecord:
    return JobRecord.model_validate({"key": KEY, "seq": 1, "state": state, **fields})


@pytest.mark.parametrize(
    ("record", "kill_reason", "state", "reason"),
    [
        (_record("exited", exitCode=0), None, S.SUCCEEDED, None),
        (_record("exited", exitCode=3), None, S.FAILED, "NonZeroExit"),
        (_record("exited", exitCode=0), "stop", S.SUCCEEDED, None),  # F06/F07: the real exit decides
        (_record("exited", exitCode=2), "stop", S.FAILED, "NonZeroExit"),  # F08/F09
        (_record("killed", signal=15, reason="StopRequested"), "stop", S.STOPPED, "StopRequested"),
        (_record("killed", signal=15), "timeout", S.FAILED, "TimedOut"),
        (_record("killed", signal=9, killRequested={"reason": "timeout"}), None, S.FAILED, "TimedOut"),
        (_record("timedOut", signal=15, reason="TimedOut"), None, S.FAILED, "TimedOut"),
        (_record("failedToStart", reason="ScriptNotFound"), None, S.FAILED, "ScriptNotFound"),
        (_record("failedToStart", reason="PermissionDenied"), None, S.FAILED, "PermissionDenied"),
        (_record("failedToStart", reason="Fenced"), None, S.FAILED, "Fenced"),  # a re-run's fence
        (_record("failedToStart", reason="Fenced"), "stop", S.STOPPED, "StopRequested"),  # issue 10
        (_record("interrupted", reason="HostRebooted"), None, S.FAILED, "HostRebooted"),
        (_record("lost"), None, S.STUCK, "SupervisorLost"),  # E02: result unknown, a person settles it
    ],
)
def test_terminal_record_outcomes(
    record: JobRecord, kill_reason: str | None, state: JobState, reason: str | None
) -> None:
    outcome = record_outcome(record, kill_reason=kill_reason)  # type: ignore[arg-type]
    assert outcome is not None
    assert (outcome.state, outcome.reason) == (state, reason)


def test_a_lost_record_is_never_a_success_even_with_an_exit_code_field() -> None:
    outcome = record_outcome(_record("lost", exitCode=0))
    assert outcome is not None and outcome.state == S.STUCK


@pytest.mark.parametrize(("code", "state"), [(0, S.SUCCEEDED), (3, S.FAILED)])
def test_a_lost_record_with_the_wrappers_exit_code_proves_what_that_code_says(code: int, state: JobState) -> None:
    """What stuckResolution Auto resolves a SupervisorLost job to (E02)."""
    outcome = recorded_outcome(_record("lost", exitCode=code))
    assert outcome is not None and (outcome.state, outcome.exit_code) == (state, code)
    assert recorded_outcome(_record("lost")) is None and recorded_outcome(_record("exited", exitCode=0)) is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("exited with code 3", "exited with code 3"),
        ("exited with code 3 (recorded by the job's wrapper)", "exited with code 3 (recorded by the job's wrapper)"),
        ("disk full", "exited with code 3: disk full"),
        (None, "exited with code 3"),
    ],
)
def test_a_non_zero_exit_says_its_code_once(message: str | None, expected: str) -> None:
    outcome = record_outcome(_record("exited", exitCode=3, message=message))
    assert outcome is not None and outcome.message == expected


@pytest.mark.parametrize("state", ["accepted", "running"])
def test_live_records_prove_no_outcome(state: str) -> None:
    assert record_outcome(_record(state, pid=7)) is None


DOC = Path(__file__).resolve().parents[2] / "docs" / "job-states.md"


def test_the_runbook_has_a_section_for_every_stuck_reason_with_the_annotate_command() -> None:
    text = DOC.read_text()
    for reason in StuckReason:
        assert f"### {reason}\n" in text, f"docs/job-states.md has no runbook section for {reason}"
        section = text.split(f"### {reason}\n", 1)[1].split("\n### ", 1)[0]
        assert "kubectl annotate jobrun R jobnet.dev/" in section, f"runbook for {reason} gives no command"


def test_every_state_and_reason_code_is_documented() -> None:
    text = DOC.read_text()
    for state in JobState:
        assert f"| `{state}` |" in text, f"state {state} is not in the states table"
    for reason in Reason:
        assert f"`{reason}`" in text, f"reason {reason} is not documented"
