"""An override to Ready of a job whose launch the agent never confirmed fences the old key first.

The launch of attempt N may still sit in a TCP buffer and reach the agent after attempt N+1 was
launched: both would run. So the scheduler sends ``fence`` for attempt N and launches attempt
N+1 only once the agent answers that attempt N never ran; if it did run, the job takes its real
state and the override is not applied; while the fence cannot be delivered the job stays Stuck.
"""

from __future__ import annotations

from jobnet.core.annotations import OverrideRequest
from jobnet.core.runstatus import run_status, runtime_from_status
from jobnet.core.scheduler import AUTO_RESOLVER, SchedulerPolicy
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import HOST_ID, Run, graph, job

S = JobState
FIRST = "/n/first"


def stuck_launch(retry: dict[str, float] | None = None, resolution: str = "Auto") -> Run:
    """first -> second; the launch of first broke after it left: Stuck LaunchOutcomeUnknown."""
    spec: dict[str, object] = {"jobs": [job("first"), job("second", "first")], "stuckResolution": resolution}
    if retry:
        spec["retry"] = retry
    policy = SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20)
    run = Run(graph("n", n=spec), policy)
    run.reconcile()
    run.deliver_launch(FIRST, "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert run.state(FIRST) == S.STUCK and run.reason(FIRST) == "LaunchOutcomeUnknown"
    return run


def override_ready(run: Run) -> None:
    run.override(FIRST, S.READY)
    [fence] = run.fences()
    assert fence.key == run.key(FIRST, 1) and fence.host == HOST_ID


def test_override_to_ready_of_an_unconfirmed_launch_fences_attempt_1_and_launches_nothing_yet() -> None:
    run = stuck_launch()
    override_ready(run)
    assert run.launched() == []
    job = run.runtime.jobs[FIRST]
    assert job.state == S.STUCK and job.reason == "LaunchOutcomeUnknown" and job.attempt == 1
    assert job.dispatch is not None and job.dispatch.op == "fence" and job.dispatch.override_by == "alice"
    assert run.runtime.settlements == () and run.events("Overridden") == []
    [requested] = run.events("FenceRequested")
    assert "alice" in requested.message and "attempt 1" in requested.message and "attempt 2" in requested.message
    assert run.phase == RunPhase.STUCK


def test_a_confirmed_fence_applies_the_override_and_launches_attempt_2() -> None:
    run = stuck_launch()
    override_ready(run)
    run.deliver_fence(FIRST)
    decision = run.reconcile()
    [launch] = run.launches()[1:]
    assert launch.key == run.key(FIRST, 2) and run.state(FIRST) == S.STARTING
    [settlement] = run.runtime.settlements
    assert (settlement.from_state, settlement.to_state, settlement.by) == (S.STUCK, S.READY, "alice")
    assert "attempt 2" in settlement.message
    assert [ack.key for ack in run.acks(decision)] == [run.key(FIRST, 1)]  # the fenced record may be collected
    run.start_and_run(FIRST)
    run.finish(FIRST)
    run.start_and_run("/n/second")
    run.finish("/n/second")
    assert run.phase == RunPhase.SUCCEEDED


def test_a_fence_finding_attempt_1_running_keeps_it_and_does_not_apply_the_override() -> None:
    run = stuck_launch()
    override_ready(run)
    run.deliver_fence(FIRST, state="running", pid=4242)
    run.reconcile()
    assert run.launched() == [] and [launch.key.attempt for launch in run.launches()] == [1]
    job = run.runtime.jobs[FIRST]
    assert job.state == S.RUNNING and job.attempt == 1 and job.pid == 4242 and job.dispatch is None
    [warning] = run.events("OverrideNotApplied")
    assert warning.type == "Warning"
    assert "override to Ready by alice not applied: attempt 1 was found running (pid 4242) on the VM" in warning.message
    [settlement] = run.runtime.settlements
    assert (settlement.from_state, settlement.to_state, settlement.by) == (S.STUCK, S.RUNNING, AUTO_RESOLVER)
    run.finish(FIRST)
    assert run.state(FIRST) == S.SUCCEEDED and run.launched() == ["/n/second"]


def test_a_fence_finding_attempt_1_ended_gives_its_real_result() -> None:
    run = stuck_launch()
    override_ready(run)
    run.deliver_fence(FIRST, state="exited", exit_code=3)
    run.reconcile()
    assert run.state(FIRST) == S.FAILED and run.runtime.jobs[FIRST].exit_code == 3
    assert [launch.key.attempt for launch in run.launches()] == [1]
    assert "attempt 1 was found exited with code 3" in run.events("OverrideNotApplied")[0].message
    assert run.state("/n/second") == S.SKIPPED and run.phase == RunPhase.FAILED


def test_under_manual_resolution_the_fence_answer_still_settles_the_job() -> None:
    run = stuck_launch(resolution="Manual")
    override_ready(run)
    run.deliver_fence(FIRST, state="exited", exit_code=0)
    run.reconcile()
    assert run.state(FIRST) == S.SUCCEEDED and run.launched() == ["/n/second"]


def test_a_lost_attempt_found_by_the_fence_stays_stuck_for_a_person() -> None:
    run = stuck_launch()
    override_ready(run)
    run.deliver_fence(FIRST, state="lost", reason="SupervisorLost", message="supervisor died")
    run.reconcile()
    job = run.runtime.jobs[FIRST]
    assert job.state == S.STUCK and job.reason == "SupervisorLost" and job.dispatch is None
    assert run.launched() == [] and run.events("OverrideNotApplied")
    run.reconcile()
    assert run.fences() == [] and run.launched() == []


def test_an_undelivered_fence_keeps_the_job_stuck_and_is_retried_until_the_agent_answers() -> None:
    run = stuck_launch(retry={"intervalSeconds": 5})
    override_ready(run)
    for outcome, code in [
        ("notDelivered", "HostUnreachable"),
        ("unknown", "ConnectionLost"),
        ("notDelivered", "HostUnreachable"),
    ]:
        run.deliver_fence(FIRST, outcome, error_code=code)
        decision = run.reconcile()
        assert run.fences() == [] and run.launched() == []
        assert decision.next_wakeup_at == run.now + 5
        run.advance(5)
        run.reconcile()
        [fence] = run.fences()
        assert fence.key == run.key(FIRST, 1)
        job = run.runtime.jobs[FIRST]
        assert job.state == S.STUCK and job.reason == "LaunchOutcomeUnknown"
    # More attempts than retry.dispatchAttempts: a fence never gives up into a launch or a failure.
    assert run.runtime.jobs[FIRST].dispatch.attempts_used == 4  # type: ignore[union-attr]
    [retried] = run.events("FenceRetried")
    assert retried.type == "Warning" and "HostUnreachable" in retried.message and "every 5s" in retried.message
    assert run.runtime.settlements == ()
    run.deliver_fence(FIRST)
    run.reconcile()
    assert [launch.key.attempt for launch in run.launches()] == [1, 2]


def test_a_fence_without_any_answer_is_sent_again_after_the_dispatch_timeout() -> None:
    run = stuck_launch(retry={"intervalSeconds": 0})
    override_ready(run)
    run.advance(19)
    run.reconcile()
    assert run.fences() == []
    run.advance(1)
    run.reconcile()
    assert [fence.key for fence in run.fences()] == [run.key(FIRST, 1)] and run.launched() == []


def test_the_fenced_record_seen_in_the_watch_settles_the_fence_like_its_answer() -> None:
    run = stuck_launch()
    override_ready(run)
    run.deliver_fence(FIRST, "unknown", error_code="ConnectionLost")
    run.record(FIRST, "failedToStart", reason="Fenced", message="fenced before it was launched")
    run.reconcile()
    assert [launch.key.attempt for launch in run.launches()] == [1, 2]


def test_the_late_launch_seen_running_in_the_watch_while_fencing_wins_over_the_override() -> None:
    run = stuck_launch()
    override_ready(run)
    run.record(FIRST, "running", pid=77)
    run.beat()
    run.reconcile()
    assert run.state(FIRST) == S.RUNNING and run.runtime.jobs[FIRST].attempt == 1
    assert run.events("OverrideNotApplied") and [launch.key.attempt for launch in run.launches()] == [1]
    # The fence's own answer, arriving after, is about a settled dispatch: ignored.
    run.deliver_fence(FIRST, state="running", pid=77)
    run.reconcile()
    assert run.state(FIRST) == S.RUNNING and run.launched() == []


def test_repeating_the_override_while_fencing_sends_no_second_fence() -> None:
    run = stuck_launch()
    override_ready(run)
    run.override(FIRST, S.READY)
    assert run.fences() == [] and run.launched() == []
    assert run.runtime.jobs[FIRST].dispatch.op == "fence"  # type: ignore[union-attr]


def test_another_override_while_fencing_replaces_the_waiting_rerun() -> None:
    run = stuck_launch()
    override_ready(run)
    run.override(FIRST, S.FAILED)
    assert run.state(FIRST) == S.FAILED and run.runtime.jobs[FIRST].dispatch is None
    run.deliver_fence(FIRST)
    run.reconcile()
    assert [launch.key.attempt for launch in run.launches()] == [1] and run.phase == RunPhase.FAILED


def test_a_stop_while_fencing_kills_attempt_1_and_never_reruns() -> None:
    run = stuck_launch()
    override_ready(run)
    run.stop(FIRST)
    [kill] = run.kills()
    assert kill.key == run.key(FIRST, 1) and run.state(FIRST) == S.STOPPING
    run.deliver_kill(FIRST, state=None)
    run.reconcile()
    assert run.state(FIRST) == S.STOPPED and [launch.key.attempt for launch in run.launches()] == [1]


def test_a_failed_job_and_a_stuck_job_with_a_known_record_rerun_at_once() -> None:
    run = stuck_launch()
    run.advance(1)
    run.record(FIRST, "running", pid=9)
    run.beat()
    run.reconcile()
    run.advance(31)
    run.reconcile()
    assert run.reason(FIRST) == "HeartbeatLost"
    run.override(FIRST, S.READY)
    assert run.fences() == [] and run.launched() == [FIRST]
    run.deliver_launch(FIRST, state="exited", exit_code=1)
    run.reconcile()
    assert run.state(FIRST) == S.FAILED
    run.override(FIRST, S.READY)
    assert run.fences() == [] and [launch.key.attempt for launch in run.launches()] == [1, 2, 3]


def test_a_pending_fence_survives_an_operator_restart() -> None:
    run = stuck_launch()
    override_ready(run)
    persisted = JobRunStatus.model_validate_json(run_status(run.last).model_dump_json())
    run.runtime = runtime_from_status(run.runtime.run_uid, run.graph, persisted)
    dispatch = run.runtime.jobs[FIRST].dispatch
    assert dispatch is not None and dispatch.op == "fence" and dispatch.override_by == "alice"
    run.advance(20)
    run.reconcile()
    assert [fence.key for fence in run.fences()] == [run.key(FIRST, 1)]
    run.deliver_fence(FIRST)
    run.reconcile()
    assert run.runtime.settlements[0].by == "alice" and [launch.key.attempt for launch in run.launches()] == [1, 2]


def set_failed_then_rerun(run: Run) -> None:
    """A person settled the unconfirmed launch as Failed, then re-runs the job."""
    run.override(FIRST, S.FAILED)
    assert run.state(FIRST) == S.FAILED and run.phase == RunPhase.FAILED
    run.override(FIRST, S.READY)
    [fence] = run.fences()
    assert fence.key == run.key(FIRST, 1)


def test_a_rerun_of_a_job_set_failed_after_an_unconfirmed_launch_waits_ready_for_the_fence() -> None:
    run = stuck_launch()
    set_failed_then_rerun(run)
    job = run.runtime.jobs[FIRST]
    assert job.state == S.READY and job.attempt == 1 and job.dispatch is not None and job.dispatch.op == "fence"
    assert run.launched() == [] and run.phase == RunPhase.RUNNING
    run.reconcile()
    assert run.launched() == [] and run.state(FIRST) == S.READY
    persisted = JobRunStatus.model_validate_json(run_status(run.last).model_dump_json())
    run.runtime = runtime_from_status(run.runtime.run_uid, run.graph, persisted)
    run.deliver_fence(FIRST)
    run.reconcile()
    assert [launch.key.attempt for launch in run.launches()] == [1, 2] and run.state(FIRST) == S.STARTING
    assert [(s.from_state, s.to_state) for s in run.runtime.settlements] == [(S.STUCK, S.FAILED), (S.FAILED, S.READY)]


def test_a_rerun_of_a_job_set_failed_is_not_applied_when_the_fence_finds_attempt_1_ran() -> None:
    run = stuck_launch()
    set_failed_then_rerun(run)
    run.deliver_fence(FIRST, state="exited", exit_code=0)
    run.reconcile()
    job = run.runtime.jobs[FIRST]
    assert job.state == S.FAILED and job.attempt == 1 and job.dispatch is None
    assert [launch.key.attempt for launch in run.launches()] == [1] and run.phase == RunPhase.FAILED
    [warning] = run.events("OverrideNotApplied")
    assert "attempt 1 was found exited with code 0" in warning.message and "stays Failed" in warning.message
    # Now the agent's record is known: a re-run is the person's informed choice and starts at once.
    run.override(FIRST, S.READY)
    assert run.fences() == [] and [launch.key.attempt for launch in run.launches()] == [1, 2]


def test_a_stop_while_a_rerun_waits_for_its_fence_stops_it_unlaunched() -> None:
    run = stuck_launch()
    set_failed_then_rerun(run)
    run.stop(FIRST)
    job = run.runtime.jobs[FIRST]
    assert job.state == S.STOPPED and job.dispatch is None
    run.deliver_fence(FIRST)
    run.reconcile()
    assert [launch.key.attempt for launch in run.launches()] == [1] and run.phase == RunPhase.STOPPED


def test_the_reason_given_with_the_override_is_kept_until_the_fence_applies_it() -> None:
    run = stuck_launch()
    run.reconcile(overrides=[OverrideRequest(path=FIRST, state=S.READY, by="alice", message="the VM was rebooted")])
    assert run.events("FenceRequested")[0].message.endswith(": the VM was rebooted")
    persisted = JobRunStatus.model_validate_json(run_status(run.last).model_dump_json())
    run.runtime = runtime_from_status(run.runtime.run_uid, run.graph, persisted)
    run.deliver_fence(FIRST)
    run.reconcile()
    [settlement] = run.runtime.settlements
    assert settlement.message.endswith(": the VM was rebooted") and settlement.by == "alice"
    assert run.events("Overridden")[0].message.endswith(": the VM was rebooted")
