"""An override's precondition (``PATH=STATE@SEEN[#ATTEMPT]``): parsed, checked at admission and
when the scheduler applies it; an override written for a state that is gone is not applied."""

from __future__ import annotations

import pytest

from jobnet.core.annotations import (
    OverrideRequest,
    parse_override_annotation,
    stale_override_problems,
    static_steering_problems,
)
from jobnet.core.expansion import RunGraph
from jobnet.core.precondition import Precondition, jobs_shown, parse_precondition, seen
from jobnet.core.scheduler import Event
from jobnet.core.states import JobState
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import Run, failed_chain, graph, job, sub

S = JobState
OVERRIDE = "jobnet.dev/override"


@pytest.fixture(scope="module")
def nightly() -> RunGraph:
    return graph(
        "nightly",
        nightly={"jobs": [job("extract"), sub("load", "load-net", "extract")]},
        **{"load-net": {"jobs": [job("step1")]}},
    )


# ---------------------------------------------------------------- the text after '@'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Stuck", Precondition(state=S.STUCK)),
        (" stuck ", Precondition(state=S.STUCK)),
        ("FAILED#2", Precondition(state=S.FAILED, attempt=2)),
        ("Stuck # 12", Precondition(state=S.STUCK, attempt=12)),
        ("Pending", Precondition(state=S.PENDING)),
    ],
)
def test_parse_precondition(raw: str, expected: Precondition) -> None:
    assert parse_precondition(raw) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("Stuk", "unknown state 'Stuk' after '@'; use one of Pending, Ready,"),
        ("", "unknown state '' after '@'"),
        ("Stuck#", "attempt '' after '#' is not a number of 1 or more"),
        ("Stuck#0", "attempt '0' after '#' is not a number of 1 or more"),
        ("Stuck#two", "attempt 'two' after '#' is not a number of 1 or more"),
        ("Stuck#-1", "attempt '-1' after '#'"),
        ("Stuck#²", "attempt '²' after '#'"),
    ],
)
def test_parse_precondition_errors(raw: str, error: str) -> None:
    precondition, problem = parse_precondition(raw)
    assert precondition is None and problem is not None and problem.startswith(error), problem


@pytest.mark.parametrize(
    ("precondition", "state", "attempt", "holds"),
    [
        (Precondition(state=S.STUCK), S.STUCK, 1, True),
        (Precondition(state=S.STUCK), S.STUCK, 3, True),
        (Precondition(state=S.STUCK, attempt=2), S.STUCK, 2, True),
        (Precondition(state=S.STUCK, attempt=2), S.STUCK, 3, False),
        (Precondition(state=S.STUCK), S.FAILED, 1, False),
        (Precondition(state=S.STUCK, attempt=1), S.FAILED, 1, False),
        (Precondition(state=S.FAILED, attempt=1), S.RUNNING, 2, False),
        (Precondition(state=S.PENDING), S.PENDING, 0, True),
    ],
)
def test_precondition_holds(precondition: Precondition, state: JobState, attempt: int, holds: bool) -> None:
    assert (precondition.problem("/n/a", state, attempt) is None) is holds


def test_the_problem_names_the_current_state_and_attempt() -> None:
    assert Precondition(state=S.STUCK, attempt=2).problem("/n/a", S.FAILED, 2) == (
        "/n/a is Failed (attempt 2) now, not Stuck in attempt 2 as the override expects (@Stuck#2): "
        "it changed after the override was written; look at it again and annotate anew"
    )
    assert "/n/a is Pending (never started) now, not Stuck as the override expects (@Stuck)" in str(
        Precondition(state=S.STUCK).problem("/n/a", S.PENDING, 0)
    )


@pytest.mark.parametrize(
    ("state", "attempt", "text"),
    [(S.STUCK, 2, "@Stuck#2"), ("Failed", 1, "@Failed#1"), (S.PENDING, 0, "@Pending"), (S.STUCK, None, "@Stuck")],
)
def test_seen_writes_what_a_screen_shows(state: JobState | str, attempt: int | None, text: str) -> None:
    assert seen(state, attempt).text() == text


# ---------------------------------------------------------------- in the override annotation


@pytest.mark.parametrize(
    ("text", "state", "attempt", "requests", "error"),
    [
        # no precondition: whatever the state is (as before)
        ("/nightly/extract=Ready", S.FAILED, 1, ["/nightly/extract=Ready"], None),
        ("/nightly/extract=Ready@Stuck", S.STUCK, 1, ["/nightly/extract=Ready@Stuck"], None),
        ("/nightly/extract=ready@stuck#1", S.STUCK, 1, ["/nightly/extract=Ready@Stuck#1"], None),
        ("/nightly/extract=Ready@Stuck", S.FAILED, 1, [], "/nightly/extract is Failed (attempt 1) now, not Stuck"),
        ("/nightly/extract=Ready@Stuck#1", S.STUCK, 2, [], "/nightly/extract is Stuck (attempt 2) now, not Stuck in"),
        # the precondition holds but the transition is not allowed: the usual refusal
        ("/nightly/extract=Ready@Running", S.RUNNING, 1, [], "/nightly/extract is Running; cannot override it"),
        ("/nightly/extract=Ready@Stuk", S.STUCK, 1, [], "'/nightly/extract=Ready@Stuk': unknown state 'Stuk'"),
        ("/nightly/extract=Ready#2", S.STUCK, 1, [], "unknown override state 'Ready#2'"),
        ("/nightly/load=Failed@Stuck", S.STUCK, 1, [], "'/nightly/load=Failed@Stuck': /nightly/load is a jobnet"),
        ("/=Failed@Stuck", S.STUCK, 1, [], "/nightly is a jobnet; a precondition @STATE names one job's state"),
    ],
)
def test_override_items_with_preconditions(
    nightly: RunGraph, text: str, state: JobState, attempt: int, requests: list[str], error: str | None
) -> None:
    current = {"/nightly/extract": state, "/nightly/load/step1": S.PENDING}
    parsed = parse_override_annotation(text, nightly, current, attempts={"/nightly/extract": attempt})
    assert [request.text() for request in parsed.requests] == requests
    if error is None:
        assert parsed.errors == ()
    else:
        assert len(parsed.errors) == 1 and error in parsed.errors[0], parsed.errors


def test_a_request_keeps_its_precondition(nightly: RunGraph) -> None:
    parsed = parse_override_annotation(
        "/nightly/extract=Succeeded@Stuck#3", nightly, {"/nightly/extract": S.STUCK}, attempts={"/nightly/extract": 3}
    )
    assert parsed.requests == (
        OverrideRequest(
            path="/nightly/extract", state=S.SUCCEEDED, precondition=Precondition(state=S.STUCK, attempt=3)
        ),
    )


# ---------------------------------------------------------------- admission


def test_admission_refuses_a_malformed_precondition_whatever_the_state(nightly: RunGraph) -> None:
    problems = static_steering_problems(
        {}, {OVERRIDE: "/nightly/extract=Ready@Stuck#x,/nightly/load=Ready@Stuck"}, nightly
    )
    assert [key for key, _ in problems] == [OVERRIDE, OVERRIDE]
    assert "attempt 'x'" in problems[0][1] and "/nightly/load is a jobnet" in problems[1][1]
    # without the graph the paths (and so jobnet or job) are not known: only the syntax is checked
    assert static_steering_problems({}, {OVERRIDE: "/any=Ready@Stuck"}, None) == []
    assert static_steering_problems({}, {OVERRIDE: "/any=Ready@Stuk"}, None) != []


def test_jobs_shown_reads_state_and_attempt_from_the_status(nightly: RunGraph) -> None:
    status = JobRunStatus.model_validate({"jobs": {"/nightly/extract": {"state": "Stuck", "attempt": 2}}})
    states, attempts = jobs_shown(nightly, status)
    assert states == {"/nightly/extract": S.STUCK, "/nightly/load/step1": S.PENDING}
    assert attempts == {"/nightly/extract": 2, "/nightly/load/step1": 0}


def test_admission_refuses_a_precondition_the_stored_status_contradicts(nightly: RunGraph) -> None:
    jobs = {
        "/nightly/extract": {"state": "Failed", "attempt": 1, "reason": "HostRebooted"},
        "/nightly/load/step1": {"state": "no such state"},  # not read: named without a precondition
    }
    [problem] = stale_override_problems("/nightly/extract=Ready@Stuck#1,/nightly/load/step1=Failed", nightly, jobs)
    assert problem.startswith("/nightly/extract is Failed (attempt 1) now, not Stuck in attempt 1")
    # Holds, or none given: admitted (whether Failed -> Ready is allowed is the scheduler's call).
    assert stale_override_problems("/nightly/extract=Ready@Failed#1,/nightly/load=Failed", nightly, jobs) == []
    assert stale_override_problems("/nightly/extract=Ready", nightly, jobs) == []
    # A job without an entry has never started.
    [never] = stale_override_problems("/nightly/extract=Ready@Failed", nightly, {})
    assert never.startswith("/nightly/extract is Pending (never started) now")
    with pytest.raises(ValueError):
        stale_override_problems("/nightly/load/step1=Failed@Stuck", nightly, jobs)


# ---------------------------------------------------------------- applied by the scheduler


def apply(run: Run, override: str) -> tuple[list[Event], tuple[str, ...]]:
    decision = run.reconcile(annotations={OVERRIDE: override}, annotated_by="alice")
    events = [a for a in decision.actions if isinstance(a, Event) and a.reason in ("Overridden", "OverrideRejected")]
    return events, decision.consumed_annotations


def test_a_stale_override_is_not_applied_and_the_warning_says_why() -> None:
    run = failed_chain()  # as a Stuck job the operator resolved from the agent's journal
    events, consumed = apply(run, "/net/a=Ready@Stuck#1")
    assert run.state("/net/a") == S.FAILED and run.runtime.jobs["/net/a"].attempt == 1
    assert run.runtime.settlements == ()
    assert [(e.type, e.reason) for e in events] == [("Warning", "OverrideRejected")]
    assert "/net/a is Failed (attempt 1) now, not Stuck in attempt 1 as the override expects" in events[0].message
    # refused requests are consumed like applied ones: recorded, then the annotation removed
    assert consumed == (OVERRIDE,)


def test_an_override_whose_precondition_holds_applies() -> None:
    run = failed_chain()
    events, consumed = apply(run, "/net/a=Ready@Failed#1")
    assert [(e.type, e.reason) for e in events] == [("Normal", "Overridden")]
    assert run.runtime.jobs["/net/a"].attempt == 2 and consumed == (OVERRIDE,)
