"""Issue 10: a stop's kill that finds no job fences the key; the job ends Stopped, never Failed.

The edge answers a kill the agent answers "no such job" by fencing the key (a launch still on
its way is refused when it arrives) and reports the fenced record with the kill's answer. A
Fenced record of a job being stopped proves it never ran: Stopped (StopRequested); a Fenced
record for a re-run's fence keeps its meaning (tests/unit/test_scheduler_fence.py). Unless the
agent had reported the attempt running: then it lost the job's record (its state was wiped), and
the fence proves nothing about the script: the job stays (or goes) Stuck AgentLost.
"""

from __future__ import annotations

import pytest

from jobnet.core.scheduler import SchedulerPolicy
from jobnet.core.states import JobState, Reason, RunPhase
from tests.support.scheduler_sim import Run, graph, job

S = JobState
FIRST = "/n/first"


def stopped_while_launching(resolution: str = "Auto") -> Run:
    """first -> second; first's launch leaves, the run is stopped, the launch's answer is lost:
    the scheduler kills attempt 1 by its key instead of sending the launch again."""
    spec: dict[str, object] = {
        "jobs": [job("first"), job("second", "first")],
        "stuckResolution": resolution,
        "retry": {"dispatchAttempts": 1},
    }
    run = Run(graph("n", n=spec), SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20))
    run.reconcile()
    run.stop("/")
    run.deliver_launch(FIRST, "unknown", error_code="ConnectionLost")
    run.reconcile()
    [kill] = run.kills()
    assert kill.key == run.key(FIRST, 1) and run.state(FIRST) == S.STOPPING
    return run


def test_a_kill_answered_with_the_fenced_record_stops_the_job_never_started() -> None:
    run = stopped_while_launching()
    run.deliver_kill(FIRST, state="failedToStart")
    decision = run.reconcile()
    job = run.runtime.jobs[FIRST]
    assert (job.state, job.reason, job.dispatch) == (S.STOPPED, Reason.STOP_REQUESTED, None)
    assert job.message is not None and "never started" in job.message and "fenced" in job.message
    assert run.events("JobFailed") == [] and len(run.events("JobStopped")) == 1
    assert [launch.key.attempt for launch in run.launches()] == [1]
    assert [ack.key for ack in run.acks(decision)] == [run.key(FIRST, 1)]
    assert run.phase == RunPhase.STOPPED


def test_the_fenced_record_seen_in_the_watch_before_the_kills_answer_stops_the_job() -> None:
    run = stopped_while_launching()
    run.record(FIRST, "failedToStart", reason="Fenced", message="fenced before it was launched")
    run.reconcile()
    assert (run.state(FIRST), run.reason(FIRST)) == (S.STOPPED, Reason.STOP_REQUESTED)
    run.deliver_kill(FIRST, state="failedToStart")  # the answer, late: changes nothing
    run.reconcile()
    assert (run.state(FIRST), run.reason(FIRST)) == (S.STOPPED, Reason.STOP_REQUESTED)
    assert run.events("JobFailed") == [] and run.phase == RunPhase.STOPPED


def test_a_stuck_stop_resolved_by_the_fenced_record_is_stopped_not_failed() -> None:
    run = stopped_while_launching()
    run.deliver_kill(FIRST, "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert (run.state(FIRST), run.reason(FIRST)) == (S.STUCK, "StopOutcomeUnknown")
    run.advance(1)
    run.beat()
    run.record(FIRST, "failedToStart", reason="Fenced", message="fenced before it was launched")
    run.reconcile()
    assert (run.state(FIRST), run.reason(FIRST)) == (S.STOPPED, Reason.STOP_REQUESTED)
    assert run.events("JobFailed") == [] and run.phase == RunPhase.STOPPED


def running_then_agent_lost(lost_seen: bool) -> Run:
    """first -> second; first runs (the agent reported its pid), then the agent loses its state;
    ``lost_seen``: a new channel's list showed the key missing (Stuck AgentLost) before the stop."""
    spec: dict[str, object] = {"jobs": [job("first"), job("second", "first")]}
    run = Run(graph("n", n=spec), SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20))
    run.reconcile()
    run.start_and_run(FIRST)
    assert run.state(FIRST) == S.RUNNING
    del run.records[run.key(FIRST).text()]
    if lost_seen:
        run.absent.add(run.key(FIRST).text())
        run.reconcile()
        assert (run.state(FIRST), run.reason(FIRST)) == (S.STUCK, "AgentLost")
    return run


@pytest.mark.parametrize("lost_seen", [True, False], ids=["stuck-agent-lost", "running"])
@pytest.mark.parametrize("answer", ["kill", "watch"])
def test_a_fenced_record_of_a_job_the_agent_had_reported_running_is_agent_lost_not_never_started(
    lost_seen: bool, answer: str
) -> None:
    run = running_then_agent_lost(lost_seen)
    run.stop("/")
    [kill] = run.kills()
    assert kill.key == run.key(FIRST, 1) and run.state(FIRST) == S.STOPPING
    if answer == "kill":
        run.deliver_kill(FIRST, state="failedToStart")
    else:
        run.record(FIRST, "failedToStart", reason="Fenced", message="fenced before it was launched")
    run.reconcile()
    job = run.runtime.jobs[FIRST]
    assert (job.state, job.reason, job.dispatch) == (S.STUCK, "AgentLost", None)
    assert job.message is not None and "fenced the key" in job.message and "never started" not in job.message
    assert run.events("JobStopped") == [] and run.events("JobFailed") == []
    assert run.events("JobStuck")[-1].type == "Warning"
    stuck_events = len(run.events("JobStuck"))
    run.advance(5)
    run.beat()
    run.reconcile()  # the fenced record, seen again, changes nothing and says nothing more
    assert (run.state(FIRST), run.reason(FIRST)) == (S.STUCK, "AgentLost")
    assert len(run.events("JobStuck")) == stuck_events and run.phase == RunPhase.STUCK
    assert run.acks() == []  # the record is kept until a person settles the job
    run.override(FIRST, S.FAILED)
    assert run.state(FIRST) == S.FAILED and run.phase == RunPhase.FAILED
    assert [launch.key.attempt for launch in run.launches()] == [1]
