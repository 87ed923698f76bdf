"""Steering identity (core/steering.py): which requests a round applies, which it only removes,
how the removal refuses to drop a newer request, and the webhook's identity stamps."""

from __future__ import annotations

import pytest

from jobnet.core.steering import (
    SteeringPlan,
    applied_status,
    identity_of,
    identity_stamps,
    plan_steering,
    recorded_steering,
    removal_patch,
)

OVERRIDE = "jobnet.dev/override"
OVERRIDE_ID = "jobnet.dev/override-id"
OVERRIDE_BY = "jobnet.dev/override-by"
OVERRIDE_MESSAGE = "jobnet.dev/override-message"
STOP = "jobnet.dev/stop"
STOP_ID = "jobnet.dev/stop-id"
STOP_BY = "jobnet.dev/stop-by"

OVERRIDE_A = {OVERRIDE: "/n/a=Ready", OVERRIDE_ID: "a1", OVERRIDE_BY: "alice"}
STOP_ROOT = {STOP: "/", STOP_ID: "s1"}


@pytest.mark.parametrize(
    ("annotations", "recorded", "fresh", "done"),
    [
        pytest.param({}, {}, {}, (), id="nothing"),
        pytest.param(OVERRIDE_A, {}, OVERRIDE_A, (), id="new override, with its companions"),
        pytest.param(OVERRIDE_A, {OVERRIDE: "a1"}, {}, (OVERRIDE,), id="applied override: only removed"),
        pytest.param(OVERRIDE_A, {OVERRIDE: "a0"}, OVERRIDE_A, (), id="an older one was applied: this is new"),
        pytest.param(
            {**OVERRIDE_A, **STOP_ROOT},
            {STOP: "s1"},
            OVERRIDE_A,
            (STOP,),
            id="stop applied, override new",
        ),
        pytest.param({OVERRIDE_MESSAGE: "why"}, {}, {}, (), id="a message alone is no request"),
    ],
)
def test_plan_splits_new_requests_from_applied_ones(
    annotations: dict[str, str], recorded: dict[str, str], fresh: dict[str, str], done: tuple[str, ...]
) -> None:
    assert plan_steering(annotations, recorded) == SteeringPlan(fresh=fresh, done=done)


def test_the_record_after_a_round_holds_what_the_scheduler_consumed() -> None:
    plan = plan_steering({**OVERRIDE_A, **STOP_ROOT}, {OVERRIDE: "a0"})
    assert plan.recorded_after({OVERRIDE: "a0"}, (STOP, OVERRIDE, OVERRIDE_BY)) == {OVERRIDE: "a1", STOP: "s1"}
    assert plan.recorded_after({OVERRIDE: "a0"}, ()) == {OVERRIDE: "a0"}  # nothing applied: unchanged
    assert applied_status({OVERRIDE: "a1"}) == {"override": "a1"}
    assert recorded_steering({"appliedSteering": {"override": "a1", "stop": None}}) == {OVERRIDE: "a1"}
    assert recorded_steering(None) == {}


def test_an_annotation_without_identity_is_identified_by_its_text() -> None:
    assert identity_of(OVERRIDE_A, OVERRIDE) == "a1"
    assert identity_of({}, OVERRIDE) is None
    by_text = identity_of({STOP: "/"}, STOP)
    assert by_text is not None and by_text.startswith("text-")
    assert identity_of({STOP: "/"}, STOP) == by_text != identity_of({STOP: "/n/a"}, STOP)


def test_removal_tests_every_value_before_removing_it() -> None:
    patch = removal_patch({**OVERRIDE_A, **STOP_ROOT, "team": "etl"}, (OVERRIDE,))
    assert patch == [
        {"op": "test", "path": "/metadata/annotations/jobnet.dev~1override", "value": "/n/a=Ready"},
        {"op": "test", "path": "/metadata/annotations/jobnet.dev~1override-by", "value": "alice"},
        {"op": "test", "path": "/metadata/annotations/jobnet.dev~1override-id", "value": "a1"},
        {"op": "remove", "path": "/metadata/annotations/jobnet.dev~1override"},
        {"op": "remove", "path": "/metadata/annotations/jobnet.dev~1override-by"},
        {"op": "remove", "path": "/metadata/annotations/jobnet.dev~1override-id"},
    ]


@pytest.mark.parametrize(
    ("old", "new", "stamps"),
    [
        pytest.param({}, {OVERRIDE: "/n/a=Ready"}, {OVERRIDE_ID: "fresh"}, id="new request"),
        pytest.param(OVERRIDE_A, {**OVERRIDE_A, OVERRIDE: "/n/b=Ready"}, {OVERRIDE_ID: "fresh"}, id="changed"),
        pytest.param(OVERRIDE_A, {**OVERRIDE_A, "team": "etl"}, {}, id="unchanged keeps its identity"),
        pytest.param(OVERRIDE_A, {**OVERRIDE_A, OVERRIDE_ID: "forged"}, {OVERRIDE_ID: "a1"}, id="not rewritable"),
        pytest.param(OVERRIDE_A, {OVERRIDE_BY: "alice", OVERRIDE_ID: "a1"}, {OVERRIDE_ID: None}, id="removed"),
        pytest.param({}, {STOP: "/", STOP_ID: "mine"}, {STOP_ID: "fresh"}, id="a new stop's own id is replaced"),
        pytest.param({}, {}, {}, id="nothing"),
    ],
)
def test_webhook_stamps_each_new_request_with_a_fresh_identity(
    old: dict[str, str], new: dict[str, str], stamps: dict[str, str | None]
) -> None:
    assert identity_stamps(old, new, "fresh") == stamps
