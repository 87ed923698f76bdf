"""An attempt that provably never ran (its supervising process died, or its VM rebooted, before
the script was let go: ``failedToStart`` ``SupervisorLost``/``HostRebooted``) is run again as the
next attempt, with backoff, within the launch retry window counted from the job's first try;
Failed only once the window is spent (core/scheduler/relaunch.py)."""

from __future__ import annotations

import pytest

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.runstatus import run_status, runtime_from_status
from jobnet.core.scheduler import SchedulerPolicy
from jobnet.core.scheduler.relaunch import never_ran, relaunch_at
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import RUN_UID, Run, graph, job

S = JobState
A = "/n/a"
NEVER_RAN = "the supervisor died before the go line: the script never ran"
POLICY = SchedulerPolicy(
    launch_retry_window_seconds=20, launch_retry_backoff_min_seconds=1, launch_retry_backoff_max_seconds=8
)


def _record(state: str, reason: str | None) -> JobRecord:
    return JobRecord(key=JobKey(run=RUN_UID, path=A, attempt=1), seq=1, state=state, reason=reason)


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("failedToStart", "SupervisorLost", True),
        ("failedToStart", "HostRebooted", True),
        # The job's own fault would fail again; a fence is a decision, not an accident.
        ("failedToStart", "ScriptNotFound", False),
        ("failedToStart", "PermissionDenied", False),
        ("failedToStart", "BadWorkingDirectory", False),
        ("failedToStart", "Fenced", False),
        ("failedToStart", None, False),
        # It ran (or may have): never again by itself.
        ("interrupted", "HostRebooted", False),
        ("lost", "SupervisorLost", False),
        ("exited", None, False),
    ],
)
def test_which_records_prove_the_attempt_never_ran(state: str, reason: str | None, expected: bool) -> None:
    assert never_ran(_record(state, reason)) is expected


@pytest.mark.parametrize(
    ("window_start", "failed_at", "expected"),
    [
        (100.0, 100.2, 101.2),  # the first failure: the shortest backoff
        (100.0, 101.5, 103.0),  # then as long as the series lasted so far (about doubling)
        (100.0, 104.0, 108.0),
        (100.0, 110.0, 118.0),  # at most the longest backoff
        (100.0, 112.0, 120.0),  # due exactly at the window's end: still within
        (100.0, 112.5, None),  # past the window's end: spent
        (100.0, 130.0, None),
    ],
)
def test_the_next_attempt_launches_after_a_doubling_backoff_within_the_window(
    window_start: float, failed_at: float, expected: float | None
) -> None:
    assert relaunch_at(window_start, failed_at, POLICY) == expected


def test_no_window_no_relaunch() -> None:
    assert relaunch_at(100.0, 100.0, POLICY.model_copy(update={"launch_retry_window_seconds": 0})) is None


def supervisor_dies_before_go(run: Run, path: str = A) -> None:
    run.record(path, "failedToStart", reason="SupervisorLost", message=NEVER_RAN)
    run.reconcile()


def test_a_job_whose_supervisor_died_before_the_go_line_runs_again_as_the_next_attempt() -> None:
    run = Run(graph("n", n={"jobs": [job("a"), job("b", "a")]}), POLICY)
    run.reconcile()
    run.deliver_launch(A, state="accepted")
    run.reconcile()
    supervisor_dies_before_go(run)

    job_now = run.runtime.jobs[A]
    assert (job_now.state, job_now.reason, job_now.attempt) == (S.READY, "SupervisorLost", 1)
    assert job_now.relaunching_since == 1000.0  # the job's first try
    [earlier] = job_now.earlier
    assert (earlier.attempt, earlier.state, earlier.reason) == (1, S.FAILED, "SupervisorLost")
    [event] = run.events("Relaunching")
    assert event.type == "Warning" and event.path == A
    assert "never ran" in event.message and "attempt 2 in 1s" in event.message and "20s" in event.message
    assert run.launched() == [] and run.last.next_wakeup_at == run.now + 1
    assert not run.events("JobFailed") and run.phase == RunPhase.RUNNING

    run.advance(1)
    run.reconcile()
    assert run.launched() == [A] and run.key(A).attempt == 2
    assert [ack.key for ack in run.acks()] == [run.key(A, 1)]  # the old key is done with
    run.start_and_run(A)
    run.finish(A)
    assert run.state(A) == S.SUCCEEDED and run.launched() == ["/n/b"]
    assert run.runtime.jobs[A].earlier[0].state == S.FAILED


def test_a_job_that_never_runs_is_relaunched_with_backoff_until_the_window_is_spent_then_fails() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY)
    run.reconcile()
    first_try = run.now
    launches = [run.now]
    for _ in range(20):
        run.advance(0.5)  # the agent reports the death half a second after each launch
        supervisor_dies_before_go(run)
        if run.state(A) != S.READY:
            break
        wake = run.last.next_wakeup_at
        assert wake is not None
        run.now = wake
        run.reconcile()
        assert run.launched() == [A]
        launches.append(run.now)
    assert [later - earlier for earlier, later in zip(launches, launches[1:], strict=False)] == [1.5, 2.5, 5.0, 8.5]
    assert launches[-1] - first_try <= 20
    assert run.key(A).attempt == len(launches) == 5
    assert (run.state(A), run.reason(A)) == (S.FAILED, "SupervisorLost")
    message = run.runtime.jobs[A].message or ""
    assert "window of 20s after its first try is spent" in message, message
    assert len(run.events("Relaunching")) == 4 and len(run.events("JobFailed")) == 1
    assert run.phase == RunPhase.FAILED


def test_a_supervisor_lost_after_the_job_ran_is_not_relaunched() -> None:
    """``lost``: the script ran (unsupervised): Stuck, as before, never run again by itself."""
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY)
    run.reconcile()
    run.start_and_run(A)
    run.record(A, "lost", reason="SupervisorLost", message="supervisor died mid-run")
    run.reconcile()
    assert (run.state(A), run.reason(A)) == (S.STUCK, "SupervisorLost") and not run.events("Relaunching")


def test_a_job_failing_to_start_by_its_own_fault_fails_at_once() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY)
    run.reconcile()
    run.deliver_launch(A, state="failedToStart", reason="ScriptNotFound", message="no /opt/a.sh")
    run.reconcile()
    assert (run.state(A), run.reason(A)) == (S.FAILED, "ScriptNotFound") and not run.events("Relaunching")
    assert "window" not in (run.runtime.jobs[A].message or "")


def test_with_the_window_off_a_job_that_never_ran_fails_as_before() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY.model_copy(update={"launch_retry_window_seconds": 0}))
    run.reconcile()
    supervisor_dies_before_go(run)
    assert (run.state(A), run.reason(A)) == (S.FAILED, "SupervisorLost") and not run.events("Relaunching")
    assert "window" not in (run.runtime.jobs[A].message or "")


def test_a_stop_while_the_relaunch_waits_stops_the_job_not_started() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY)
    run.reconcile()
    supervisor_dies_before_go(run)
    assert run.state(A) == S.READY
    run.stop("/")
    assert (run.state(A), run.reason(A)) == (S.STOPPED, "StopRequested") and run.launched() == []


def test_a_person_rerunning_the_failed_job_starts_a_new_window() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY.model_copy(update={"launch_retry_window_seconds": 1}))
    run.reconcile()
    run.advance(0.5)
    supervisor_dies_before_go(run)  # due at 1.5 > the window's 1: not re-launched
    assert run.state(A) == S.FAILED
    run.advance(60)
    run.override(A, S.READY)
    assert run.launched() == [A] and run.runtime.jobs[A].relaunching_since is None
    run.advance(0.1)
    supervisor_dies_before_go(run)
    assert run.state(A) == S.FAILED  # its own window of 1s, from the person's re-run
    run.policy = POLICY
    run.override(A, S.READY)
    run.advance(0.1)
    supervisor_dies_before_go(run)
    assert run.state(A) == S.READY and run.runtime.jobs[A].relaunching_since == run.now - 0.1


def test_the_relaunch_window_survives_an_operator_restart() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), POLICY)
    run.reconcile()
    supervisor_dies_before_go(run)
    stored = JobRunStatus.model_validate_json(run_status(run.last).model_dump_json())
    restored = runtime_from_status(RUN_UID, run.graph, stored)
    assert restored.jobs[A].relaunching_since == run.runtime.jobs[A].relaunching_since == 1000.0
    assert restored.jobs[A].since == run.runtime.jobs[A].since
