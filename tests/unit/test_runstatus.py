"""Runtime <-> JobRun status: what the operator persists is enough to resume after a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobnet.core.runstatus import (
    from_rfc3339,
    job_status,
    run_status,
    runtime_from_status,
    status_patch,
    to_rfc3339,
)
from jobnet.core.scheduler import JobRuntime
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import RUN_UID, Run, graph, job, sub

S = JobState


def busy_run() -> Run:
    """A run with a job Stuck, one Starting with a failed delivery, one Running with a timeout,
    a stop scope and an override: every kind of bookkeeping."""
    run = Run(
        graph(
            "n",
            n={
                "jobs": [
                    job("a"),
                    job("b", timeoutSeconds=60),
                    job("c", retry={"dispatchAttempts": 3, "intervalSeconds": 5}),
                    sub("s", "sn", "a"),
                ],
            },
            sn={"jobs": [job("x")]},
        )
    )
    run.reconcile()
    run.deliver_launch("/n/a", "unknown")
    run.deliver_launch("/n/b")
    run.deliver_launch("/n/c", "notDelivered", error_code="HostUnreachable")
    run.beat()
    run.reconcile()
    run.stop("/n/s")
    return run


def test_times_are_rfc3339_utc_and_round_trip() -> None:
    assert to_rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert from_rfc3339("2023-11-14T22:13:20.250Z") == 1_700_000_000.25
    assert to_rfc3339(None) is None and from_rfc3339(None) is None


def test_status_round_trips_to_the_same_runtime() -> None:
    run = busy_run()
    status = run_status(run.last)
    restored = runtime_from_status(RUN_UID, run.graph, JobRunStatus.model_validate_json(status.model_dump_json()))
    assert restored == run.runtime


def test_resuming_from_status_continues_exactly_where_it_stopped() -> None:
    run = busy_run()
    run.advance(5)
    run.beat()
    expected = run.reconcile()
    resumed = Run(run.graph, run.policy, now=run.now)
    resumed.runtime = runtime_from_status(RUN_UID, run.graph, run_status(run.decisions[-2]))
    resumed.heartbeats = dict(run.heartbeats)
    resumed.records = dict(run.records)
    got = resumed.reconcile()
    assert got.actions == expected.actions
    assert got.runtime == expected.runtime


def test_full_status_shows_jobs_jobnets_counts_overrides_and_stop_scopes() -> None:
    run = busy_run()
    run.override("/n/a", S.FAILED)
    status = run_status(run.last)
    assert status.phase == "Running"
    assert status.jobs["/n/s"].state == "Stopped" and status.jobs["/n"].state == "Running"
    assert status.jobs["/n/a"].state == "Failed" and status.jobs["/n/a"].reason == "Overridden"
    assert status.jobs["/n/b"].deadline is not None and status.jobs["/n/b"].pid is not None
    assert status.jobs["/n/c"].dispatch is not None and status.jobs["/n/c"].dispatch.last_error == "HostUnreachable"
    assert status.counts == {"Failed": 1, "Running": 1, "Starting": 1, "Stopped": 1}
    assert status.progress == "2/4"
    assert status.stop_scopes == ["/n/s"]
    assert [(o.path, o.from_state, o.to_state, o.by) for o in status.overrides] == [
        ("/n/a", "Stuck", "Failed", "alice")
    ]


def test_finished_jobs_drop_their_bookkeeping() -> None:
    entry = job_status(
        JobRuntime(state=S.SUCCEEDED, attempt=1, since=5.0, deadline=9.0, kill_reason="stop", exit_code=0)
    )
    assert (entry.since, entry.deadline, entry.kill_reason, entry.dispatch) == (None, None, None, None)
    assert entry.exit_code == 0


def test_patch_holds_only_what_changed_and_clears_stale_fields() -> None:
    run = busy_run()
    run.exited("/n/b", 0)
    run.beat()
    before = dict(run.last.jobnet_states)
    decision = run.reconcile()
    patch = status_patch(decision, before)
    assert set(patch["jobs"]) == {"/n/b"}
    assert patch["jobs"]["/n/b"]["state"] == "Succeeded"
    assert patch["jobs"]["/n/b"]["deadline"] is None  # merge patch null: removed
    assert "outputTail" not in patch["jobs"]["/n/b"]  # the edge's, never clobbered
    assert patch["phase"] == "Running" and patch["progress"] == "2/4"
    json.dumps(patch)


def test_an_older_status_without_delivery_bookkeeping_is_resumed_as_outcome_unknown() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}))
    status = JobRunStatus.model_validate(
        {"phase": "Running", "jobs": {"/n/a": {"state": "Starting", "attempt": 1, "since": to_rfc3339(run.now)}}}
    )
    run.runtime = runtime_from_status(RUN_UID, run.graph, status)
    resumed = run.reconcile()
    assert [(type(a).__name__, a.key.attempt) for a in resumed.actions] == [("Launch", 1)]  # same key again
    run.advance(run.policy.dispatch_timeout_seconds + 1)
    run.reconcile()
    assert run.state("/n/a") == S.STUCK and run.reason("/n/a") == "LaunchOutcomeUnknown"
    assert run.runtime.phase == RunPhase.STUCK


@pytest.mark.parametrize(
    ("op", "state", "action"),
    [
        ("launch", S.STARTING, "Launch"),
        ("kill", S.STOPPING, "Kill"),
        ("fence", S.STUCK, "Fence"),
    ],
)
def test_a_request_in_flight_when_the_operator_stopped_is_re_sent_at_once_with_the_same_key(
    op: str, state: S, action: str
) -> None:
    """Its answer died with the old process: waiting out the dispatch timeout would only turn a
    launch that may well have run into Stuck LaunchOutcomeUnknown (or cost it an attempt)."""
    run = Run(graph("n", n={"jobs": [job("a")]}))
    sent_at = run.now
    run.advance(3600)  # the operator was down for an hour
    dispatch = {"op": op, "attempts": 1, "lastAttemptAt": to_rfc3339(sent_at), "inFlight": True}
    entry = {
        "state": state.value,
        "attempt": 2,
        "since": to_rfc3339(sent_at),
        "dispatch": dispatch,
        **({"killReason": "stop"} if op == "kill" else {}),
        **({"reason": "LaunchOutcomeUnknown"} if op == "fence" else {}),
    }
    status = JobRunStatus.model_validate({"phase": "Running", "jobs": {"/n/a": entry}})
    run.runtime = runtime_from_status(RUN_UID, run.graph, status)

    resumed = run.reconcile()

    assert [(type(a).__name__, a.key.attempt) for a in resumed.actions if type(a).__name__ != "Event"] == [(action, 2)]
    job_now = run.runtime.jobs["/n/a"]
    assert job_now.state == state and job_now.dispatch is not None
    assert job_now.dispatch.in_flight and job_now.dispatch.attempts_used == 1
    assert job_now.dispatch.last_attempt_at == run.now  # its timeout counts from the re-send
    assert [(type(a).__name__) for a in run.reconcile().actions if type(a).__name__ != "Event"] == []  # once


def test_a_resumed_launch_that_cannot_be_delivered_again_is_stuck_not_failed() -> None:
    """The first send may have reached the agent: giving up is Stuck LaunchOutcomeUnknown."""
    run = Run(graph("n", n={"jobs": [job("a")]}))
    status = JobRunStatus.model_validate(
        {
            "phase": "Running",
            "jobs": {
                "/n/a": {
                    "state": "Starting",
                    "attempt": 1,
                    "since": to_rfc3339(run.now),
                    "dispatch": {"op": "launch", "attempts": 1, "lastAttemptAt": to_rfc3339(run.now), "inFlight": True},
                }
            },
        }
    )
    run.runtime = runtime_from_status(RUN_UID, run.graph, status)
    run.reconcile()
    run.deliver_launch("/n/a", "notDelivered", error_code="HostUnreachable")
    run.reconcile()
    assert run.state("/n/a") == S.STUCK and run.reason("/n/a") == "LaunchOutcomeUnknown"


def test_a_resumed_launch_that_the_replayed_journal_shows_running_is_not_re_sent() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}))
    status = JobRunStatus.model_validate(
        {
            "phase": "Running",
            "jobs": {
                "/n/a": {
                    "state": "Starting",
                    "attempt": 1,
                    "since": to_rfc3339(run.now),
                    "dispatch": {"op": "launch", "attempts": 1, "lastAttemptAt": to_rfc3339(run.now), "inFlight": True},
                }
            },
        }
    )
    run.runtime = runtime_from_status(RUN_UID, run.graph, status)
    run.record("/n/a", "running")
    resumed = run.reconcile()
    assert not [a for a in resumed.actions if type(a).__name__ == "Launch"]
    assert run.state("/n/a") == S.RUNNING


def test_status_of_a_large_finished_run_stays_small_per_job() -> None:
    run = Run(graph("big", big={"jobs": [job(f"j{i}") for i in range(200)]}))
    run.reconcile()
    run.start_and_run(*[f"/big/j{i}" for i in range(200)])
    run.finish(*[f"/big/j{i}" for i in range(200)])
    status = run_status(run.last).model_dump_json(by_alias=True, exclude_none=True)
    # A finished job keeps state, attempt, host, pid, exit code and times: ~200 bytes.
    assert len(status) / 200 < 230


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def test_applying_every_patch_in_turn_gives_exactly_the_full_status() -> None:
    run = busy_run()
    stored: dict[str, Any] = {}
    previous: dict[str, JobState] | None = None
    for index, decision in enumerate(run.decisions):
        stored = merge(stored, status_patch(decision, previous, full=index == 0))
        previous = dict(decision.jobnet_states)
    run.exited("/n/b", 0)
    run.beat()
    stored = merge(stored, status_patch(run.reconcile(), previous))
    expected = run_status(run.last).model_dump(by_alias=True, mode="json", exclude_none=True)
    assert stored == expected
    assert stored["counts"] == {"Starting": 1, "Stopped": 1, "Stuck": 1, "Succeeded": 1}


def test_earlier_attempts_are_written_merged_and_restored_for_recovery() -> None:
    run = busy_run()
    stored: dict[str, Any] = merge({}, status_patch(run.last, full=True))
    previous = dict(run.last.jobnet_states)
    done = len(run.decisions)
    run.override_ready_fenced("/n/a")  # Stuck attempt 1 is fenced, then runs again as attempt 2
    for decision in run.decisions[done:]:
        stored = merge(stored, status_patch(decision, previous))
        previous = dict(decision.jobnet_states)
    entry = stored["jobs"]["/n/a"]
    assert entry["attempt"] == 2 and entry["state"] == "Starting"
    [earlier] = entry["earlierAttempts"]
    assert (earlier["attempt"], earlier["state"], earlier["reason"]) == (1, "Stuck", "LaunchOutcomeUnknown")
    assert earlier["host"] and earlier["rerunBy"] == "alice" and earlier["rerunAt"] == to_rfc3339(run.now)
    assert "earlierAttemptsDropped" not in entry  # none dropped: the field is left out
    assert stored == run_status(run.last).model_dump(by_alias=True, mode="json", exclude_none=True)
    restored = runtime_from_status(RUN_UID, run.graph, JobRunStatus.model_validate(stored))
    assert restored.jobs["/n/a"].earlier == run.runtime.jobs["/n/a"].earlier


def test_first_full_patch_lists_pending_jobs_too() -> None:
    run = Run(graph("n", n={"jobs": [job("a"), job("b", "a")]}))
    patch = status_patch(run.reconcile(), full=True)
    assert patch["jobs"]["/n/b"]["state"] == "Pending"
    assert patch["jobs"]["/n"] == {"state": "Running"}


def test_a_status_written_by_a_newer_operator_is_read_for_what_this_version_knows() -> None:
    status = JobRunStatus.model_validate(
        {
            "phase": "Running",
            "futureSummary": {"x": 1},
            "jobs": {"/n/a": {"state": "Running", "attempt": 1, "futureField": "?"}},
        }
    )
    assert status.phase == "Running" and status.jobs["/n/a"].state == "Running"


def stuck_in_sub() -> Run:
    """extract -> load (sub-jobnet: s1, s2) ; s1 goes Stuck (its heartbeat is lost)."""
    run = Run(
        graph("n", n={"jobs": [job("extract"), sub("load", "ld", "extract")]}, ld={"jobs": [job("s1"), job("s2")]})
    )
    run.reconcile()
    run.start_and_run("/n/extract")
    run.finish("/n/extract")
    run.start_and_run("/n/load/s1", "/n/load/s2")
    run.finish("/n/load/s2")
    run.advance(run.policy.heartbeat_deadline_seconds + 1)
    run.reconcile()
    assert run.state("/n/load/s1") == S.STUCK
    return run


def test_a_stuck_sub_jobnet_and_the_run_say_which_job_is_stuck_and_why() -> None:
    run = stuck_in_sub()
    patch = status_patch(run.last, {"/n/load": S.RUNNING, "/n": S.RUNNING})
    stuck = run.runtime.jobs["/n/load/s1"]
    expected = f"/n/load/s1 is Stuck (HeartbeatLost): {stuck.message}"
    assert patch["jobs"]["/n/load"] == {"state": "Stuck", "reason": "HeartbeatLost", "message": expected}
    assert patch["jobs"]["/n"]["message"] == expected
    assert (patch["phase"], patch["reason"], patch["message"]) == ("Stuck", "HeartbeatLost", expected)
    [event] = run.events("RunStuck")
    assert "/n/load/s1 is Stuck (HeartbeatLost)" in event.message
    # Settled: the reason and message go (explicit nulls of the merge patch).
    run.override("/n/load/s1", S.FAILED)
    patch = status_patch(run.last, {"/n/load": S.STUCK, "/n": S.STUCK})
    assert patch["jobs"]["/n/load"] == {"state": "Failed", "reason": None, "message": None}
    assert patch["reason"] is None and patch["message"] is None


def test_several_stuck_jobs_are_named_and_counted() -> None:
    run = Run(graph("n", n={"jobs": [job(name) for name in "abcde"]}))
    run.reconcile()
    run.start_and_run(*(f"/n/{name}" for name in "abcde"))
    run.advance(run.policy.heartbeat_deadline_seconds + 1)
    run.reconcile()
    status = run_status(run.last)
    assert status.reason == "HeartbeatLost"
    assert (
        status.message
        == "5 jobs are Stuck: /n/a (HeartbeatLost), /n/b (HeartbeatLost), /n/c (HeartbeatLost) and 2 more"
    )
