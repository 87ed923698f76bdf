"""Which status writes may wait (core/scheduler/deferral.py): table tests of the rule, and a
restart from the status written before a deferred round computes the same attempt (the random
runs of test_scheduler_properties.py check the same across faults, stops and overrides)."""

from __future__ import annotations

import pytest

from jobnet.core.runstatus import run_status, runtime_from_status
from jobnet.core.scheduler import Decision, Launch, SchedulerPolicy
from jobnet.core.scheduler.deferral import WriteDeferral, deferrable, observed_only
from jobnet.core.scheduler.state import Dispatch, JobRuntime
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import RUN_UID, Run, graph, job

S = JobState
LAUNCH = Dispatch(op="launch", attempts_used=1, last_attempt_at=10.0)
STARTING = JobRuntime(state=S.STARTING, attempt=1, host="h", since=10.0, dispatch=LAUNCH)
RUNNING = JobRuntime(state=S.RUNNING, attempt=1, host="h", since=11.0, pid=7, started_at=11.0)


@pytest.mark.parametrize(
    ("stored", "decided", "expected"),
    [
        (STARTING, STARTING, True),
        (STARTING, RUNNING, True),  # the launch was accepted / the script started
        (RUNNING, RUNNING.model_copy(update={"pid": 8, "started_at": 11.5}), True),
        (STARTING.model_copy(update={"dispatch": LAUNCH.model_copy(update={"in_flight": False})}), RUNNING, False),
        (STARTING.model_copy(update={"dispatch": LAUNCH.model_copy(update={"op": "fence"})}), RUNNING, False),
        (STARTING, RUNNING.model_copy(update={"deadline": 71.0}), False),  # a timeout counts from here
        (STARTING, RUNNING.model_copy(update={"attempt": 2}), False),
        (STARTING, RUNNING.model_copy(update={"host": "other"}), False),
        (STARTING, RUNNING.model_copy(update={"message": "resolved automatically"}), False),
        (JobRuntime(), STARTING, False),  # a decision to launch
        (RUNNING, RUNNING.model_copy(update={"state": S.SUCCEEDED, "exit_code": 0, "finished_at": 12.0}), False),
        (RUNNING, RUNNING.model_copy(update={"state": S.STUCK, "reason": "HeartbeatLost"}), False),
        (STARTING, STARTING.model_copy(update={"dispatch": None, "state": S.STOPPED}), False),
    ],
)
def test_only_an_observation_of_a_stored_launch_may_wait(
    stored: JobRuntime, decided: JobRuntime, expected: bool
) -> None:
    assert observed_only(stored, decided) is expected


def chain() -> Run:
    """first -> second on one VM; first's launch is stored (Starting) and was accepted."""
    run = Run(graph("n", n={"jobs": [job("first"), job("second", "first")]}))
    run.reconcile()
    return run


def test_the_accepted_launch_round_may_wait_and_the_next_decision_may_not() -> None:
    run = chain()
    stored = run.last
    deferral = WriteDeferral(1.0, stored.runtime, dict(stored.jobnet_states))
    run.deliver_launch("/n/first")  # accepted and running
    run.beat()
    accepted = run.reconcile()
    assert accepted.actions == () and deferrable(stored.runtime, stored.jobnet_states, accepted, accepted.changed)
    assert deferral.defer(accepted, run.now) == run.now + 1.0
    run.advance(0.5)
    finished = run.finish("/n/first")
    assert [action.key for action in finished.actions if isinstance(action, Launch)] == [run.key("/n/second", 1)]
    assert deferral.defer(finished, run.now) is None  # a launch: stored first
    assert "/n/first" in deferral.to_write(finished).changed
    deferral.stored_as(finished)
    assert deferral.unwritten == frozenset() and deferral.since is None


def test_a_deferred_write_waits_at_most_its_delay() -> None:
    run = chain()
    deferral = WriteDeferral(1.0, run.last.runtime, dict(run.last.jobnet_states))
    run.deliver_launch("/n/first")
    run.beat()
    assert deferral.defer(run.reconcile(), run.now) == run.now + 1.0
    run.advance(1.0)
    run.beat()
    unchanged = run.reconcile()
    assert deferral.defer(unchanged, run.now) is None  # due: written now, with the deferred job
    assert deferral.to_write(unchanged).changed == {"/n/first"}
    assert WriteDeferral(0.0, run.last.runtime, {}).defer(unchanged, run.now) is None  # 0: never deferred


@pytest.mark.parametrize("stop", [False, True])
def test_a_restart_from_the_status_before_the_deferred_round_sends_the_same_key(stop: bool) -> None:
    """The operator dies with the accepted launch unwritten: the restarted one finds first
    Starting with attempt 1 in flight and sends the same key again (or kills it by that key
    when its scope was stopped meanwhile): never attempt 2, never "never started"."""
    run = chain()
    persisted = JobRunStatus.model_validate_json(run_status(run.last).model_dump_json())
    run.deliver_launch("/n/first")
    run.beat()
    assert deferrable(run.last.runtime, run.last.jobnet_states, run.reconcile(), {"/n/first"})
    restarted = Run(run.graph, SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20), run.now)
    restarted.runtime = runtime_from_status(RUN_UID, run.graph, persisted)
    decision = restarted.stop("/") if stop else restarted.reconcile()
    sent = [action.key for action in decision.actions if isinstance(action, Launch)]
    killed = [kill.key for kill in restarted.kills(decision)]
    assert (killed, sent) == (([run.key("/n/first", 1)], []) if stop else ([], [run.key("/n/first", 1)]))
    restarted.records = dict(run.records)  # the agent's journal: the key's record
    if stop:
        restarted.deliver_kill("/n/first")  # the agent killed the running script
    else:
        restarted.deliver_launch("/n/first", deduplicated=True)
    restarted.beat()
    restarted.reconcile()
    job_ = restarted.runtime.jobs["/n/first"]
    assert job_.attempt == 1 and job_.state == (S.STOPPED if stop else S.RUNNING)
    assert "never started" not in (job_.message or "")


def test_a_round_with_actions_or_a_new_phase_is_written_at_once() -> None:
    run = chain()
    first = run.decisions[0]
    assert not deferrable(first.runtime.model_copy(update={"phase": RunPhase.PENDING}), {}, first, first.changed)
    assert isinstance(first, Decision) and first.actions
