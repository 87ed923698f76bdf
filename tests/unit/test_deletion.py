"""Deletion of a JobRun: the stop of the whole run it makes (scheduler), the finalizer patches,
the DeletionBlocked condition and the forced-deletion message (core/deletion.py)."""

from __future__ import annotations

from typing import Any

import pytest

from jobnet.core.deletion import (
    DELETION_BLOCKED,
    FINALIZER,
    FORCE_DELETE_ANNOTATION,
    add_finalizer_patch,
    blocked_condition,
    forced_message,
    is_deleting,
    is_forced,
    job_places,
    remove_finalizer_patch,
    stored_job_places,
)
from jobnet.core.scheduler.deletion import DELETION_REQUESTER
from jobnet.core.states import JobState, RunPhase
from tests.support.scheduler_sim import HOST_ID, Run, graph, job

S = JobState


def two_running() -> Run:
    """a and b run on the VM; c waits for a."""
    run = Run(graph("n", n={"jobs": [job("a"), job("b"), job("c", "a")]}))
    run.reconcile()
    run.start_and_run("/n/a", "/n/b")
    return run


def test_G07_deleting_stops_the_whole_run_once_then_the_run_ends_stopped_and_acks() -> None:
    run = two_running()
    run.deleting = True
    run.reconcile()
    assert sorted(kill.path for kill in run.kills()) == ["/n/a", "/n/b"]
    [requested] = run.events("StopRequested")
    assert requested.message == f"stop of /n requested by {DELETION_REQUESTER}"
    run.reconcile()
    assert run.kills() == [] and len(run.events("StopRequested")) == 1  # asked once
    run.deliver_kill("/n/a")
    run.deliver_kill("/n/b")
    run.beat()
    decision = run.reconcile()
    assert run.state("/n/a") == S.STOPPED and run.state("/n/b") == S.STOPPED
    assert run.state("/n/c") == S.STOPPED  # never launched under the stopped run
    assert run.phase == RunPhase.STOPPED
    assert sorted(ack.path for ack in run.acks(decision)) == ["/n/a", "/n/b"]


def test_G07_deleting_a_pending_run_launches_nothing() -> None:
    run = Run(graph("n", n={"jobs": [job("a")]}))
    run.deleting = True
    run.reconcile()
    assert run.launched() == [] and run.phase == RunPhase.STOPPED


def test_G08_kill_to_a_host_down_is_stuck_then_stopped_again_when_the_host_answers() -> None:
    run = two_running()
    run.deleting = True
    run.reconcile()
    for path in ("/n/a", "/n/b"):
        run.deliver_kill(path, "notDelivered", error_code="HostUnreachable")
    run.advance(1)
    run.reconcile()
    assert run.state("/n/a") == S.STUCK and run.reason("/n/a") == "HostDown"
    condition = blocked_condition(run.runtime, 1, "now")
    assert condition is not None and condition["type"] == DELETION_BLOCKED and condition["reason"] == "HostDown"
    assert HOST_ID in condition["message"] and FORCE_DELETE_ANNOTATION in condition["message"]
    # Still down: nothing is sent again.
    run.advance(5)
    run.reconcile()
    assert run.kills() == []
    # The host answers again: the kills go out once more, without a person.
    run.advance(1)
    run.beat()
    run.reconcile()
    assert sorted(kill.path for kill in run.kills()) == ["/n/a", "/n/b"]
    assert len(run.events("DeletionStopRetried")) == 2
    run.deliver_kill("/n/a")
    run.deliver_kill("/n/b")
    run.reconcile()
    assert run.phase == RunPhase.STOPPED and blocked_condition(run.runtime, 1, "now") is None


def test_a_stuck_job_whose_record_ended_is_not_killed_again() -> None:
    run = two_running()
    run.stop("/n/a")
    run.deliver_kill("/n/a", "unknown", error_code="ConnectionLost")
    run.reconcile()
    assert run.state("/n/a") == S.STUCK
    run.record("/n/a", "lost", message="supervisor died")
    run.deleting = True
    run.advance(1)
    run.beat()
    run.reconcile()
    run.reconcile()
    assert run.state("/n/a") == S.STUCK and all(kill.path != "/n/a" for kill in run.kills())
    assert not [e for e in run.events("DeletionStopRetried") if e.path == "/n/a"]


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]),
        ({"finalizers": ["other"]}, [{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]),
        ({"finalizers": [FINALIZER]}, None),
        ({"deletionTimestamp": "2026-01-01T00:00:00Z"}, None),
    ],
)
def test_add_finalizer_patch(meta: dict[str, Any], expected: list[dict[str, Any]] | None) -> None:
    assert add_finalizer_patch(meta) == expected


def test_remove_finalizer_patch_tests_the_index_it_removes() -> None:
    assert remove_finalizer_patch({"finalizers": ["x", FINALIZER]}) == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]
    assert remove_finalizer_patch({"finalizers": ["x"]}) is None


def test_deleting_and_forced() -> None:
    deleted = {"deletionTimestamp": "t", "finalizers": [FINALIZER]}
    assert is_deleting(deleted) and not is_deleting({"finalizers": [FINALIZER]})
    assert not is_deleting({"deletionTimestamp": "t", "finalizers": ["other"]})
    assert is_forced({"annotations": {FORCE_DELETE_ANNOTATION: "True"}})
    assert not is_forced({"annotations": {FORCE_DELETE_ANNOTATION: "no"}}) and not is_forced({})


def test_forced_message_names_the_hosts_where_jobs_may_still_run() -> None:
    run = two_running()
    assert forced_message(job_places(run.runtime)) == (
        f"deletion forced ({FORCE_DELETE_ANNOTATION}=true): jobs may still run on {HOST_ID}: /n/a, /n/b"
    )
    stored = {"jobs": {"/n/a": {"state": "Succeeded", "host": HOST_ID}, "/n/c": None}}
    assert "no job was left running" in forced_message(stored_job_places(stored))
