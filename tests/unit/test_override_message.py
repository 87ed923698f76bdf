"""The reason a person gives with an override (``jobnet.dev/override-message``) is kept."""

from __future__ import annotations

from jobnet.core.annotations import parse_override_annotation
from jobnet.core.runstatus import run_status
from jobnet.core.scheduler import AgentFacts, Event, reconcile
from jobnet.core.states import JobState
from tests.support.scheduler_sim import HOST_ID, failed_chain

S = JobState
REASON = "checked on the VM: the load finished, rows counted"


def test_parsed_requests_carry_the_message() -> None:
    run = failed_chain()
    parsed = parse_override_annotation("/net/a=Succeeded", run.graph, {"/net/a": S.FAILED}, by="bob", message=REASON)
    assert [(r.path, r.state, r.message) for r in parsed.requests] == [("/net/a", S.SUCCEEDED, REASON)]


def test_the_message_goes_into_the_override_record_and_event_and_is_consumed_with_the_override() -> None:
    run = failed_chain()
    decision = reconcile(
        run.graph,
        run.runtime,
        AgentFacts(heartbeats={HOST_ID: run.now}),
        run.policy,
        run.now,
        annotations={"jobnet.dev/override": "/net/a=Succeeded", "jobnet.dev/override-message": REASON},
        annotated_by="bob",
    )

    [settlement] = decision.runtime.settlements
    [event] = [a for a in decision.actions if isinstance(a, Event) and a.reason == "Overridden"]
    assert settlement.message == f"set to Succeeded by bob (was Failed (NonZeroExit)): {REASON}"
    assert event.message == f"/net/a: {settlement.message}"
    assert decision.consumed_annotations == ("jobnet.dev/override", "jobnet.dev/override-message")
    assert run_status(decision).overrides[0].message == settlement.message


def test_a_message_alone_waits_for_its_override() -> None:
    run = failed_chain()
    decision = reconcile(
        run.graph,
        run.runtime,
        AgentFacts(heartbeats={HOST_ID: run.now}),
        run.policy,
        run.now,
        annotations={"jobnet.dev/override-message": REASON},
    )
    assert decision.consumed_annotations == () and decision.runtime.settlements == ()


def test_without_a_message_the_record_is_unchanged() -> None:
    run = failed_chain()
    run.override("/net/a", S.READY)
    [settlement] = run.runtime.settlements
    assert settlement.message == "re-run requested by alice (was Failed (NonZeroExit)); it runs as attempt 2"
