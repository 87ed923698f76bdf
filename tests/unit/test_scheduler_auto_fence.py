"""stuckResolution Auto recovers a launch that provably never reached the agent.

A job Stuck LaunchOutcomeUnknown whose agent is heard again with a caught-up heartbeat (its
journal replay is complete) and has no record of the key is fenced by the operator itself, the
same fence as a person's override to Ready; once the agent confirms the fence the job is re-sent
as the next attempt (an automatic settlement). If the fence shows the key did arrive, the job
takes that real state. Under Manual a person decides, as before.
"""

from __future__ import annotations

from jobnet.core.runstatus import run_status, runtime_from_status
from jobnet.core.scheduler import AUTO_RESOLVER
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import HOST_ID, Run
from tests.unit.test_scheduler_fence import FIRST, stuck_launch

S = JobState


def heard_again(run: Run) -> None:
    """The agent's caught-up heartbeat arrives after the job went Stuck; no record of its key."""
    run.advance(5)
    run.beat()
    run.reconcile()


def auto_fenced() -> Run:
    run = stuck_launch()
    heard_again(run)
    [fence] = run.fences()
    assert fence.key == run.key(FIRST, 1) and fence.host == HOST_ID
    return run


def test_a_caught_up_agent_without_the_key_gets_it_fenced_and_nothing_launches_yet() -> None:
    run = auto_fenced()
    job = run.runtime.jobs[FIRST]
    assert job.state == S.STUCK and job.reason == "LaunchOutcomeUnknown" and job.attempt == 1
    assert job.dispatch is not None and job.dispatch.op == "fence" and job.dispatch.override_by == AUTO_RESOLVER
    assert run.launched() == [] and run.runtime.settlements == ()
    [requested] = run.events("FenceRequested")
    assert "no record of attempt 1" in requested.message and "attempt 2" in requested.message


def test_without_a_heartbeat_since_the_job_went_stuck_nothing_is_fenced_and_it_looks_again() -> None:
    run = stuck_launch()
    run.advance(5)
    decision = run.reconcile()
    assert run.fences() == [] and run.state(FIRST) == S.STUCK
    # A heartbeat wakes no reconcile by itself: the run asks to be woken to look again.
    assert decision.next_wakeup_at == run.now + 10  # a third of the 30 s heartbeat deadline


def test_a_heartbeat_from_before_the_job_went_stuck_proves_nothing() -> None:
    run = stuck_launch()
    run.heartbeats[HOST_ID] = run.now - 1
    run.advance(5)
    run.reconcile()
    assert run.fences() == [] and run.state(FIRST) == S.STUCK


def test_under_manual_resolution_a_person_decides() -> None:
    run = stuck_launch(resolution="Manual")
    heard_again(run)
    heard_again(run)
    assert run.fences() == [] and run.launched() == [] and run.last.next_wakeup_at is None
    assert run.state(FIRST) == S.STUCK and run.runtime.jobs[FIRST].dispatch is None


def test_a_confirmed_fence_resends_the_job_as_attempt_2_settled_by_the_operator() -> None:
    run = auto_fenced()
    run.deliver_fence(FIRST)
    decision = run.reconcile()
    [launch] = run.launches()[1:]
    assert launch.key == run.key(FIRST, 2) and run.state(FIRST) == S.STARTING
    [settlement] = run.runtime.settlements
    assert (settlement.from_state, settlement.to_state, settlement.by) == (S.STUCK, S.READY, AUTO_RESOLVER)
    [resolved] = run.events("StuckResolved")
    assert "never reached" in resolved.message and "attempt 2" in resolved.message
    assert run.events("Overridden") == []
    assert [ack.key for ack in run.acks(decision)] == [run.key(FIRST, 1)]
    run.start_and_run(FIRST)
    run.finish(FIRST)
    run.start_and_run("/n/second")
    run.finish("/n/second")
    assert run.phase == RunPhase.SUCCEEDED


def test_a_fence_finding_attempt_1_running_makes_the_job_running_automatically() -> None:
    run = auto_fenced()
    run.deliver_fence(FIRST, state="running", pid=4242)
    run.reconcile()
    job = run.runtime.jobs[FIRST]
    assert job.state == S.RUNNING and job.attempt == 1 and job.pid == 4242 and job.dispatch is None
    assert [launch.key.attempt for launch in run.launches()] == [1]
    [settlement] = run.runtime.settlements
    assert (settlement.to_state, settlement.by) == (S.RUNNING, AUTO_RESOLVER)
    assert run.events("OverrideNotApplied") == [] and len(run.events("StuckResolved")) == 1


def test_a_fence_finding_attempt_1_exited_gives_its_real_result() -> None:
    run = auto_fenced()
    run.deliver_fence(FIRST, state="exited", exit_code=3)
    run.reconcile()
    assert run.state(FIRST) == S.FAILED and run.runtime.jobs[FIRST].exit_code == 3
    assert [launch.key.attempt for launch in run.launches()] == [1]


def test_an_undelivered_auto_fence_keeps_the_job_stuck_and_is_retried() -> None:
    run = auto_fenced()
    run.deliver_fence(FIRST, "notDelivered", error_code="HostUnreachable")
    run.reconcile()
    run.advance(60)
    run.reconcile()
    assert run.state(FIRST) == S.STUCK and run.launched() == []
    [fence] = run.fences()
    assert fence.key == run.key(FIRST, 1) and len(run.events("FenceRetried")) == 1
    assert run.runtime.jobs[FIRST].dispatch.attempts_used == 2  # type: ignore[union-attr]


def test_a_persons_override_while_the_auto_fence_is_pending_is_the_one_recorded() -> None:
    run = auto_fenced()
    run.override(FIRST, S.READY, by="alice")
    assert run.fences() == []  # the automatic fence is already on its way
    run.deliver_fence(FIRST)
    run.reconcile()
    [settlement] = run.runtime.settlements
    assert settlement.by == "alice" and run.runtime.jobs[FIRST].attempt == 2


def test_a_pending_auto_fence_survives_an_operator_restart() -> None:
    run = auto_fenced()
    persisted = JobRunStatus.model_validate_json(run_status(run.last).model_dump_json())
    run.runtime = runtime_from_status(run.runtime.run_uid, run.graph, persisted)
    dispatch = run.runtime.jobs[FIRST].dispatch
    assert dispatch is not None and dispatch.op == "fence" and dispatch.override_by == AUTO_RESOLVER
    run.deliver_fence(FIRST)
    run.reconcile()
    assert run.runtime.jobs[FIRST].attempt == 2 and run.runtime.settlements[0].by == AUTO_RESOLVER
