"""Who steers a run: the requester stamps (``jobnet.dev/override-by``/``stop-by``) the admission
webhook writes, the static checks it refuses with, and the scheduler recording the stamped person."""

from __future__ import annotations

import pytest

from jobnet.core.annotations import requester_stamps, static_steering_problems
from jobnet.core.expansion import RunGraph
from jobnet.core.scheduler import AgentFacts, Event, reconcile
from jobnet.core.states import JobState
from tests.support.scheduler_sim import HOST_ID, failed_chain, graph, job, sub

S = JobState
OVERRIDE, OVERRIDE_BY = "jobnet.dev/override", "jobnet.dev/override-by"
STOP, STOP_BY = "jobnet.dev/stop", "jobnet.dev/stop-by"


@pytest.fixture(scope="module")
def nightly() -> RunGraph:
    return graph(
        "nightly",
        nightly={"jobs": [job("extract"), sub("load", "load-net", "extract")]},
        **{"load-net": {"jobs": [job("step1")]}},
    )


# ---------------------------------------------------------------- stamps


def test_a_new_or_changed_steering_annotation_is_stamped_with_the_requester() -> None:
    assert requester_stamps({}, {OVERRIDE: "/n/a=Succeeded"}, "alice") == {OVERRIDE_BY: "alice"}
    assert requester_stamps({STOP: "/n/a", STOP_BY: "bob"}, {STOP: "/", STOP_BY: "bob"}, "alice") == {STOP_BY: "alice"}
    both = {OVERRIDE: "/n/a=Succeeded", STOP: "/n/b"}
    assert requester_stamps({}, both, "alice") == {OVERRIDE_BY: "alice", STOP_BY: "alice"}


def test_a_forged_stamp_is_overwritten_or_reverted() -> None:
    assert requester_stamps({}, {OVERRIDE: "/n/a=Succeeded", OVERRIDE_BY: "mallory"}, "alice") == {OVERRIDE_BY: "alice"}
    # The annotation unchanged: the stamp stays whoever set it, not whoever writes now.
    pending = {STOP: "/", STOP_BY: "bob"}
    assert requester_stamps(pending, {STOP: "/", STOP_BY: "mallory"}, "mallory") == {STOP_BY: "bob"}
    assert requester_stamps(pending, {STOP: "/"}, "mallory") == {STOP_BY: "bob"}
    # No annotation, no stamp.
    assert requester_stamps({}, {STOP_BY: "mallory"}, "mallory") == {STOP_BY: None}


def test_writes_that_do_not_steer_need_no_change() -> None:
    pending = {OVERRIDE: "/n/a=Succeeded", OVERRIDE_BY: "bob", "team": "etl"}
    assert (
        requester_stamps(pending, {**pending, "kopf.zalando.org/touch": "1"}, "system:serviceaccount:jobnet:operator")
        == {}
    )
    # The operator removes an applied annotation together with its stamp.
    assert requester_stamps(pending, {"team": "etl"}, "system:serviceaccount:jobnet:operator") == {}


def test_an_unauthenticated_requester_leaves_no_stamp() -> None:
    assert requester_stamps({}, {STOP: "/", STOP_BY: "mallory"}, None) == {STOP_BY: None}
    assert requester_stamps({}, {STOP: "/"}, "") == {}


# ---------------------------------------------------------------- static checks


def test_static_problems_name_the_annotation_and_every_mistake(nightly: RunGraph) -> None:
    problems = static_steering_problems(
        {},
        {OVERRIDE: "/nightly/extrct=Succeeded,/nightly/load/step1=Done,/nightly/extract", STOP: "/nightly/lod"},
        nightly,
    )
    keys = [key for key, _ in problems]
    text = "\n".join(message for _, message in problems)
    assert keys == [OVERRIDE, OVERRIDE, OVERRIDE, STOP], problems
    assert "unknown path '/nightly/extrct'" in text and "did you mean '/nightly/extract'" in text
    assert "unknown override state 'Done'" in text and "'/nightly/extract' is not PATH=STATE" in text
    assert "unknown path '/nightly/lod'" in text


def test_state_dependent_problems_are_left_to_the_scheduler(nightly: RunGraph) -> None:
    # Every job is Pending as far as admission knows: overriding one to Succeeded is not its call.
    assert static_steering_problems({}, {OVERRIDE: "/nightly/extract=Succeeded", STOP: "/"}, nightly) == []


def test_only_added_or_changed_annotations_are_judged(nightly: RunGraph) -> None:
    stale = {OVERRIDE: "/nightly/gone=Succeeded"}  # e.g. admitted before the JobNet changed
    assert static_steering_problems(stale, {**stale, "team": "etl"}, nightly) == []
    assert static_steering_problems(stale, {}, nightly) == []
    assert static_steering_problems(stale, {OVERRIDE: "/nightly/gone=Failed"}, nightly) != []


def test_without_the_graph_only_syntax_and_states_are_checked() -> None:
    assert static_steering_problems({}, {OVERRIDE: "/any/path=Succeeded", STOP: "/any"}, None) == []
    problems = static_steering_problems({}, {OVERRIDE: "/any/path=Maybe", STOP: " "}, None)
    assert [key for key, _ in problems] == [OVERRIDE, STOP]
    assert "unknown override state 'Maybe'" in problems[0][1] and "is empty" in problems[1][1]


# ---------------------------------------------------------------- through reconcile


def test_the_stamped_requester_is_recorded_and_consumed_with_its_annotation() -> None:
    run = failed_chain()
    decision = reconcile(
        run.graph,
        run.runtime,
        AgentFacts(heartbeats={HOST_ID: run.now}),
        run.policy,
        run.now,
        annotations={OVERRIDE: "/net/a=Succeeded", OVERRIDE_BY: "alice", STOP: "/net/b", STOP_BY: "carol"},
        annotated_by="someone else",
    )
    [settlement] = decision.runtime.settlements
    assert settlement.by == "alice"
    messages = [a.message for a in decision.actions if isinstance(a, Event)]
    assert "stop of /net/b requested by carol" in messages
    assert f"/net/a: {settlement.message}" in messages and "by alice" in settlement.message
    assert set(decision.consumed_annotations) == {OVERRIDE, OVERRIDE_BY, STOP, STOP_BY}


def test_a_stamp_alone_is_not_consumed() -> None:
    run = failed_chain()
    decision = reconcile(run.graph, run.runtime, AgentFacts(), run.policy, run.now, annotations={OVERRIDE_BY: "alice"})
    assert decision.consumed_annotations == () and decision.runtime.settlements == ()
