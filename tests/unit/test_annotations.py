"""Parsing and validating the jobnet.dev/override and jobnet.dev/stop annotations."""

from __future__ import annotations

import pytest

from jobnet.core.annotations import (
    OverrideRequest,
    StopRequest,
    jobs_under,
    parse_override_annotation,
    parse_stop_annotation,
)
from jobnet.core.expansion import RunGraph
from jobnet.core.states import JobState
from tests.support.scheduler_sim import graph, job, sub

S = JobState


@pytest.fixture(scope="module")
def nightly() -> RunGraph:
    return graph(
        "nightly",
        nightly={"jobs": [job("extract"), job("transform", "extract"), sub("load", "load-net", "transform")]},
        **{"load-net": {"jobs": [job("step1"), job("step2", "step1")]}},
    )


def states(run_graph: RunGraph, **overrides: JobState) -> dict[str, JobState]:
    result = {node.path: S.PENDING for node in run_graph.jobs()}
    for name, state in overrides.items():
        result[next(path for path in result if path.endswith("/" + name))] = state
    return result


def test_several_overrides_in_one_annotation(nightly: RunGraph) -> None:
    parsed = parse_override_annotation(
        "/nightly/extract=Succeeded, /nightly/transform=ready",
        nightly,
        states(nightly, extract=S.STUCK, transform=S.FAILED),
        by="alice",
    )
    assert parsed.errors == ()
    assert parsed.requests == (
        OverrideRequest(path="/nightly/extract", state=S.SUCCEEDED, by="alice"),
        OverrideRequest(path="/nightly/transform", state=S.READY, by="alice"),
    )


def test_every_error_is_collected_with_what_is_wrong(nightly: RunGraph) -> None:
    parsed = parse_override_annotation(
        "/nightly/extrct=Succeeded,/nightly/transform=Done,/nightly/load/step1,/nightly/load/step2=Succeeded",
        nightly,
        states(nightly, step2=S.RUNNING),
    )
    assert parsed.requests == ()
    errors = "\n".join(parsed.errors)
    assert len(parsed.errors) == 4, errors
    assert "unknown path '/nightly/extrct'" in errors and "did you mean '/nightly/extract'" in errors
    assert "unknown override state 'Done'" in errors and "Ready, Stopped, Succeeded" in errors
    assert "'/nightly/load/step1' is not PATH=STATE" in errors
    # The illegal transition names the current state.
    assert "/nightly/load/step2 is Running; cannot override it to Succeeded" in errors


def test_valid_items_survive_next_to_invalid_ones(nightly: RunGraph) -> None:
    parsed = parse_override_annotation(
        "/nightly/extract=Failed,/nightly/nope=Failed", nightly, states(nightly, extract=S.STUCK)
    )
    assert [r.path for r in parsed.requests] == ["/nightly/extract"]
    assert len(parsed.errors) == 1


def test_failed_job_cannot_be_overridden_to_stopped(nightly: RunGraph) -> None:
    parsed = parse_override_annotation("/nightly/extract=Stopped", nightly, states(nightly, extract=S.FAILED))
    assert parsed.errors == (
        (
            "/nightly/extract is Failed; cannot override it to Stopped "
            "(allowed: Stuck -> Failed|Ready|Stopped|Succeeded; Failed -> Ready|Succeeded)"
        ),
    )


def test_same_path_twice_is_refused(nightly: RunGraph) -> None:
    parsed = parse_override_annotation(
        "/nightly/extract=Failed,/nightly/extract/=Succeeded", nightly, states(nightly, extract=S.STUCK)
    )
    assert parsed.errors == ("/nightly/extract is named twice in one override",)


def test_empty_override_is_an_error(nightly: RunGraph) -> None:
    assert "is empty" in parse_override_annotation("  ", nightly, states(nightly)).errors[0]


def test_override_of_a_sub_jobnet_needs_an_eligible_job_under_it(nightly: RunGraph) -> None:
    ok = parse_override_annotation("/nightly/load=Failed", nightly, states(nightly, step1=S.STUCK))
    assert ok.requests == (OverrideRequest(path="/nightly/load", state=S.FAILED),)
    refused = parse_override_annotation("/nightly/load=Failed", nightly, states(nightly, step1=S.RUNNING))
    assert refused.errors == (
        (
            "/nightly/load is a jobnet with no job that can be overridden to Failed (its jobs are Pending, Running; "
            "allowed: Stuck -> Failed|Ready|Stopped|Succeeded; Failed -> Ready|Succeeded)"
        ),
    )


def test_slash_means_the_whole_run(nightly: RunGraph) -> None:
    parsed = parse_override_annotation("/=Succeeded", nightly, states(nightly, step2=S.STUCK))
    assert parsed.requests == (OverrideRequest(path="/nightly", state=S.SUCCEEDED),)


def test_rerun_inside_a_stopped_scope_is_refused(nightly: RunGraph) -> None:
    parsed = parse_override_annotation(
        "/nightly/load/step1=Ready", nightly, states(nightly, step1=S.FAILED), stop_scopes=["/nightly/load"]
    )
    assert parsed.errors == ("/nightly/load/step1 cannot be re-run: it is inside /nightly/load, which was stopped",)


def test_stop_paths(nightly: RunGraph) -> None:
    parsed = parse_stop_annotation("/nightly/load, /nightly/extract,/nightly/load", nightly, by="bob")
    assert parsed.errors == ()
    assert parsed.requests == (
        StopRequest(path="/nightly/load", by="bob"),
        StopRequest(path="/nightly/extract", by="bob"),
    )
    assert parse_stop_annotation("/", nightly).requests == (StopRequest(path="/nightly"),)


def test_stop_errors(nightly: RunGraph) -> None:
    parsed = parse_stop_annotation("/nightly/lod,/nightly/extract", nightly)
    assert [r.path for r in parsed.requests] == ["/nightly/extract"]
    assert parsed.errors == (
        "unknown path '/nightly/lod': no job or jobnet of this run has it; did you mean '/nightly/load'?",
    )
    assert "is empty" in parse_stop_annotation("", nightly).errors[0]


def test_jobs_under_a_jobnet_reach_through_nested_expansions(nightly: RunGraph) -> None:
    assert sorted(jobs_under(nightly, "/nightly")) == [
        "/nightly/extract",
        "/nightly/load/step1",
        "/nightly/load/step2",
        "/nightly/transform",
    ]
    assert jobs_under(nightly, "/nightly/extract") == ["/nightly/extract"]
