"""The failure scenarios of /work/shared/scenarios.md (C, D, E, F) at the level of the pure
scheduler: the facts the edge would observe go in, the decisions must be exactly right.
The end-to-end versions (real operator, sshd, agent) live in tests/scenarios/."""

from __future__ import annotations

from jobnet.core.scheduler import AUTO_RESOLVER, SchedulerPolicy
from jobnet.core.states import JobState, RunPhase
from tests.support.scheduler_sim import Run, graph, job, sub

S = JobState


def chain(retry: dict[str, float] | None = None, resolution: str = "Auto", **first: object) -> Run:
    """first -> second; the run's JobNet may set retries and stuckResolution."""
    spec: dict[str, object] = {"jobs": [job("first", **first), job("second", "first")], "stuckResolution": resolution}
    if retry:
        spec["retry"] = retry
    # stuckResolution travels with the run graph (from the JobNet spec).
    policy = SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20)
    return Run(graph("n", n=spec), policy)


def cut_during_launch(
    retry: dict[str, float] | None = None, resolution: str = "Auto", error_code: str | None = None
) -> Run:
    """:func:`chain` whose launch of first left, then the connection broke: outcome unknown."""
    run = chain(retry, resolution)
    run.reconcile()
    run.deliver_launch("/n/first", "unknown", error_code=error_code)
    run.reconcile()
    return run


def first_running(retry: dict[str, float] | None = None, resolution: str = "Auto", **first: object) -> Run:
    """:func:`chain` with first launched and running."""
    run = chain(retry, resolution, **first)
    run.reconcile()
    run.start_and_run("/n/first")
    return run


def nested() -> Run:
    """extract -> load (sub-jobnet: s1 -> s2) -> report, all on one VM."""
    return Run(
        graph(
            "n",
            n={"jobs": [job("extract"), sub("load", "ld", "extract"), job("report", "load")]},
            ld={"jobs": [job("s1"), job("s2", "s1")]},
        )
    )


def launch_keys(run: Run, path: str) -> list[str]:
    return [launch.key.text() for launch in run.launches() if launch.path == path]


def run_to_end(run: Run, path: str = "/n/second") -> None:
    run.start_and_run(path)
    run.finish(path)


# ---------------------------------------------------------------- C: network cut during dispatch


def test_C01_cut_before_launch_no_retry_is_stuck_then_annotated_ready_runs_once_more() -> None:
    run = cut_during_launch(error_code="ConnectionLost")
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "LaunchOutcomeUnknown"
    assert "ConnectionLost" in run.events("JobStuck")[0].message
    assert run.phase == RunPhase.STUCK
    # The agent (its journal) never saw the launch: nothing to resolve automatically.
    run.absent.add(run.key("/n/first").text())
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    run.override_ready_fenced("/n/first")
    assert launch_keys(run, "/n/first") == [f"{run.key('/n/first', 1)}", f"{run.key('/n/first', 2)}"]
    run.start_and_run("/n/first")
    run.finish("/n/first")
    run_to_end(run)
    assert run.phase == RunPhase.SUCCEEDED


def test_C02_cut_after_start_exit_0_annotated_succeeded_downstream_runs() -> None:
    run = cut_during_launch(resolution="Manual", error_code="ConnectionLost")
    assert run.state("/n/first") == S.STUCK
    run.override("/n/first", S.SUCCEEDED)
    assert run.launched() == ["/n/second"]
    run_to_end(run)
    assert run.phase == RunPhase.SUCCEEDED
    assert len(launch_keys(run, "/n/first")) == 1
    [settlement] = run.runtime.settlements
    assert (settlement.from_state, settlement.to_state, settlement.by) == (S.STUCK, S.SUCCEEDED, "alice")


def test_C02_automatic_resolution_from_the_journal_when_the_network_returns() -> None:
    run = cut_during_launch(error_code="ConnectionLost")
    assert run.state("/n/first") == S.STUCK
    run.advance(10)
    run.exited("/n/first", 0)  # what the agent's journal says once reachable again
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.SUCCEEDED
    assert "resolved automatically" in (run.runtime.jobs["/n/first"].message or "")
    assert run.events("StuckResolved")[0].path == "/n/first"
    assert run.runtime.settlements[0].by == AUTO_RESOLVER
    assert run.launched() == ["/n/second"]
    run_to_end(run)
    assert run.phase == RunPhase.SUCCEEDED
    assert len(launch_keys(run, "/n/first")) == 1  # no second launch


def test_C02_manual_resolution_waits_but_shows_what_the_agent_knows() -> None:
    run = cut_during_launch(resolution="Manual")
    run.advance(10)
    run.exited("/n/first", 0)
    run.beat()
    run.reconcile()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    assert "now known: the agent reports the job exited with code 0" in (run.runtime.jobs["/n/first"].message or "")
    assert len(run.events("StuckOutcomeKnown")) == 1
    run.override("/n/first", S.SUCCEEDED)
    assert run.launched() == ["/n/second"]


def test_C03_cut_after_start_exit_nonzero_annotated_failed_run_fails() -> None:
    run = cut_during_launch(resolution="Manual")
    run.override("/n/first", S.FAILED)
    assert run.state("/n/second") == S.SKIPPED
    assert run.phase == RunPhase.FAILED


def test_C03_automatic_resolution_to_failed() -> None:
    run = cut_during_launch()
    run.advance(5)
    run.exited("/n/first", 4)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.FAILED and run.runtime.jobs["/n/first"].exit_code == 4
    assert run.phase == RunPhase.FAILED


def test_C04_cut_before_launch_with_retries_runs_once_with_the_same_key() -> None:
    run = cut_during_launch(retry={"dispatchAttempts": 3, "intervalSeconds": 2}, error_code="ConnectionLost")
    assert run.state("/n/first") == S.STARTING
    run.advance(2)
    run.reconcile()
    assert run.events("DeliveryRetried")[0].message.count("ConnectionLost") == 1
    run.deliver_launch("/n/first")  # reconnected, delivered
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.RUNNING
    run.finish("/n/first")
    run_to_end(run)
    assert run.phase == RunPhase.SUCCEEDED
    keys = launch_keys(run, "/n/first")
    assert len(keys) == 2 and len(set(keys)) == 1


def test_C05_cut_after_start_retried_launch_is_deduplicated() -> None:
    run = cut_during_launch(retry={"dispatchAttempts": 3, "intervalSeconds": 2})
    run.advance(2)
    run.reconcile()
    run.deliver_launch("/n/first", deduplicated=True)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.RUNNING
    assert "not started again" in run.events("LaunchDeduplicated")[0].message
    run.finish("/n/first")
    assert run.state("/n/first") == S.SUCCEEDED
    assert len(set(launch_keys(run, "/n/first"))) == 1


def test_C_retries_exhausted_after_an_unknown_then_certain_failure_is_still_stuck() -> None:
    """Once any delivery may have arrived, giving up cannot claim the job never ran."""
    run = cut_during_launch(retry={"dispatchAttempts": 2, "intervalSeconds": 1})
    run.advance(1)
    run.reconcile()
    run.deliver_launch("/n/first", "notDelivered", error_code="HostUnreachable")
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "LaunchOutcomeUnknown"


# ---------------------------------------------------------------- D: link down while a job runs


def test_D01_link_down_and_back_within_the_deadline_job_succeeds() -> None:
    run = first_running()
    run.advance(25)  # no heartbeats meanwhile
    run.reconcile()
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.RUNNING
    run.finish("/n/first")
    assert run.state("/n/first") == S.SUCCEEDED


def test_D02_link_down_past_the_deadline_stuck_then_result_collected() -> None:
    run = first_running()
    run.advance(31)
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "HeartbeatLost"
    # The job ended meanwhile; while the link is down the old `running` record proves nothing.
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    run.advance(60)
    run.exited("/n/first", 0)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.SUCCEEDED
    run_to_end(run)
    assert run.phase == RunPhase.SUCCEEDED


def test_D02_heartbeat_back_while_the_job_still_runs_returns_to_running() -> None:
    run = first_running()
    run.advance(31)
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    run.advance(1)
    run.reconcile()
    assert run.state("/n/first") == S.STUCK  # stale running record, no heartbeat since
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.RUNNING


def test_D02_annotation_path() -> None:
    run = first_running(resolution="Manual")
    run.advance(31)
    run.reconcile()
    run.override("/n/first", S.SUCCEEDED)
    assert run.launched() == ["/n/second"]


def test_D03_link_down_job_exits_nonzero_ends_failed() -> None:
    run = first_running()
    run.advance(31)
    run.reconcile()
    run.advance(5)
    run.exited("/n/first", 2)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.FAILED and run.phase == RunPhase.FAILED


def test_D04_operator_restart_from_persisted_runtime_launches_nothing_twice() -> None:
    run = nested()
    run.reconcile()
    run.start_and_run("/n/extract")
    run.finish("/n/extract")
    # The operator dies right after persisting the decision that launched s1: the launch's
    # delivery result is lost with it. Meanwhile s1 ran and finished on the VM.
    assert run.launched() == ["/n/load/s1"]
    persisted = run.runtime.model_dump_json()
    run.exited("/n/load/s1", 0)
    restarted = Run(run.graph, run.policy, now=run.now + 40)
    restarted.runtime = type(run.runtime).model_validate_json(persisted)
    restarted.records = dict(run.records)  # the agent's journal, listed on start
    restarted.seq = run.seq
    restarted.beat()
    restarted.reconcile()
    assert restarted.state("/n/load/s1") == S.SUCCEEDED
    assert restarted.launched() == ["/n/load/s2"]
    restarted.start_and_run("/n/load/s2")
    restarted.finish("/n/load/s2")
    restarted.start_and_run("/n/report")
    restarted.finish("/n/report")
    assert restarted.phase == RunPhase.SUCCEEDED
    all_launches = run.launches() + restarted.launches()
    assert len({launch.key.text() for launch in all_launches}) == len(all_launches) == 4


def test_D04_restart_without_any_journal_entry_retries_the_in_flight_launch_with_the_same_key() -> None:
    run = chain(retry={"dispatchAttempts": 2, "intervalSeconds": 1})
    run.reconcile()
    persisted = run.runtime
    restarted = Run(run.graph, run.policy, now=run.now + run.policy.dispatch_timeout_seconds + 1)
    restarted.runtime = persisted
    restarted.reconcile()
    assert [launch.key for launch in restarted.launches()] == [run.launches()[0].key]


# ---------------------------------------------------------------- E: VM or agent failure


def test_E01_vm_down_mid_job_stuck_then_resolved_failed_host_rebooted() -> None:
    run = first_running()
    run.advance(31)
    run.reconcile()
    assert run.reason("/n/first") == "HeartbeatLost"
    run.advance(30)
    run.record("/n/first", "interrupted", reason="HostRebooted", message="host rebooted while the job ran")
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.FAILED and run.reason("/n/first") == "HostRebooted"
    assert run.events("StuckResolved")
    assert run.phase == RunPhase.FAILED


def test_E01_annotation_path() -> None:
    run = first_running(resolution="Manual")
    run.advance(31)
    run.reconcile()
    run.override("/n/first", S.FAILED)
    assert run.phase == RunPhase.FAILED


def test_E02_supervisor_killed_mid_job_is_stuck_then_annotated_failed() -> None:
    run = first_running()
    run.advance(5)
    run.record("/n/first", "lost", reason="SupervisorLost", message="its supervisor died mid-run")
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "SupervisorLost"
    assert "its supervisor died mid-run" in run.events("JobStuck")[0].message
    run.advance(60)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK  # Auto cannot resolve what nobody knows
    assert run.phase == RunPhase.STUCK
    run.override("/n/first", S.FAILED)
    assert run.phase == RunPhase.FAILED


def test_E02_wrapper_recorded_exit_code_is_resolved_automatically_under_auto() -> None:
    run = first_running()
    run.advance(5)
    run.record("/n/first", "lost", reason="SupervisorLost", exit_code=0, message="ended unsupervised (code 0)")
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.SUCCEEDED and run.runtime.jobs["/n/first"].exit_code == 0
    assert "resolved automatically" in (run.runtime.jobs["/n/first"].message or "")
    [settlement] = run.runtime.settlements
    assert (settlement.from_state, settlement.to_state, settlement.by) == (S.STUCK, S.SUCCEEDED, AUTO_RESOLVER)
    assert len(run.events("JobStuck")) == 1 and len(run.events("StuckResolved")) == 1
    assert run.launched() == ["/n/second"]


def test_E02_wrapper_recorded_non_zero_code_resolves_failed() -> None:
    run = first_running()
    run.record("/n/first", "lost", reason="SupervisorLost", exit_code=3)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.FAILED and run.reason("/n/first") == "NonZeroExit"
    assert run.runtime.jobs["/n/first"].exit_code == 3


def test_E02_wrapper_recorded_exit_code_under_manual_waits_for_a_person() -> None:
    run = first_running(resolution="Manual")
    run.record("/n/first", "lost", reason="SupervisorLost", exit_code=0)
    run.beat()
    run.reconcile()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "SupervisorLost"
    assert "now known" in (run.runtime.jobs["/n/first"].message or "") and "exit code 0" in (
        run.runtime.jobs["/n/first"].message or ""
    )
    assert len(run.events("StuckOutcomeKnown")) == 1 and not run.events("StuckResolved")


def test_E02_lost_while_already_stuck_refines_the_reason() -> None:
    run = first_running()
    run.advance(31)
    run.reconcile()
    assert run.reason("/n/first") == "HeartbeatLost"
    run.record("/n/first", "lost", reason="SupervisorLost")
    run.beat()
    run.reconcile()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "SupervisorLost"
    assert len(run.events("JobStuck")) == 2


def test_E03_supervisor_died_after_exit_result_is_not_lost() -> None:
    run = first_running()
    run.advance(31)
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    run.exited("/n/first", 0)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.SUCCEEDED
    run_to_end(run)
    assert run.phase == RunPhase.SUCCEEDED


# ---------------------------------------------------------------- F: force stop


def test_F01_stop_a_running_job() -> None:
    run = first_running()
    run.stop("/n/first")
    [kill] = run.kills()
    assert (
        kill.reason == "stop"
        and kill.key == run.key("/n/first")
        and kill.grace_seconds == run.policy.kill_grace_seconds
    )
    assert run.state("/n/first") == S.STOPPING
    assert run.events("StopRequested")[0].message == "stop of /n/first requested by alice"
    run.deliver_kill("/n/first", state="killed", signal=15)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED and run.state("/n/second") == S.SKIPPED
    assert run.phase == RunPhase.STOPPED


def test_F01_stop_a_running_sub_jobnet_nothing_new_starts_under_it() -> None:
    run = nested()
    run.reconcile()
    run.start_and_run("/n/extract")
    run.finish("/n/extract")
    run.start_and_run("/n/load/s1")
    run.stop("/n/load")
    assert [k.path for k in run.kills()] == ["/n/load/s1"]
    assert run.state("/n/load/s2") == S.STOPPED
    run.deliver_kill("/n/load/s1")
    run.beat()
    run.reconcile()
    assert run.state("/n/load") == S.STOPPED and run.state("/n/report") == S.SKIPPED
    assert run.phase == RunPhase.STOPPED
    assert all(launch.path != "/n/load/s2" for launch in run.launches())


def test_F01_stop_the_whole_run_also_keeps_finally_jobs_from_starting() -> None:
    run = Run(graph("n", n={"jobs": [job("a"), job("b")], "finally": [job("cleanup")]}))
    run.reconcile()
    run.start_and_run("/n/a", "/n/b")
    run.stop("/")
    assert sorted(k.path for k in run.kills()) == ["/n/a", "/n/b"]
    run.deliver_kill("/n/a")
    run.deliver_kill("/n/b")
    run.beat()
    run.reconcile()
    assert run.state("/n/cleanup") == S.STOPPED
    assert run.phase == RunPhase.STOPPED
    assert run.events("RunStopped")


def test_stop_of_a_starting_job_waits_for_the_launch_to_be_known_then_kills() -> None:
    run = chain()
    run.reconcile()
    run.stop("/n/first")
    assert run.kills() == [] and run.state("/n/first") == S.STARTING
    run.deliver_launch("/n/first")
    run.beat()
    run.reconcile()
    assert [k.path for k in run.kills()] == ["/n/first"]


def test_kill_of_a_key_the_agent_never_saw_means_it_never_ran() -> None:
    run = cut_during_launch()
    run.stop("/n/first")
    assert [k.key for k in run.kills()] == [run.key("/n/first")]
    run.deliver_kill("/n/first", state=None)
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED
    assert "never ran" in (run.runtime.jobs["/n/first"].message or "")


def test_F02_kill_cut_before_it_reached_the_agent_stuck_then_stop_again() -> None:
    run = first_running()
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "StopOutcomeUnknown"
    # Network back, the agent's journal shows no kill: not resolved, the person stops again.
    run.advance(5)
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    run.stop("/n/first")
    [kill] = run.kills()
    assert kill.key == run.key("/n/first")
    run.deliver_kill("/n/first")
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED


def test_F03_kill_reached_the_agent_answer_lost_auto_resolved_stopped() -> None:
    run = first_running()
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    assert run.state("/n/first") == S.STUCK
    run.advance(5)
    run.record("/n/first", "killed", signal=15, reason="StopRequested", kill_requested={"reason": "stop"})
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED
    assert run.events("StuckResolved")


def test_F03_annotation_path() -> None:
    run = first_running(resolution="Manual")
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    run.override("/n/first", S.STOPPED)
    assert run.state("/n/first") == S.STOPPED and run.phase == RunPhase.STOPPED


def test_F03_kill_known_delivered_but_process_still_dying_goes_stopping() -> None:
    run = first_running()
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    run.advance(3)
    run.record("/n/first", "running", kill_requested={"reason": "stop"})
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STOPPING


def test_F04_link_down_after_kill_restored_within_retries_stopped() -> None:
    run = first_running(retry={"dispatchAttempts": 3, "intervalSeconds": 2})
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    run.advance(2)
    run.reconcile()
    [kill] = run.kills()
    assert kill.key == run.key("/n/first")
    run.deliver_kill("/n/first")
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED


def test_F05_link_down_after_kill_past_every_retry_then_resolved_when_it_returns() -> None:
    run = first_running(retry={"dispatchAttempts": 2, "intervalSeconds": 1})
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    run.advance(1)
    run.reconcile()
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "StopOutcomeUnknown"
    run.advance(60)
    run.record("/n/first", "killed", signal=15, kill_requested={"reason": "stop"})
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED


def test_F06_stopping_a_job_that_had_exited_0_keeps_success_and_downstream_starts() -> None:
    run = first_running()
    run.stop("/n/first")
    run.deliver_kill("/n/first", state="exited", exit_code=0)  # agent: kill not needed
    run.reconcile()
    assert run.state("/n/first") == S.SUCCEEDED
    assert run.launched() == ["/n/second"]
    assert run.phase == RunPhase.RUNNING


def test_F07_stopping_the_run_whose_job_had_exited_0_downstream_does_not_start() -> None:
    run = first_running()
    run.stop("/")
    run.deliver_kill("/n/first", state="exited", exit_code=0)
    run.reconcile()
    assert run.state("/n/first") == S.SUCCEEDED
    assert run.state("/n/second") == S.STOPPED
    assert run.launches()[-1].path == "/n/first"
    assert run.phase == RunPhase.STOPPED


def test_F07_stopping_a_sub_jobnet_whose_job_had_exited_0() -> None:
    run = nested()
    run.reconcile()
    run.start_and_run("/n/extract")
    run.finish("/n/extract")
    run.start_and_run("/n/load/s1")
    run.stop("/n/load")
    run.deliver_kill("/n/load/s1", state="exited", exit_code=0)
    run.reconcile()
    assert run.state("/n/load/s1") == S.SUCCEEDED
    assert run.state("/n/load/s2") == S.STOPPED
    assert run.state("/n/report") == S.SKIPPED
    assert run.phase == RunPhase.STOPPED


def test_F08_stopping_a_job_that_had_exited_nonzero_is_failed_downstream_does_not_start() -> None:
    run = first_running()
    run.stop("/n/first")
    run.deliver_kill("/n/first", state="exited", exit_code=3)
    run.reconcile()
    assert run.state("/n/first") == S.FAILED and run.state("/n/second") == S.SKIPPED
    assert run.phase == RunPhase.FAILED


def test_F09_stopping_the_run_whose_job_had_exited_nonzero_ends_failed() -> None:
    run = nested()
    run.reconcile()
    run.start_and_run("/n/extract")
    run.stop("/")
    run.deliver_kill("/n/extract", state="exited", exit_code=1)
    run.reconcile()
    assert run.state("/n/extract") == S.FAILED
    assert run.phase == RunPhase.FAILED


def test_F10_stop_while_the_vm_is_down_stuck_host_down_then_annotated_failed() -> None:
    run = first_running(resolution="Manual")
    run.advance(31)
    run.reconcile()
    assert run.reason("/n/first") == "HeartbeatLost"
    run.stop("/n/first")
    run.deliver_kill("/n/first", "notDelivered", error_code="HostUnreachable")
    run.reconcile()
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "HostDown"
    assert "HostUnreachable" in run.events("JobStuck")[-1].message
    run.override("/n/first", S.FAILED)
    assert run.phase == RunPhase.FAILED


def test_F11_kill_not_delivered_is_retried_after_the_interval_then_stopped() -> None:
    run = first_running(retry={"dispatchAttempts": 3, "intervalSeconds": 4})
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    decision = run.reconcile()
    assert decision.next_wakeup_at == run.now + 4 and run.kills() == []
    run.advance(4)
    run.reconcile()
    assert [k.key for k in run.kills()] == [run.key("/n/first")]
    run.deliver_kill("/n/first")
    run.beat()
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED


def test_F12_repeated_kill_after_it_executed_stopped_with_an_event() -> None:
    run = first_running(retry={"dispatchAttempts": 3, "intervalSeconds": 1})
    run.stop("/n/first")
    run.deliver_kill("/n/first", "unknown")
    run.reconcile()
    run.advance(1)
    run.reconcile()
    run.deliver_kill("/n/first", state="killed", signal=15)  # agent: already stopped, ignored
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED
    assert run.events("JobStopped")[0].path == "/n/first"


def test_heartbeat_policy_is_configurable() -> None:
    run = chain()
    run.policy = SchedulerPolicy(heartbeat_deadline_seconds=5)
    run.reconcile()
    run.start_and_run("/n/first")
    run.advance(6)
    run.reconcile()
    assert run.state("/n/first") == S.STUCK


def test_stop_while_a_launch_certainly_failed_stops_it_without_relaunching() -> None:
    run = chain(retry={"dispatchAttempts": 3, "intervalSeconds": 1})
    run.reconcile()
    run.deliver_launch("/n/first", "notDelivered", error_code="HostUnreachable")
    run.stop("/n/first")
    run.advance(1)
    run.reconcile()
    assert len(run.launches()) == 1
    assert run.state("/n/first") == S.STOPPED


def test_stop_while_a_launch_outcome_is_unknown_kills_by_the_same_key_instead_of_relaunching() -> None:
    run = chain(retry={"dispatchAttempts": 3, "intervalSeconds": 1})
    run.reconcile()
    run.deliver_launch("/n/first", "unknown")
    decision = run.stop("/n/first")
    assert [k.key for k in run.kills(decision)] == [run.key("/n/first")]
    run.advance(1)
    run.reconcile()
    assert len(run.launches()) == 1
    run.deliver_kill("/n/first", state=None)
    run.reconcile()
    assert run.state("/n/first") == S.STOPPED


def test_stopping_a_sub_jobnet_before_it_starts_keeps_it_pending_behind_a_stuck_upstream() -> None:
    run = nested()
    run.reconcile()
    run.stop("/n/load/s2")
    run.deliver_launch("/n/extract", "unknown")
    run.reconcile()
    assert run.state("/n/load/s2") == S.STOPPED and run.state("/n/load/s1") == S.PENDING
    assert run.state("/n/load") == S.PENDING
    assert run.phase == RunPhase.STUCK


def test_D04_restart_after_a_long_outage_gives_running_jobs_a_full_heartbeat_deadline() -> None:
    run = first_running(resolution="Manual")
    persisted = run.runtime
    restarted = Run(run.graph, run.policy, now=run.now + 600)  # operator was down 10 minutes
    restarted.runtime = persisted
    restarted.records = dict(run.records)
    restarted.watching_since = restarted.now
    restarted.reconcile()
    assert restarted.state("/n/first") == S.RUNNING  # not declared lost before we even listened
    restarted.advance(10)
    restarted.beat()
    restarted.reconcile()
    restarted.advance(31)
    restarted.reconcile()
    assert restarted.state("/n/first") == S.STUCK and restarted.reason("/n/first") == "HeartbeatLost"


def test_stopping_a_stuck_job_whose_process_already_ended_sends_no_kill() -> None:
    run = first_running()
    run.record("/n/first", "lost", reason="SupervisorLost")
    run.beat()
    run.reconcile()
    decision = run.stop("/n/first")
    assert run.kills(decision) == []
    assert run.state("/n/first") == S.STUCK and run.reason("/n/first") == "SupervisorLost"


def test_a_kill_shows_in_the_job_message_while_stopping() -> None:
    run = first_running()
    run.stop("/n/first")
    assert run.runtime.jobs["/n/first"].message == "kill requested (stop)"
