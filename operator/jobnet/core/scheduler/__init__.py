"""The reconcile decision of a JobRun: facts in, new state and actions out.

Modelled on Tekton's reconciler: the edge *fetches* (JobRun status, the agents' journals,
heartbeats, the results of the deliveries it made), this package turns those *pure facts* into
a decision, and the edge *acts* (launch, kill, ack, post Events, patch status)::

    decision = reconcile(graph, runtime, facts, policy, now, annotations=jobrun.metadata.annotations)
    patch_status(runstatus.status_patch(decision))   # first: a crash after it loses no decision
    remove_annotations(decision.consumed_annotations)
    perform(decision.actions)          # Launch/Kill are idempotent by JobKey on the agent

Nothing here reads a clock or does I/O; ``now`` is passed in (unix seconds) and the same
inputs always give the same decision.

How a job is identified on a VM: ``JobKey(run=<run uid>, path, attempt)``. A delivery that
certainly did not reach the agent (connect refused, authentication, host key) and one whose
outcome is unknown (the connection broke after the request left) are both retried with the
SAME key (the agent deduplicates), up to the job's ``retry.dispatchAttempts``. Only a person's
override to Ready makes a new attempt (a new key). Hence a script never runs twice unless a
person asked for it. When the agent never confirmed the current attempt (its launch may still
sit in a TCP buffer), that override first *fences* the old key on the agent (claims it as never
to run) and launches the new attempt only once the agent confirms the old one never ran; if it
did run, the job takes its real state instead (see docs/job-states.md, Fencing).

The seams: :mod:`.state` (persisted), :mod:`.facts` (told), :mod:`.actions` (decided); the
round (:mod:`.reconciler`) runs the sub-machines over one :class:`~.draft.Draft`:
:mod:`.steering`, :mod:`.delivery`, :mod:`.liveness` (with :mod:`.records` and
:mod:`.fencing`), :mod:`.walk` and :mod:`.summary`. The edge gathers its facts in an
:class:`~.inbox.AgentInbox`.
"""

from jobnet.core.hosts import host_id
from jobnet.core.scheduler.actions import Ack, Action, Decision, Event, Fence, Kill, Launch
from jobnet.core.scheduler.draft import IllegalTransition
from jobnet.core.scheduler.facts import AgentFacts, DeliveryResult, SchedulerPolicy
from jobnet.core.scheduler.reconciler import reconcile
from jobnet.core.scheduler.state import (
    AUTO_RESOLVER,
    Dispatch,
    DispatchOp,
    EarlierAttempt,
    JobRuntime,
    RunRuntime,
    Settlement,
    job_states,
    new_runtime,
)

__all__ = [
    "AUTO_RESOLVER",
    "Ack",
    "Action",
    "AgentFacts",
    "Decision",
    "DeliveryResult",
    "Dispatch",
    "DispatchOp",
    "EarlierAttempt",
    "Event",
    "Fence",
    "IllegalTransition",
    "JobRuntime",
    "Kill",
    "Launch",
    "RunRuntime",
    "SchedulerPolicy",
    "Settlement",
    "host_id",
    "job_states",
    "new_runtime",
    "reconcile",
]
