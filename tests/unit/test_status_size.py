"""JobRun status size: a 10,000-job run stays under 1 MiB, small runs stay plain, and the chunked
status restores exactly the runtime recovery needs (docs/scale.md)."""

from __future__ import annotations

import base64
import collections
import json
import random
from typing import Any

import pytest

from jobnet.core.expansion import RunGraph
from jobnet.core.runstatus import (
    CHUNK_ENTRIES,
    PLAIN_MAX_ENTRIES,
    StatusEncoder,
    decode_chunk,
    decoded_status,
    encode_chunk,
    output_tail_limit,
    runtime_from_status,
    status_patch,
)
from jobnet.core.scheduler import Decision, Dispatch, EarlierAttempt, JobRuntime, RunRuntime
from jobnet.core.states import JobState, RunPhase
from jobnet.core.status import ATTEMPT_HISTORY_MAX, OUTPUT_TAIL_MAX_CHARS, JobRunStatus, attempt_history_limit
from tests.support.scheduler_sim import RUN_UID, Run, graph, job, sub
from tests.unit.test_runstatus import busy_run, merge

MiB = 1024 * 1024
S = JobState


def wide_graph(subs: int, per_sub: int) -> RunGraph:
    """``subs`` expanded sub-jobnets of ``per_sub`` independent jobs each."""
    return graph(
        "big",
        big={"jobs": [sub(f"part{i:03d}", "part") for i in range(subs)]},
        part={"jobs": [job(f"step{i:03d}") for i in range(per_sub)]},
    )


def finished_runtime(run_graph: RunGraph, rng: random.Random, state: JobState = S.SUCCEEDED) -> RunRuntime:
    """Every job finished with host, pid, exit code, both times, a reason and a message (the
    worst case short of a tail, which the edge adds)."""
    start = 1_790_000_000.0
    jobs = {}
    for index, node in enumerate(run_graph.jobs()):
        began = start + index * 0.0137 + rng.random()
        jobs[node.path] = JobRuntime(
            state=state,
            attempt=rng.randint(1, 3),
            host=f"batch@10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7:22",
            pid=rng.randint(1000, 4_000_000),
            exit_code=0 if state == S.SUCCEEDED else rng.randint(1, 255),
            started_at=round(began, 3),
            finished_at=round(began + rng.random() * 90, 3),
            reason=None if state == S.SUCCEEDED else "ScriptFailed",
            message=None if state == S.SUCCEEDED else f"the script exited with code {rng.randint(1, 255)}",
        )
    return RunRuntime(run_uid=RUN_UID, jobs=jobs, phase=RunPhase.SUCCEEDED, started_at=start, finished_at=start + 600)


def decision_of(run_graph: RunGraph, runtime: RunRuntime, changed: set[str] | None = None) -> Decision:
    jobnets = {node.path: JobState.SUCCEEDED for node in run_graph.nodes.values() if node.kind == "jobnet"}
    return Decision(
        runtime=runtime,
        actions=(),
        changed=frozenset(runtime.jobs if changed is None else changed),
        jobnet_states=jobnets,
        progress=f"{len(runtime.jobs)}/{len(runtime.jobs)}",
        counts=dict(collections.Counter(str(job.state) for job in runtime.jobs.values())),
        next_wakeup_at=None,
    )


def random_tail(rng: random.Random) -> str:
    """Output that gzip cannot shrink much: random printable text, longer than any limit."""
    return base64.b64encode(rng.randbytes(OUTPUT_TAIL_MAX_CHARS * 3 // 4)).decode()


def first_write(run_graph: RunGraph, runtime: RunRuntime, rng: random.Random) -> tuple[StatusEncoder, dict[str, Any]]:
    encoder = StatusEncoder(run_graph.nodes)
    patch = status_patch(decision_of(run_graph, runtime), full=True)
    for path in runtime.jobs:
        patch["jobs"][path]["outputTail"] = random_tail(rng)
    encoded = encoder.encode(patch, full=True)
    encoder.commit()
    return encoder, encoded


def object_size(status: dict[str, Any]) -> int:
    """The JobRun as stored: a generous metadata and spec plus the status, compact JSON."""
    body = {
        "apiVersion": "jobnet.dev/v1alpha1",
        "kind": "JobRun",
        "metadata": {
            "name": "big-1",
            "namespace": "default",
            "uid": "x" * 36,
            "resourceVersion": "123456",
            "annotations": {"note": "n" * 512},
        },
        "spec": {"jobNetRef": "big", "env": {f"VAR{i}": "v" * 40 for i in range(20)}},
        "status": status,
    }
    return len(json.dumps(body, separators=(",", ":")).encode())


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.FAILED])
@pytest.mark.randomized(seed=7)
def test_10000_finished_jobs_with_tails_stay_under_1_MiB(state: JobState, rng: random.Random) -> None:
    run_graph = wide_graph(100, 100)
    runtime = finished_runtime(run_graph, rng, state)
    assert len(runtime.jobs) == 10_000

    _, patch = first_write(run_graph, runtime, rng)
    stored = merge({}, patch)

    size = object_size(stored)
    print(f"10,000 {state} jobs: {size / MiB:.3f} MiB ({size / 10_000:.0f} bytes per job)")
    assert size < MiB, f"{size} bytes"
    assert len(json.dumps(patch).encode()) < MiB  # the request too
    jobs = decoded_status(stored)["jobs"]
    assert len(jobs) == len(run_graph.nodes)
    some = jobs["/big/part042/step017"]
    assert some["state"] == str(state) and len(some["outputTail"]) == output_tail_limit(len(run_graph.nodes))


@pytest.mark.randomized(seed=8)
def test_10000_running_jobs_with_delivery_bookkeeping_stay_under_1_MiB(rng: random.Random) -> None:
    run_graph = wide_graph(100, 100)
    runtime = finished_runtime(run_graph, rng)
    busy = {
        path: job.model_copy(
            update={
                "state": S.STARTING,
                "exit_code": None,
                "finished_at": None,
                "since": job.started_at,
                "deadline": job.started_at + 3600,
                "dispatch": Dispatch(
                    op="launch",
                    attempts_used=3,
                    last_attempt_at=job.started_at,
                    in_flight=True,
                    unknown_seen=True,
                    last_error="HostUnreachable",
                    last_error_message=f"cannot connect to {job.host}: connection timed out",
                ),
            }
        )
        for path, job in runtime.jobs.items()
    }
    runtime = runtime.model_copy(update={"jobs": busy, "phase": RunPhase.RUNNING, "finished_at": None})
    stored = merge(
        {}, StatusEncoder(run_graph.nodes).encode(status_patch(decision_of(run_graph, runtime), full=True), full=True)
    )
    assert object_size(stored) < MiB


def with_history(runtime: RunRuntime, rng: random.Random) -> RunRuntime:
    """Every job re-run as often as it takes to fill its share of earlier attempts (and more,
    dropped), each with every field set."""
    keep = attempt_history_limit(len(runtime.jobs))
    jobs = {}
    for path, entry in runtime.jobs.items():
        earlier = tuple(
            EarlierAttempt(
                attempt=number,
                state=S.STUCK,
                reason="HeartbeatLost",
                host=entry.host,
                pid=rng.randint(1000, 4_000_000),
                exit_code=rng.randint(1, 255),
                started_at=round(rng.random() * 1e9, 3),
                finished_at=round(rng.random() * 1e9, 3),
                rerun_by="someone.with.a.long.name@example.com",
                rerun_at=round(rng.random() * 1e9, 3),
            )
            for number in range(1, keep + 1)
        )
        jobs[path] = entry.model_copy(update={"attempt": keep + 3, "earlier": earlier, "earlier_dropped": 2})
    return runtime.model_copy(update={"jobs": jobs})


@pytest.mark.parametrize(("subs", "per_sub"), [(1, 200), (4, 250), (100, 100)], ids=["200", "1000", "10000"])
@pytest.mark.randomized(seed=9)
def test_runs_whose_jobs_were_all_re_run_keep_their_share_of_earlier_attempts_under_1_MiB(
    subs: int, per_sub: int, rng: random.Random
) -> None:
    run_graph = wide_graph(subs, per_sub)
    runtime = with_history(finished_runtime(run_graph, rng, S.FAILED), rng)
    _, patch = first_write(run_graph, runtime, rng)
    stored = merge({}, patch)
    size = object_size(stored)
    share = attempt_history_limit(len(run_graph.nodes))
    print(f"{len(runtime.jobs)} re-run jobs, {share} earlier attempts each: {size / MiB:.3f} MiB")
    assert size < MiB, f"{size} bytes"
    some = decoded_status(stored)["jobs"][f"/big/part000/step{per_sub - 1:03d}"]
    assert len(some.get("earlierAttempts") or []) == share and some["earlierAttemptsDropped"] == 2


def test_the_share_of_earlier_attempts_shrinks_with_the_run_size() -> None:
    assert attempt_history_limit(10) == ATTEMPT_HISTORY_MAX
    assert attempt_history_limit(204) == 5 and attempt_history_limit(205) == 4
    assert attempt_history_limit(1024) == 1 and attempt_history_limit(1025) == 0


def test_tail_share_shrinks_with_the_run_size() -> None:
    assert output_tail_limit(10) == OUTPUT_TAIL_MAX_CHARS
    assert output_tail_limit(PLAIN_MAX_ENTRIES) == 1024
    assert output_tail_limit(10_101) == 25


def test_small_runs_stay_plain_and_readable() -> None:
    run = busy_run()
    encoder = StatusEncoder(run.graph.nodes)
    patch = status_patch(run.last, full=True)
    patch["jobs"]["/n/b"]["outputTail"] = "x" * 100
    encoded = encoder.encode(patch, full=True)
    assert not encoder.chunked and "jobChunks" not in encoded
    assert encoded["jobs"]["/n/b"]["outputTail"] == "x" * 100
    assert encoded["jobs"]["/n/a"]["state"] == "Stuck"


@pytest.mark.randomized(seed=9)
def test_a_large_run_rewrites_only_the_chunk_of_a_changed_job(rng: random.Random) -> None:
    run_graph = wide_graph(10, 100)
    runtime = finished_runtime(run_graph, rng)
    encoder, first = first_write(run_graph, runtime, rng)
    assert encoder.chunked and first["jobs"] is None
    assert len(first["jobChunks"]) == -(-len(run_graph.nodes) // CHUNK_ENTRIES)

    path = "/big/part004/step050"
    rerun = runtime.model_copy(
        update={
            "jobs": {
                **runtime.jobs,
                path: JobRuntime(
                    state=S.RUNNING, attempt=4, host="batch@10.0.0.1:22", pid=99, started_at=1.79e9, since=1.79e9
                ),
            }
        }
    )
    unchanged_jobnets = decision_of(run_graph, runtime).jobnet_states
    patch = encoder.encode(status_patch(decision_of(run_graph, rerun, {path}), unchanged_jobnets))

    assert "jobs" not in patch and len(patch["jobChunks"]) == 1
    (chunk,) = patch["jobChunks"].values()
    entry = decode_chunk(chunk)[path]
    # The fields of the finished attempt are gone; its output tail stays until the new attempt
    # finishes, exactly as in a plain status (the edge writes tails of finished attempts only).
    assert entry.pop("outputTail")
    assert entry == {
        "state": "Running",
        "attempt": 4,
        "host": "batch@10.0.0.1:22",
        "pid": 99,
        "startedAt": "2026-09-21T14:13:20.000Z",
        "since": "2026-09-21T14:13:20.000Z",
    }


def test_chunked_status_restores_exactly_the_runtime_recovery_needs() -> None:
    """Round trip runtime -> chunked status -> runtime, for every kind of bookkeeping (the busy
    run's Stuck, Starting-with-delivery, Running-with-timeout, Stopped jobs and override) in a run
    large enough to be chunked."""
    run = Run(
        graph(
            "n",
            n={
                "jobs": [
                    job("a"),
                    job("b", timeoutSeconds=60),
                    job("c", retry={"dispatchAttempts": 3, "intervalSeconds": 5}),
                    sub("s", "sn", "a"),
                    *[job(f"f{i:03d}", "b") for i in range(300)],
                ]
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

    encoder = StatusEncoder(run.graph.nodes)
    stored: dict[str, Any] = {}
    previous: dict[str, JobState] | None = None
    for index, decision in enumerate(run.decisions):
        stored = merge(stored, encoder.encode(status_patch(decision, previous, full=index == 0), full=index == 0))
        encoder.commit()
        previous = dict(decision.jobnet_states)
    assert encoder.chunked and not stored.get("jobs")

    restored = runtime_from_status(RUN_UID, run.graph, JobRunStatus.model_validate(decoded_status(stored)))
    assert restored == run.runtime
    assert restored.jobs["/n/a"].state == S.STUCK and restored.jobs["/n/c"].dispatch is not None

    # A restarted operator's encoder starts from the stored status and keeps every entry.
    again = StatusEncoder(run.graph.nodes, stored)
    stored = merge(stored, again.encode(status_patch(run.last, previous, full=True), full=True))
    assert runtime_from_status(RUN_UID, run.graph, JobRunStatus.model_validate(decoded_status(stored))) == run.runtime


@pytest.mark.randomized(seed=10)
def test_a_full_write_clears_plain_entries_and_chunks_the_run_no_longer_has(rng: random.Random) -> None:
    run_graph = wide_graph(3, 100)
    runtime = finished_runtime(run_graph, rng)
    older = {
        "jobs": {"/big/part000/step000": {"state": "Running"}},
        "jobChunks": {"7": encode_chunk({"/big/part001/step001": {"state": "Running"}})},
    }
    encoder = StatusEncoder(run_graph.nodes, older)
    patch = encoder.encode(status_patch(decision_of(run_graph, runtime), full=True), full=True)
    stored = merge(older, patch)
    assert "7" not in stored["jobChunks"] and "jobs" not in stored
    assert decoded_status(stored)["jobs"]["/big/part000/step000"]["state"] == "Succeeded"


def test_an_unreadable_chunk_is_named_clearly() -> None:
    with pytest.raises(ValueError, match="jobChunks entry is not base64 gzip JSON"):
        decoded_status({"jobChunks": {"0": "not base64!"}})


@pytest.mark.randomized(seed=11)
def test_a_refused_patch_leaves_no_trace_in_later_chunks(rng: random.Random) -> None:
    """The API server refused a patch and the scheduler then decided otherwise: the next chunk
    written holds the stored entry, not the refused one."""
    run_graph = wide_graph(3, 100)
    runtime = finished_runtime(run_graph, rng)
    encoder, _ = first_write(run_graph, runtime, rng)
    jobnets = decision_of(run_graph, runtime).jobnet_states
    refused = runtime.model_copy(update={"jobs": {**runtime.jobs, "/big/part000/step001": JobRuntime(state=S.STUCK)}})
    encoder.encode(status_patch(decision_of(run_graph, refused, {"/big/part000/step001"}), jobnets))
    # not committed: the write failed
    other = runtime.model_copy(update={"jobs": {**runtime.jobs, "/big/part000/step002": JobRuntime(state=S.READY)}})
    patch = encoder.encode(status_patch(decision_of(run_graph, other, {"/big/part000/step002"}), jobnets))
    (chunk,) = patch["jobChunks"].values()
    entries = decode_chunk(chunk)
    assert entries["/big/part000/step001"]["state"] == "Succeeded"
    assert entries["/big/part000/step002"]["state"] == "Ready"
