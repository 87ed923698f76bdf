"""The console's pure parts: run list rows, the changes offered per state, attempts, event rows,
languages, and the drawing of run graphs."""

from __future__ import annotations

import time

import pytest

from jobnet.console import graphview, views
from jobnet.console.i18n import LABELS, choose_language, translator
from jobnet.core.expansion import expand
from jobnet.core.models import JobNetSpec
from jobnet.core.status import EarlierAttemptStatus, JobStatus
from jobnet.core.validation import parse_jobnet

HOST = {"address": "vm1.internal", "user": "batch", "credentialsSecret": "vm1-ssh"}


def _run(name: str, phase: str, started: str | None, jobnet: str = "nightly", message: str = "") -> dict[str, object]:
    status = {"phase": phase, "progress": "1/2", "message": message}
    if started:
        status["startedAt"] = started
    return {"metadata": {"name": name, "namespace": "ops"}, "spec": {"jobNetRef": jobnet}, "status": status}


def _spec(raw: dict[str, object]) -> JobNetSpec:
    parsed = parse_jobnet({"host": HOST, **raw})
    assert isinstance(parsed, JobNetSpec), parsed
    return parsed


def test_run_rows_put_stuck_runs_first_then_the_newest_and_filter() -> None:
    bodies = [
        _run("old", "Succeeded", "2026-11-20T03:00:00Z"),
        _run("new", "Running", "2026-11-22T03:00:00Z"),
        _run("stuck", "Stuck", "2026-11-19T03:00:00Z", message="1 job Stuck"),
        _run("waiting", "Pending", None, jobnet="weekly"),
    ]
    now = time.time()
    rows = views.run_rows(bodies, views.RunFilter(), now)
    assert [row.name for row in rows] == ["stuck", "waiting", "new", "old"]
    assert rows[0].stuck and not rows[1].stuck
    assert [r.name for r in views.run_rows(bodies, views.RunFilter(jobnet="weekly"), now)] == ["waiting"]
    assert [r.name for r in views.run_rows(bodies, views.RunFilter(phase="Succeeded"), now)] == ["old"]
    assert [r.name for r in views.run_rows(bodies, views.RunFilter(search="JOB STUCK"), now)] == ["stuck"]


def test_run_row_duration_of_a_finished_run() -> None:
    body = _run("r", "Succeeded", "2026-11-22T03:00:00Z")
    body["status"]["finishedAt"] = "2026-11-22T03:04:05Z"  # type: ignore[index]
    assert views.run_row(body, time.time()).duration == "4m05s"


@pytest.mark.parametrize(
    ("state", "offered"),
    [
        ("Stuck", ["Ready", "Succeeded", "Failed", "Stopped"]),
        ("Failed", ["Ready", "Succeeded"]),
        ("Running", []),
        ("Succeeded", []),
        ("Skipped", []),
        ("NotAState", []),
    ],
)
def test_override_choices_are_exactly_what_docs_job_states_allow(state: str, offered: list[str]) -> None:
    assert views.override_choices(state) == offered


def test_stoppable_only_while_something_can_still_change() -> None:
    assert views.stoppable("Running", "Running") and views.stoppable("Pending", "Stuck")
    assert not views.stoppable("Succeeded", "Running") and not views.stoppable("Running", "Failed")


def test_parse_env_lines_reports_every_bad_line() -> None:
    env, problems = views.parse_env_lines("A=1\n\nB = two=2\nnot a pair\n1X=3\n")
    assert env == {"A": "1", "B": " two=2"}
    assert problems == [
        "line 4: 'not a pair' is not KEY=VALUE (KEY: letters, digits, _)",
        "line 5: '1X=3' is not KEY=VALUE (KEY: letters, digits, _)",
    ]


def test_attempts_show_each_earlier_attempt_as_kept_in_the_status_and_the_current_one() -> None:
    job = JobStatus(
        state="Running",
        attempt=3,
        host="10.0.0.1",
        pid=42,
        started_at="t4",
        earlier_attempts=[
            EarlierAttemptStatus(
                attempt=1,
                state="Stuck",
                reason="HeartbeatLost",
                host="10.0.0.1",
                pid=7,
                rerun_by="alice",
                rerun_at="t1",
            ),
            EarlierAttemptStatus(
                attempt=2, state="Failed", reason="NonZeroExit", host="10.0.0.2", pid=8, exit_code=3, rerun_at="t3"
            ),
        ],
        earlier_attempts_dropped=None,
    )
    rows = views.attempts(job)
    assert [(r.number, r.state, r.host, r.pid, r.exit_code, r.note) for r in rows] == [
        (1, "Stuck", "10.0.0.1", "7", "-", "HeartbeatLost · run again by alice · t1"),
        (2, "Failed", "10.0.0.2", "8", "3", "NonZeroExit · run again by unknown · t3"),
        (3, "Running", "10.0.0.1", "42", "-", ""),
    ]
    assert views.attempts(None) == [] and views.attempts(JobStatus(state="Pending")) == []


def test_event_rows_newest_first_filtered_with_the_paths_they_name() -> None:
    def event(reason: str, at: str, message: str, kind: str = "Normal", run: str = "r1") -> dict[str, object]:
        return {
            "involvedObject": {"kind": "JobRun", "name": run, "namespace": "ops"},
            "reason": reason,
            "type": kind,
            "lastTimestamp": at,
            "message": message,
        }

    events = [
        event("StopRequested", "2026-11-22T03:00:02Z", "stop of /n/load requested by alice"),
        event("JobStuck", "2026-11-22T03:00:03Z", "/n/load/step1 is Stuck (HeartbeatLost)", "Warning"),
        event("RunSucceeded", "2026-11-22T03:00:01Z", "all jobs succeeded", run="r2"),
        {"involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Pulled", "message": "not ours"},
    ]
    rows = views.event_rows(events, views.EventFilter())
    assert [row.reason for row in rows] == ["JobStuck", "StopRequested", "RunSucceeded"]
    assert rows[0].paths == ("/n/load/step1",)
    assert [r.reason for r in views.event_rows(events, views.EventFilter(type="Warning"))] == ["JobStuck"]
    assert [r.reason for r in views.event_rows(events, views.EventFilter(run="r2"))] == ["RunSucceeded"]
    assert [r.reason for r in views.event_rows(events, views.EventFilter(path="/n/load"))] == [
        "JobStuck",
        "StopRequested",
    ]


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("ja,en-US;q=0.8", "ja"),
        ("en-US,ja;q=0.9", "en"),
        ("fr-FR,ja;q=0.5,en;q=0.3", "ja"),
        ("ja;q=0, en", "en"),
        ("de", "en"),
        (None, "en"),
        ("ja;q=abc", "en"),
    ],
)
def test_language_follows_accept_language(header: str | None, language: str) -> None:
    assert choose_language(header) == language


def test_every_label_has_english_and_japanese() -> None:
    assert all(set(entry) == {"en", "ja"} and all(entry.values()) for entry in LABELS.values())
    assert translator("ja")("runs") == "実行一覧" and translator("en")("runs") == "Run list"


def _nightly_graph():  # type: ignore[no-untyped-def]
    catalog = {
        "load": _spec(
            {"jobs": [{"name": "stage", "script": "/s"}, {"name": "commit", "script": "/c", "after": ["stage"]}]}
        ),
        "nightly": _spec(
            {
                "jobs": [
                    {"name": "extract", "script": "/e"},
                    {"name": "load", "expand": "load", "after": ["extract"]},
                    {"name": "report", "script": "/r", "after": ["load"]},
                ],
                "finally": [{"name": "notify", "script": "/n"}],
            }
        ),
    }
    return expand("nightly", catalog)


def test_visible_graph_collapsed_sub_jobnet_is_one_node() -> None:
    graph = _nightly_graph()
    visible = graphview.visible_graph(graph, [])
    assert set(visible.nodes) == {"/nightly/extract", "/nightly/load", "/nightly/report", "/nightly/notify"}
    assert set(visible.edges) == {
        ("/nightly/extract", "/nightly/load", False),
        ("/nightly/load", "/nightly/report", False),
        ("/nightly/report", "/nightly/notify", True),  # finally: after every normal job, dashed
    }
    assert visible.frames == ()


def test_visible_graph_expanded_sub_jobnet_connects_its_first_and_last_jobs() -> None:
    graph = _nightly_graph()
    visible = graphview.visible_graph(graph, ["/nightly/load"])
    assert "/nightly/load" not in visible.nodes and visible.frames == ("/nightly/load",)
    assert ("/nightly/extract", "/nightly/load/stage", False) in visible.edges
    assert ("/nightly/load/stage", "/nightly/load/commit", False) in visible.edges
    assert ("/nightly/load/commit", "/nightly/report", False) in visible.edges


def test_layout_places_every_visible_node_in_layers_and_frames_expanded_jobnets() -> None:
    graph = _nightly_graph()
    drawing = graphview.layout(graph, graphview.visible_graph(graph, graphview.default_expanded(graph)))
    where = {node.path: node for node in drawing.nodes}
    assert set(where) == {
        "/nightly/extract",
        "/nightly/load/stage",
        "/nightly/load/commit",
        "/nightly/report",
        "/nightly/notify",
    }
    order = ["/nightly/extract", "/nightly/load/stage", "/nightly/load/commit", "/nightly/report", "/nightly/notify"]
    assert [where[p].y for p in order] == sorted(where[p].y for p in order)  # top to bottom, in order
    assert len({where[p].y for p in order}) == len(order)
    (frame,) = drawing.frames
    assert frame.path == "/nightly/load"
    for path in ("/nightly/load/stage", "/nightly/load/commit"):
        assert frame.x < where[path].x and where[path].x + graphview.NODE_WIDTH < frame.x + frame.width
    assert all(0 <= n.x <= drawing.width and 0 <= n.y <= drawing.height for n in drawing.nodes)


def test_large_runs_open_collapsed_and_too_large_drawings_are_refused() -> None:
    catalog = {
        "part": _spec({"jobs": [{"name": f"j{i}", "script": "/j"} for i in range(100)]}),
        "big": _spec({"jobs": [{"name": f"p{i}", "expand": "part"} for i in range(100)]}),
    }
    graph = expand("big", catalog)
    assert graphview.default_expanded(graph) == frozenset()  # 10,000 jobs: every sub-jobnet collapsed
    assert len(graphview.visible_graph(graph, []).nodes) == 100
    everything = graphview.visible_graph(graph, [p for p, n in graph.nodes.items() if n.kind == "jobnet"])
    assert graphview.layout(graph, everything).too_large == 10_000


def test_monitor_validates_only_the_entries_it_draws_and_lists_every_job() -> None:
    body = {
        "status": {
            "phase": "Running",
            "jobs": {
                "/n/a": {"state": "Succeeded", "attempt": 1, "startedAt": "2026-11-22T03:00:00Z", "finishedAt": "x"},
                "/n/b": {"state": "Stuck", "attempt": 2, "reason": "HeartbeatLost"},
                "/n/broken": {"state": "NotAState"},
            },
        }
    }
    status, jobs = views.parse_status_lazily(body)
    assert status.phase == "Running" and status.jobs == {} and set(jobs) == {"/n/a", "/n/b", "/n/broken"}
    entries = views.job_entries(jobs, ["/n/b", "/n/missing"])
    assert list(entries) == ["/n/b"] and entries["/n/b"].reason == "HeartbeatLost"
    assert views.job_list_rows(["/n/a", "/n/b", "/n/c"], jobs) == [
        ["/n/a", "Succeeded", "✔", 1, "2026-11-22T03:00:00Z", "x", ""],
        ["/n/b", "Stuck", "⚠", 2, "", "", "HeartbeatLost"],
        ["/n/c", "Pending", "○", "", "", "", ""],
    ]
    with pytest.raises(ValueError):
        views.parse_status_lazily({"status": {"phase": "Sideways"}})


def test_schedule_rows_next_due_first_and_suspended_last() -> None:
    def schedule(name: str, next_time: str | None, suspend: bool = False) -> dict[str, object]:
        status = (
            {"nextScheduleTime": next_time, "lastRun": f"{name}-1", "lastRunPhase": "Succeeded"} if next_time else {}
        )
        return {"metadata": {"name": name}, "spec": {"jobNetRef": "nightly", "suspend": suspend}, "status": status}

    rows = views.schedule_rows(
        [
            schedule("later", "2026-11-23T03:00:00Z"),
            schedule("paused", "2026-11-22T01:00:00Z", suspend=True),
            schedule("new", None),
            schedule("sooner", "2026-11-22T03:00:00Z"),
        ]
    )
    assert [row.name for row in rows] == ["sooner", "later", "new", "paused"]
    assert (rows[0].jobnet, rows[0].last_run, rows[0].last_run_phase) == ("nightly", "sooner-1", "Succeeded")
    assert rows[2].next_time == "-" and rows[3].suspended


def test_start_form_offers_the_jobnets_people_start_first() -> None:
    def jobnet_item(name: str, *expands: str) -> dict[str, object]:
        return {"metadata": {"name": name}, "spec": {"jobs": [{"name": t, "expand": t} for t in expands]}}

    items = [jobnet_item("load-jobnet"), jobnet_item("nightly", "load-jobnet"), jobnet_item("adhoc")]
    assert views.startable_first(items) == ["adhoc", "nightly", "load-jobnet"]


def test_events_of_the_same_second_keep_the_order_they_were_stored_in() -> None:
    def event(reason: str, version: str) -> dict[str, object]:
        return {
            "involvedObject": {"kind": "JobRun", "name": "r1"},
            "metadata": {"resourceVersion": version},
            "reason": reason,
            "lastTimestamp": "2026-11-22T03:00:01Z",
        }

    events = [event("StopRequested", "98"), event("RunStopped", "120"), event("JobStopped", "101")]
    assert [row.reason for row in views.event_rows(events, views.EventFilter())] == [
        "RunStopped",
        "JobStopped",
        "StopRequested",
    ]
