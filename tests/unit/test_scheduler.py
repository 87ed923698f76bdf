"""The reconcile decision, rule by rule (scheduling, dispatch, timeouts, overrides, phase)."""

from __future__ import annotations

import pytest

from jobnet.core.annotations import OverrideRequest
from jobnet.core.scheduler import (
    AUTO_RESOLVER,
    AgentFacts,
    DeliveryResult,
    Dispatch,
    JobRuntime,
    RunRuntime,
    SchedulerPolicy,
    job_states,
    reconcile,
)
from jobnet.core.scheduler.liveness import agent_may_have_lost
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import ATTEMPT_HISTORY_MAX
from tests.support.scheduler_sim import HOST_ID, RUN_UID, Run, graph, job, sub

S = JobState
#: Only the jobs' own retries (the default window of retries to an unreachable host is off).
NO_DEFAULT_RETRY = SchedulerPolicy(
    heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20, launch_retry_window_seconds=0
)


def diamond() -> Run:
    """a -> (b, c) -> d, plus an independent e."""
    return Run(graph("net", net={"jobs": [job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c"), job("e")]}))


def with_sub(**extra: object) -> Run:
    """extract -> load (sub-jobnet: s1 -> s2, s3) -> report; finally notify."""
    return Run(
        graph(
            "nightly",
            nightly={
                "jobs": [job("extract"), sub("load", "loadnet", "extract"), job("report", "load")],
                "finally": [job("notify")],
            },
            loadnet={"jobs": [job("s1"), job("s2", "s1"), job("s3")], **extra},
        )
    )


# ---------------------------------------------------------------- scheduling


def test_first_reconcile_launches_the_roots_as_attempt_1() -> None:
    run = diamond()
    decision = run.reconcile()
    assert run.launched() == ["/net/a", "/net/e"]
    launch = run.launches()[0]
    assert launch.key.run == RUN_UID and launch.key.attempt == 1 and launch.host == HOST_ID
    assert run.state("/net/a") == S.STARTING and run.state("/net/b") == S.PENDING
    assert run.phase == RunPhase.RUNNING and decision.progress == "0/5"
    assert run.runtime.started_at == run.now


def test_a_job_becomes_ready_only_when_all_its_after_jobs_succeeded() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a", "/net/e")
    run.finish("/net/a")
    assert run.launched() == ["/net/b", "/net/c"]
    run.start_and_run("/net/b", "/net/c")
    run.finish("/net/b")
    assert run.launched() == []
    assert run.state("/net/d") == S.PENDING
    run.finish("/net/c")
    assert run.launched() == ["/net/d"]


def test_B01_chain_fan_out_fan_in_runs_to_succeeded() -> None:
    run = diamond()
    run.reconcile()
    for wave in (["/net/a", "/net/e"], ["/net/b", "/net/c"], ["/net/d"]):
        assert sorted(run.launched()) == wave
        run.start_and_run(*wave)
        decision = run.finish(*wave)
    assert run.phase == RunPhase.SUCCEEDED and decision.progress == "5/5"
    assert all(run.state(f"/net/{name}") == S.SUCCEEDED for name in "abcde")
    assert [e.reason for e in run.events()] == ["RunSucceeded"]
    assert run.runtime.finished_at == run.now


def test_acks_follow_final_records_only() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    assert run.acks() == []
    run.finish("/net/a")
    assert [ack.key for ack in run.acks()] == [run.key("/net/a")]
    run.reconcile()  # not confirmed yet: asked again (the edge sends one ack per record)
    assert [ack.key for ack in run.acks()] == [run.key("/net/a")]
    run.record("/net/a", "exited", exit_code=0, acknowledged=True)
    run.reconcile()
    assert run.acks() == []


def test_a_record_that_ends_after_a_person_settled_the_stuck_job_is_acknowledged() -> None:
    """Overridden while Stuck, the job's state is the person's; the agent's late record of it is
    still acknowledged, so the agent does not keep reporting it as news."""
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    run.advance(run.policy.heartbeat_deadline_seconds + 1)
    run.reconcile()
    assert run.state("/net/a") == S.STUCK
    run.override("/net/a", S.SUCCEEDED)
    assert run.acks() == []  # nothing ended on the agent yet
    run.exited("/net/a", 3)
    run.reconcile()
    assert [ack.key for ack in run.acks()] == [run.key("/net/a")]
    assert run.state("/net/a") == S.SUCCEEDED  # the person's word stands


def test_sub_jobnet_starts_as_a_unit_after_its_own_after() -> None:
    run = with_sub()
    run.reconcile()
    assert run.launched() == ["/nightly/extract"]
    assert run.state("/nightly/load") == S.PENDING
    run.start_and_run("/nightly/extract")
    run.finish("/nightly/extract")
    assert run.launched() == ["/nightly/load/s1", "/nightly/load/s3"]
    assert run.state("/nightly/load") == S.RUNNING


def test_sub_jobnet_succeeds_when_all_children_succeeded_then_its_downstream_runs() -> None:
    run = with_sub()
    run.reconcile()
    run.start_and_run("/nightly/extract")
    run.finish("/nightly/extract")
    run.start_and_run("/nightly/load/s1", "/nightly/load/s3")
    run.finish("/nightly/load/s1", "/nightly/load/s3")
    run.start_and_run("/nightly/load/s2")
    assert run.state("/nightly/load") == S.RUNNING
    run.finish("/nightly/load/s2")
    assert run.state("/nightly/load") == S.SUCCEEDED
    assert run.launched() == ["/nightly/report"]


def test_sub_jobnet_fails_only_when_nothing_runs_under_it_and_its_downstream_is_skipped() -> None:
    run = with_sub()
    run.reconcile()
    run.start_and_run("/nightly/extract")
    run.finish("/nightly/extract")
    run.start_and_run("/nightly/load/s1", "/nightly/load/s3")
    run.finish("/nightly/load/s1", code=1)
    assert run.state("/nightly/load/s2") == S.SKIPPED
    assert run.state("/nightly/load") == S.RUNNING  # s3 still runs under it
    assert run.state("/nightly/report") == S.PENDING
    run.finish("/nightly/load/s3")
    assert run.state("/nightly/load") == S.FAILED
    assert run.state("/nightly/report") == S.SKIPPED
    assert run.reason("/nightly/report") == "UpstreamNotSucceeded"
    assert "upstream /nightly/load is Failed" in (run.runtime.jobs["/nightly/report"].message or "")
    # finally runs whatever the outcome; the run ends Failed once nothing runs.
    assert run.launched() == ["/nightly/notify"]
    assert run.phase == RunPhase.RUNNING
    run.start_and_run("/nightly/notify")
    run.finish("/nightly/notify")
    assert run.phase == RunPhase.FAILED
    assert run.events("JobFailed")[0].path == "/nightly/load/s1"
    assert run.events("RunFailed")


def test_failed_job_skips_its_downstream_but_independent_branches_continue() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a", "/net/e")
    run.finish("/net/a", code=7)
    assert {p: run.state(p) for p in ("/net/b", "/net/c", "/net/d")} == {
        "/net/b": S.SKIPPED,
        "/net/c": S.SKIPPED,
        "/net/d": S.SKIPPED,
    }
    assert run.phase == RunPhase.RUNNING  # e still runs
    run.finish("/net/e")
    assert run.phase == RunPhase.FAILED
    assert run.runtime.jobs["/net/a"].exit_code == 7


def test_finally_jobs_wait_for_every_normal_job_even_a_stuck_one() -> None:
    run = with_sub()
    run.reconcile()
    run.deliver_launch("/nightly/extract", "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert run.state("/nightly/extract") == S.STUCK
    assert run.state("/nightly/notify") == S.PENDING
    assert run.phase == RunPhase.STUCK


def test_finally_jobs_may_depend_on_each_other() -> None:
    run = Run(graph("n", n={"jobs": [job("a")], "finally": [job("f1"), job("f2", "f1")]}))
    run.reconcile()
    run.start_and_run("/n/a")
    run.finish("/n/a", code=1)
    assert run.launched() == ["/n/f1"]
    run.start_and_run("/n/f1")
    run.finish("/n/f1")
    assert run.launched() == ["/n/f2"]


def test_progress_counts_finished_jobs_over_all_jobs() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a", "/net/e")
    decision = run.finish("/net/a", "/net/e")
    assert decision.progress == "2/5"


def test_reconcile_is_deterministic_and_does_not_mutate_its_input() -> None:
    run = diamond()
    run.reconcile()
    before = run.runtime.model_copy(deep=True)
    facts = AgentFacts(heartbeats={HOST_ID: run.now})
    first = reconcile(run.graph, run.runtime, facts, run.policy, run.now + 1)
    second = reconcile(run.graph, run.runtime, facts, run.policy, run.now + 1)
    assert first == second
    assert run.runtime == before


def test_runtime_round_trips_through_json_so_status_can_hold_it() -> None:
    run = with_sub()
    run.reconcile()
    run.deliver_launch("/nightly/extract", "unknown", error_code="ConnectionLost")
    run.reconcile()
    restored = RunRuntime.model_validate_json(run.runtime.model_dump_json())
    assert restored == run.runtime


def test_only_changed_jobs_are_reported_for_the_status_patch() -> None:
    run = diamond()
    run.reconcile()
    assert run.last.changed == {"/net/a", "/net/e"}
    run.beat()
    run.advance(1)
    assert run.reconcile().changed == frozenset()


# ---------------------------------------------------------------- agent-reported failures


@pytest.mark.parametrize(("scenario", "reason"), [("B04", "ScriptNotFound"), ("B05", "PermissionDenied")])
def test_B04_B05_failed_to_start(scenario: str, reason: str) -> None:
    run = diamond()
    run.reconcile()
    run.deliver_launch("/net/a", state="failedToStart", reason=reason, message="cannot execute /opt/a.sh")
    run.reconcile()
    assert run.state("/net/a") == S.FAILED
    assert run.reason("/net/a") == reason
    [event] = run.events("JobFailed")
    assert event.type == "Warning" and reason in event.message and event.path == "/net/a"


# ---------------------------------------------------------------- dispatch failures


@pytest.mark.parametrize(
    ("scenario", "code"),
    [("B06", "HostUnreachable"), ("B07", "AuthenticationFailed"), ("B08", "HostKeyMismatch")],
)
def test_B06_B07_B08_certain_delivery_failure_fails_the_job_with_that_reason(scenario: str, code: str) -> None:
    run = diamond()
    run.policy = NO_DEFAULT_RETRY
    run.reconcile()
    run.deliver_launch("/net/a", "notDelivered", error_code=code)
    run.reconcile()
    assert run.state("/net/a") == S.FAILED
    assert run.reason("/net/a") == code
    assert any(code in e.message for e in run.events("JobFailed"))


def test_certain_delivery_failure_is_retried_with_the_same_key_after_the_interval() -> None:
    run = Run(graph("n", n={"jobs": [job("a")], "retry": {"dispatchAttempts": 3, "intervalSeconds": 5}}))
    run.policy = NO_DEFAULT_RETRY
    run.reconcile()
    run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
    decision = run.reconcile()
    assert run.launched() == [] and decision.next_wakeup_at == run.now + 5
    run.advance(5)
    run.reconcile()
    assert run.launched() == ["/n/a"]
    run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
    run.advance(5)
    run.reconcile()
    run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
    run.advance(5)
    run.reconcile()
    assert {launch.key for launch in run.launches()} == {run.key("/n/a", 1)}
    assert len(run.launches()) == 3
    assert run.state("/n/a") == S.FAILED and run.reason("/n/a") == "HostUnreachable"
    assert "after 3 attempt(s)" in (run.runtime.jobs["/n/a"].message or "")
    assert len(run.events("DeliveryRetried")) == 2


def test_an_unreachable_host_is_retried_by_default_with_backoff_for_the_window_then_fails() -> None:
    run = Run(
        graph("n", n={"jobs": [job("a")]}),
        SchedulerPolicy(
            launch_retry_window_seconds=20, launch_retry_backoff_min_seconds=1, launch_retry_backoff_max_seconds=8
        ),
    )
    run.reconcile()
    first = run.now
    tries = [run.now]
    for _ in range(20):
        run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
        decision = run.reconcile()
        if run.state("/n/a") != S.STARTING or decision.next_wakeup_at is None:
            break
        run.now = decision.next_wakeup_at
        run.reconcile()
        assert run.launched() == ["/n/a"]
        tries.append(run.now)
    assert [later - earlier for earlier, later in zip(tries, tries[1:], strict=False)] == [1, 2, 4, 8]
    assert tries[-1] - first <= 20
    assert {launch.key for launch in run.launches()} == {run.key("/n/a", 1)}
    assert run.state("/n/a") == S.FAILED and run.reason("/n/a") == "HostUnreachable"
    assert "after 5 attempt(s)" in (run.runtime.jobs["/n/a"].message or "")
    [retrying] = run.events("LaunchRetrying")  # one Event for the whole window
    assert "never left" in retrying.message and "20s" in retrying.message


def test_a_host_back_within_the_window_runs_the_job_once() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}))
    run.reconcile()
    run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
    decision = run.reconcile()
    assert decision.next_wakeup_at == run.now + run.policy.launch_retry_backoff_min_seconds
    run.advance(run.policy.launch_retry_backoff_min_seconds)
    run.reconcile()
    run.start_and_run("/n/a")
    run.finish("/n/a")
    assert run.phase == RunPhase.SUCCEEDED and len(run.launches()) == 2
    assert {launch.key for launch in run.launches()} == {run.key("/n/a", 1)}


@pytest.mark.parametrize("code", ["AuthenticationFailed", "HostKeyMismatch"])
def test_credentials_and_host_key_failures_are_not_retried_by_default(code: str) -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}))
    run.reconcile()
    run.deliver_launch("/n/a", "notDelivered", error_code=code)
    run.reconcile()
    assert run.state("/n/a") == S.FAILED and run.reason("/n/a") == code and not run.events("LaunchRetrying")


def test_a_launch_that_may_have_left_is_not_retried_by_the_window() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}))
    run.reconcile()
    run.deliver_launch("/n/a", "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert run.state("/n/a") == S.STUCK and not run.events("LaunchRetrying")


def test_a_delivery_without_any_answer_counts_as_outcome_unknown() -> None:
    run = diamond()
    run.reconcile()
    run.advance(run.policy.dispatch_timeout_seconds + 1)
    run.reconcile()
    assert run.state("/net/a") == S.STUCK and run.reason("/net/a") == "LaunchOutcomeUnknown"


def test_a_launch_queued_in_the_operator_past_the_dispatch_timeout_is_not_unanswered() -> None:
    run = diamond()
    run.reconcile()
    run.queue_launch("/net/a", "/net/e")
    run.advance(run.policy.dispatch_timeout_seconds * 3)
    decision = run.reconcile()
    assert run.state("/net/a") == S.STARTING and run.state("/net/e") == S.STARTING
    assert run.launched() == [] and run.events("DeliveryRetried") == [] and run.events("JobStuck") == []
    # A backstop look later; the edge's result of the launch wakes the run before that.
    assert decision.next_wakeup_at == run.now + run.policy.dispatch_timeout_seconds


def test_the_dispatch_timeout_of_a_launch_counts_from_its_send() -> None:
    run = diamond()
    run.reconcile()
    run.queue_launch("/net/a")
    run.advance(run.policy.dispatch_timeout_seconds + 5)
    run.send_launch("/net/a")
    sent = run.now
    run.advance(run.policy.dispatch_timeout_seconds - 1)
    decision = run.reconcile()
    assert run.state("/net/a") == S.STARTING
    assert decision.next_wakeup_at == sent + run.policy.dispatch_timeout_seconds
    run.advance(1)
    run.reconcile()
    assert run.state("/net/a") == S.STUCK and run.reason("/net/a") == "LaunchOutcomeUnknown"


def test_a_send_time_before_the_decision_never_shortens_the_timeout() -> None:
    """A send time left over from an earlier try of the same key proves nothing about this one."""
    run = Run(graph("n", n={"jobs": [job("a")], "retry": {"dispatchAttempts": 2, "intervalSeconds": 1}}))
    run.reconcile()
    run.send_launch("/n/a")
    run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
    run.advance(1)
    run.reconcile()
    assert run.launched() == ["/n/a"]
    retried_at = run.now
    run.advance(run.policy.dispatch_timeout_seconds - 0.5)
    run.reconcile()
    assert (
        run.state("/n/a") == S.STARTING and run.last.next_wakeup_at == retried_at + run.policy.dispatch_timeout_seconds
    )


def test_stale_delivery_results_of_an_earlier_attempt_are_ignored() -> None:
    run = diamond()
    run.reconcile()
    run.deliver_launch("/net/a", "unknown")
    run.reconcile()
    run.override_ready_fenced("/net/a")
    assert run.runtime.jobs["/net/a"].attempt == 2
    run.deliver_launch("/net/a", "notDelivered", error_code="HostUnreachable")
    stale = run.deliveries[-1].model_copy(update={"key": run.key("/net/a", 1)})
    run.deliveries[-1] = stale
    run.reconcile()
    assert run.state("/net/a") == S.STARTING


# ---------------------------------------------------------------- timeouts


def test_B09_timeout_kills_with_reason_timeout_and_fails_the_job_timed_out() -> None:
    run = Run(graph("n", n={"jobs": [job("slow", timeoutSeconds=60), job("next", "slow")]}))
    run.reconcile()
    run.start_and_run("/n/slow")
    assert run.last.next_wakeup_at is not None and run.last.next_wakeup_at <= run.now + 60
    run.advance(59)
    run.beat()
    run.reconcile()
    assert run.kills() == []
    run.advance(1)
    run.beat()
    run.reconcile()
    [kill] = run.kills()
    assert kill.reason == "timeout" and kill.key == run.key("/n/slow")
    assert run.state("/n/slow") == S.STOPPING
    assert run.events("JobTimedOut")[0].type == "Warning"
    run.deliver_kill("/n/slow", state="killed", signal=15)
    run.reconcile()
    assert run.state("/n/slow") == S.FAILED and run.reason("/n/slow") == "TimedOut"
    assert run.state("/n/next") == S.SKIPPED
    assert run.phase == RunPhase.FAILED


def test_agent_enforced_timeout_is_failed_timed_out_too() -> None:
    run = Run(graph("n", n={"jobs": [job("slow", timeoutSeconds=60)]}))
    run.reconcile()
    run.start_and_run("/n/slow")
    run.record("/n/slow", "timedOut", reason="TimedOut", signal=15)
    run.beat()
    run.reconcile()
    assert run.state("/n/slow") == S.FAILED and run.reason("/n/slow") == "TimedOut"


# ---------------------------------------------------------------- heartbeats


def test_heartbeat_lost_past_the_deadline_makes_a_running_job_stuck() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    run.advance(30)
    run.reconcile()
    assert run.state("/net/a") == S.RUNNING
    run.advance(1)
    run.reconcile()
    assert run.state("/net/a") == S.STUCK and run.reason("/net/a") == "HeartbeatLost"
    assert run.events("JobStuck")[0].type == "Warning"


def test_running_job_the_agent_no_longer_knows_is_stuck_agent_lost() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    del run.records[run.key("/net/a").text()]
    run.absent.add(run.key("/net/a").text())
    run.reconcile()
    assert run.state("/net/a") == S.STUCK and run.reason("/net/a") == "AgentLost"
    run.reconcile()
    assert len(run.events("JobStuck")) == 1


def test_a_job_stuck_for_its_heartbeat_the_agent_no_longer_knows_is_refined_to_agent_lost() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    run.advance(run.policy.heartbeat_deadline_seconds + 1)
    run.reconcile()
    assert run.reason("/net/a") == "HeartbeatLost"
    del run.records[run.key("/net/a").text()]
    run.absent.add(run.key("/net/a").text())
    run.beat()
    run.reconcile()
    assert run.state("/net/a") == S.STUCK and run.reason("/net/a") == "AgentLost"


_KILL = Dispatch(op="kill", attempts_used=1, last_attempt_at=1000.0)


@pytest.mark.parametrize(
    ("job_runtime", "may_have_lost"),
    [
        (JobRuntime(state=S.RUNNING, attempt=1, pid=42, started_at=1.0), True),
        (JobRuntime(state=S.STUCK, attempt=1, reason="HeartbeatLost", pid=42, started_at=1.0), True),
        (JobRuntime(state=S.STUCK, attempt=1, reason="LaunchOutcomeUnknown"), False),
        (JobRuntime(state=S.STARTING, attempt=1), False),
        # Stopping: the agent confirmed the attempt (running, or it answered the kill) ...
        (JobRuntime(state=S.STOPPING, attempt=1, pid=42, started_at=1.0), True),
        (JobRuntime(state=S.STOPPING, attempt=1, pid=42, started_at=1.0, dispatch=_KILL), True),
        (JobRuntime(state=S.STOPPING, attempt=1, kill_reason="stop"), True),
        # ... or not: stopped while its launch was unconfirmed, the kill is on its way.
        (JobRuntime(state=S.STOPPING, attempt=1, kill_reason="stop", dispatch=_KILL), False),
    ],
)
def test_only_a_job_the_agent_confirmed_may_have_been_lost_by_it(job_runtime: JobRuntime, may_have_lost: bool) -> None:
    """The keys a new channel's ``list`` checks (kube/agentlost.py) and the jobs an absent key
    makes Stuck AgentLost: a job stopped while its launch was unconfirmed is not one of them (its
    launch may never have arrived; the kill's answer, fenced or found, settles it)."""
    assert agent_may_have_lost(job_runtime) is may_have_lost


def test_a_job_stopped_while_launching_whose_key_the_agent_lacks_is_not_agent_lost() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}), NO_DEFAULT_RETRY)
    run.reconcile()
    run.stop("/")
    run.deliver_launch("/n/a", "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert run.state("/n/a") == S.STOPPING and not agent_may_have_lost(run.runtime.jobs["/n/a"])
    run.absent.add(run.key("/n/a").text())  # a new channel's list: the launch never arrived
    run.reconcile()
    assert run.state("/n/a") == S.STOPPING and not run.events("JobStuck")
    run.deliver_kill("/n/a", state="failedToStart")  # the kill's answer: fenced, never started
    run.reconcile()
    assert (run.state("/n/a"), run.reason("/n/a")) == (S.STOPPED, "StopRequested")


# ---------------------------------------------------------------- overrides


def test_override_to_ready_reruns_as_the_next_attempt_and_unskips_downstream() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a", "/net/e")
    run.finish("/net/a", "/net/e", code=1)
    assert run.phase == RunPhase.FAILED and run.state("/net/b") == S.SKIPPED
    run.override("/net/a", S.READY)
    [launch] = run.launches()[-1:]
    assert launch.key.attempt == 2 and launch.path == "/net/a"
    assert run.state("/net/b") == S.PENDING
    assert run.phase == RunPhase.RUNNING and run.runtime.finished_at is None
    [settlement] = run.runtime.settlements
    assert (settlement.from_state, settlement.to_state, settlement.by) == (S.FAILED, S.READY, "alice")
    assert run.events("Overridden")[0].path == "/net/a"


def test_each_re_run_keeps_how_the_earlier_attempt_ended_bounded_with_a_count_of_the_dropped() -> None:
    run = diamond()
    run.reconcile()
    for attempt in range(1, ATTEMPT_HISTORY_MAX + 3):
        run.start_and_run("/net/a")
        run.finish("/net/a", code=attempt)
        run.override("/net/a", S.READY, by=f"person{attempt}")
    job = run.runtime.jobs["/net/a"]
    assert job.attempt == ATTEMPT_HISTORY_MAX + 3 and job.state == S.STARTING
    assert job.pid is None and job.exit_code is None  # the current attempt starts afresh
    assert [e.attempt for e in job.earlier] == list(range(3, ATTEMPT_HISTORY_MAX + 3))
    assert job.earlier_dropped == 2
    last = job.earlier[-1]
    assert (last.state, last.reason, last.exit_code, last.host) == (S.FAILED, "NonZeroExit", last.attempt, HOST_ID)
    assert last.rerun_by == f"person{last.attempt}" and last.rerun_at == run.now
    assert last.started_at is not None and last.finished_at is not None
    assert run.state("/net/b") == S.PENDING


def test_override_failed_to_succeeded_bypasses_it_and_downstream_runs() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    run.finish("/net/a", code=1)
    run.override("/net/a", S.SUCCEEDED)
    assert run.launched() == ["/net/b", "/net/c"]
    assert run.reason("/net/a") == "Overridden"


def test_illegal_override_is_refused_with_an_event_naming_the_state() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    run.override("/net/a", S.SUCCEEDED)
    assert run.state("/net/a") == S.RUNNING
    [event] = run.events("OverrideRejected")
    assert event.type == "Warning" and "/net/a is Running" in event.message
    assert run.runtime.settlements == ()


def test_override_of_a_sub_jobnet_settles_every_stuck_job_under_it() -> None:
    run = with_sub()
    run.reconcile()
    run.start_and_run("/nightly/extract")
    run.finish("/nightly/extract")
    run.deliver_launch("/nightly/load/s1", "unknown")
    run.deliver_launch("/nightly/load/s3", "unknown")
    run.reconcile()
    assert run.state("/nightly/load") == S.STUCK and run.phase == RunPhase.STUCK
    run.override("/nightly/load", S.SUCCEEDED)
    assert run.state("/nightly/load/s1") == S.SUCCEEDED and run.state("/nightly/load/s3") == S.SUCCEEDED
    assert run.launched() == ["/nightly/load/s2"]
    assert [s.path for s in run.runtime.settlements] == ["/nightly/load/s1", "/nightly/load/s3"]


def test_override_requests_are_revalidated_when_applied() -> None:
    run = diamond()
    run.reconcile()
    run.reconcile(overrides=[OverrideRequest(path="/net/zzz", state=S.FAILED)])
    assert "unknown path '/net/zzz'" in run.events("OverrideRejected")[0].message


# ---------------------------------------------------------------- phase


def test_run_is_stuck_only_when_nothing_else_can_progress() -> None:
    run = diamond()
    run.reconcile()
    run.deliver_launch("/net/a", "unknown")
    run.start_and_run("/net/e")
    assert run.state("/net/a") == S.STUCK
    assert run.phase == RunPhase.RUNNING
    run.finish("/net/e")
    assert run.phase == RunPhase.STUCK
    assert run.events("RunStuck")[0].type == "Warning"


def test_runtime_entries_default_to_pending() -> None:
    run = diamond()
    run.runtime = RunRuntime(run_uid=RUN_UID, jobs={"/net/a": JobRuntime(state=S.SUCCEEDED, attempt=1)})
    run.reconcile()
    assert sorted(run.launched()) == ["/net/b", "/net/c", "/net/e"]


def test_stuck_resolution_policy_nearest_jobnet_wins() -> None:
    run = with_sub(stuckResolution="Manual")  # loadnet Manual; nightly keeps the default, Auto
    run.reconcile()
    run.deliver_launch("/nightly/extract", "unknown")
    run.reconcile()
    run.exited("/nightly/extract")
    run.advance(1)
    run.beat()
    run.reconcile()
    assert run.state("/nightly/extract") == S.SUCCEEDED  # Auto at the root
    run.deliver_launch("/nightly/load/s1", "unknown")
    run.start_and_run("/nightly/load/s3")
    run.exited("/nightly/load/s1")
    run.advance(1)
    run.beat()
    run.reconcile()
    assert run.state("/nightly/load/s1") == S.STUCK  # Manual inside loadnet
    assert run.runtime.settlements[0].by == AUTO_RESOLVER


def test_job_keys_in_lookups_match_the_protocol_text_form() -> None:
    run = diamond()
    run.reconcile()
    launch = run.launches()[0]
    assert launch.key.text() == f"{RUN_UID}:/net/a#1"
    run.records[launch.key.text()] = run.record("/net/a", "running")
    run.beat()
    run.reconcile()
    assert run.state("/net/a") == S.RUNNING


def test_job_states_lists_every_job_pending_by_default() -> None:
    run = diamond()
    assert set(job_states(run.graph, run.runtime).values()) == {S.PENDING}
    run.reconcile()
    assert job_states(run.graph, run.runtime)["/net/a"] == S.STARTING


def test_delivery_results_must_be_consistent() -> None:
    run = diamond()
    run.reconcile()
    key = run.key("/net/a")
    with pytest.raises(ValueError, match="must carry the agent's record"):
        DeliveryResult(key=key, op="launch", outcome="delivered")
    other = run.record("/net/e", "running", attempt=1)
    with pytest.raises(ValueError, match="carries a record of"):
        DeliveryResult(key=key, op="launch", outcome="delivered", record=other)
    with pytest.raises(ValueError, match="a request that may have left is an `unknown` outcome"):
        DeliveryResult(key=key, op="kill", outcome="notDelivered", error_code="ConnectionLost")


# ---------------------------------------------------------------- annotations through reconcile


def test_annotations_are_parsed_applied_and_reported_as_consumed() -> None:
    run = diamond()
    run.reconcile()
    run.deliver_launch("/net/a", "unknown")
    run.start_and_run("/net/e")
    decision = run.reconcile()
    assert decision.consumed_annotations == ()
    decision = reconcile(
        run.graph,
        run.runtime,
        AgentFacts(heartbeats={HOST_ID: run.now}),
        run.policy,
        run.now,
        annotations={
            "jobnet.dev/override": "/net/a=succeeded,/net/b=Failed",
            "jobnet.dev/stop": "/net/e",
            "other": "x",
        },
        annotated_by="bob",
    )
    assert decision.consumed_annotations == ("jobnet.dev/stop", "jobnet.dev/override")
    assert decision.runtime.jobs["/net/a"].state == S.SUCCEEDED
    assert decision.runtime.settlements[-1].by == "bob"
    assert decision.runtime.stop_scopes == ("/net/e",)
    rejected = [a for a in decision.actions if getattr(a, "reason", None) == "OverrideRejected"]
    assert [e.message for e in rejected] == [
        (
            "jobnet.dev/override: /net/b is Pending; cannot override it to Failed "
            "(allowed: Stuck -> Failed|Ready|Stopped|Succeeded; Failed -> Ready|Succeeded)"
        )
    ]


def test_stop_annotation_applies_before_an_override_in_the_same_reconcile() -> None:
    run = diamond()
    run.reconcile()
    run.start_and_run("/net/a")
    run.finish("/net/a", code=1)
    decision = reconcile(
        run.graph,
        run.runtime,
        AgentFacts(),
        run.policy,
        run.now,
        annotations={"jobnet.dev/override": "/net/a=Ready", "jobnet.dev/stop": "/"},
    )
    assert decision.runtime.jobs["/net/a"].state == S.FAILED
    assert any(
        "cannot be re-run: it is inside /net, which was stopped" in getattr(a, "message", "") for a in decision.actions
    )


def test_bad_stop_annotation_is_an_event_and_consumed() -> None:
    run = diamond()
    decision = reconcile(
        run.graph, run.runtime, AgentFacts(), run.policy, run.now, annotations={"jobnet.dev/stop": "/net/zz"}
    )
    assert decision.consumed_annotations == ("jobnet.dev/stop",)
    assert decision.runtime.stop_scopes == ()
    [event] = [a for a in decision.actions if getattr(a, "reason", None) == "StopRejected"]
    assert event.type == "Warning" and "unknown path '/net/zz'" in event.message
