"""Event names and the Events a run's status implies (jobnet.core.events).

What is checked: a name is a valid DNS subdomain of at most 253 characters whatever the run's
name; the identity the run's loop names an Event with is the one a restarted operator derives
from the status written before it (so the re-post is a 409, not a second Event); the status
implies no Event the scheduler did not post; genuinely new occurrences (a re-run failing again,
a job Stuck again, a run finishing again) get new names."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings

from jobnet.core.events import EVENT_NAME_MAX, event_identity, event_name, implied_events
from jobnet.core.runstatus import run_status
from jobnet.core.scheduler import Decision, Event
from jobnet.core.states import JobState, RunPhase
from jobnet.devenv.emulator.kube import OBJECT_NAME_RE
from tests.support.scheduler_sim import RUN_UID, Run, failed_chain, graph, job
from tests.unit.test_scheduler_properties import World, drive, worlds

S = JobState


def stored(decision: Decision) -> dict[str, Any]:
    """The status the run's loop writes after ``decision``, as a reader decodes it."""
    return run_status(decision).model_dump(by_alias=True, exclude_none=True, mode="json")


def derived(decision: Decision, now: float = 0.0) -> list[tuple[str, ...]]:
    """The identities of the Events of ``decision`` that a status can imply (not "once")."""
    identities = [event_identity(a, decision.runtime, now) for a in decision.actions if isinstance(a, Event)]
    return [identity for identity in identities if identity[0] != "once"]


def implied(decision: Decision) -> list[tuple[str, ...]]:
    return [event.identity for event in implied_events(stored(decision), not_before=0.0)]


def test_a_name_is_a_dns_subdomain_of_at_most_253_characters() -> None:
    for involved in ("nightly-x7k2q", "a" * 253, "a." * 120 + "b" * 20, "run-" + "9" * 249):
        name = event_name(involved, RUN_UID, "run", "Succeeded", "2026-12-03T20:00:00.250Z")
        assert len(name) <= EVENT_NAME_MAX and OBJECT_NAME_RE.match(name), name
        assert name == event_name(involved, RUN_UID, "run", "Succeeded", "2026-12-03T20:00:00.250Z")
    assert re.fullmatch(r"nightly-x7k2q\.[0-9a-f]{16}", event_name("nightly-x7k2q", "u"))
    assert event_name("r", "a", "bc") != event_name("r", "ab", "c")  # parts are separated


def test_the_loop_names_a_failure_as_the_status_written_before_it_implies() -> None:
    run = failed_chain()
    (decision,) = [d for d in run.decisions if any(isinstance(a, Event) and a.reason == "JobFailed" for a in d.actions)]
    identities = derived(decision)
    assert [i[0] for i in identities] == ["JobFailed", "run"]  # the job's failure, then the run's
    assert identities == implied(decision)
    events = implied_events(stored(decision), not_before=0.0)
    assert [(e.type, e.reason) for e in events] == [("Warning", "JobFailed"), ("Warning", "RunFailed")]
    assert events[0].message == next(a.message for a in decision.actions if isinstance(a, Event))


def test_a_rerun_that_fails_again_and_a_run_that_fails_again_get_new_names() -> None:
    run = failed_chain()
    first = implied(run.last)
    run.advance(5)
    run.override("/net/a", S.READY)
    run.start_and_run("/net/a")
    run.advance(5)
    run.finish("/net/a", code=1)
    assert run.phase == RunPhase.FAILED and run.runtime.jobs["/net/a"].attempt == 2
    second = implied(run.last)
    assert len(second) == 2 and not set(first) & set(second)


def test_a_job_stuck_again_and_a_refined_stuck_reason_get_new_names() -> None:
    run = Run(graph("net", net={"jobs": [job("a"), job("b")]}))
    run.reconcile()
    run.start_and_run("/net/a", "/net/b")
    run.advance(run.policy.heartbeat_deadline_seconds + 1)
    run.beat()
    run.heartbeats.clear()
    run.reconcile()
    assert run.state("/net/a") == S.STUCK
    stuck = [d for d in run.decisions if derived(d)][-1]
    first = set(derived(stuck))
    assert first == set(implied(stuck))  # JobStuck of a and b, RunStuck
    # The agent no longer knows a: same Stuck, a more precise reason, reported again.
    del run.records[run.key("/net/a").text()]
    run.absent.add(run.key("/net/a").text())
    run.beat()
    run.advance(1)
    refined = run.reconcile()
    assert run.reason("/net/a") == "AgentLost"
    assert derived(refined) and not set(derived(refined)) & first
    assert set(derived(refined)) <= set(implied(refined))


def test_no_event_is_implied_for_what_a_person_settled_or_a_job_stopped_before_it_started() -> None:
    run = Run(graph("net", net={"jobs": [job("a"), job("b", "a")]}))
    run.reconcile()
    run.start_and_run("/net/a")
    run.stop("/net")
    run.deliver_kill("/net/a")
    run.reconcile()
    assert run.phase == RunPhase.STOPPED and run.state("/net/b") == S.STOPPED
    reasons = [e.reason for e in implied_events(stored(run.last), not_before=0.0)]
    assert reasons == ["JobStopped", "RunStopped"]  # a was killed; b never started: no Event
    settled = Run(graph("net", net={"jobs": [job("a")]}))
    settled.reconcile()
    settled.deliver_launch("/net/a", "unknown")
    settled.reconcile()
    assert settled.state("/net/a") == S.STUCK
    settled.override("/net/a", S.FAILED)
    assert settled.state("/net/a") == S.FAILED
    assert [e.reason for e in implied_events(stored(settled.last), not_before=0.0)] == ["RunFailed"]


def test_only_events_within_the_window_are_implied() -> None:
    run = failed_chain()
    status = stored(run.last)
    assert implied_events(status, not_before=run.now + 1) == []
    assert len(implied_events(status, not_before=run.now - 1)) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_random_runs_imply_exactly_the_events_the_loop_named(world: World) -> None:
    _, decisions = drive(world)
    posted: set[tuple[str, ...]] = set()
    for decision in decisions:
        named = derived(decision)
        posted.update(named)
        implied_now = set(implied(decision))
        assert set(named) <= implied_now, (named, implied_now)
        assert implied_now <= posted, implied_now - posted
