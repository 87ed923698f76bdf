"""One reconcile round: the sub-machines in their order over one draft."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jobnet.core.annotations import OverrideRequest, StopRequest
from jobnet.core.expansion import RunGraph
from jobnet.core.scheduler.actions import Decision
from jobnet.core.scheduler.deletion import apply_deletion
from jobnet.core.scheduler.delivery import apply_delivery
from jobnet.core.scheduler.draft import Draft
from jobnet.core.scheduler.facts import AgentFacts, SchedulerPolicy
from jobnet.core.scheduler.liveness import apply_record, check_liveness, live_paths
from jobnet.core.scheduler.records import ack_settled_records
from jobnet.core.scheduler.state import RunRuntime
from jobnet.core.scheduler.steering import apply_requests
from jobnet.core.scheduler.summary import decide
from jobnet.core.scheduler.walk import scope_here, walk


def reconcile(
    graph: RunGraph,
    runtime: RunRuntime,
    facts: AgentFacts,
    policy: SchedulerPolicy,
    now: float,
    *,
    annotations: Mapping[str, str] | None = None,
    annotated_by: str | None = None,
    overrides: Iterable[OverrideRequest] = (),
    stops: Iterable[StopRequest] = (),
    deleting: bool = False,
) -> Decision:
    """Decide what the run does next. Pure and deterministic.

    ``annotations`` are the JobRun's annotations: ``jobnet.dev/stop`` and
    ``jobnet.dev/override`` are parsed against the current state (stops first), every problem
    becomes a Warning Event, and :attr:`Decision.consumed_annotations` names the keys the edge
    removes once the status is persisted. Who asked is ``jobnet.dev/stop-by`` /
    ``jobnet.dev/override-by`` (stamped by the admission webhook), else ``annotated_by``.
    ``overrides``/``stops`` are the same requests already parsed (they are validated again here).
    ``deleting``: the JobRun is being deleted: the whole run is stopped (see ``deletion.py``).
    """
    draft = Draft(graph, runtime, facts, policy, now)
    apply_requests(draft, annotations or {}, annotated_by, tuple(overrides), tuple(stops))
    for delivery in facts.deliveries:
        apply_delivery(draft, delivery)
    live = live_paths(draft)
    for path in live:
        apply_record(draft, path)
    for path in live:
        check_liveness(draft, path)
    if deleting:
        apply_deletion(draft)  # after liveness: it looks again at jobs that became Stuck this round
    root_state = walk(draft, graph.root, gate_open=True, blocked=None, scope=scope_here(draft, graph.root, None))
    draft.jobnet_states[graph.root] = root_state
    # After the walk, so that a re-run launched this round already supersedes its key.
    ack_settled_records(draft)
    return decide(draft, root_state)
