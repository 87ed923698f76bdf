"""Which status writes may wait: a round that only observed what the stored status already
recovers to is written with a later round (coalesced), at most a bounded delay later.

Every write serves one rule: nothing is acted on before the decision it comes from is stored (a
launch's attempt is stored before the launch leaves, an ack only after the job's end is stored).
A round acts on nothing when its only news is that a stored launch arrived (the agent accepted
it, its script started): in a chain that is two of a job's three writes, each a round trip to the
API server that the next step's write may have to wait behind. :func:`deferrable` says when such
a round's write may wait:

1. the round acts on nothing: no request to an agent, no ack, no Event, no steering request
   applied or refused, no output tail held for;
2. the run's phase, times, stop scopes, settlements and jobnet states are the stored ones;
3. every job the round (or a deferred round before it) changed differs from its stored entry
   only as an observation of the stored launch (:func:`observed_only`): stored Starting with a
   launch request for attempt *n* in flight, now Running attempt *n* on the same host; or stored Running
   attempt *n*, still Running attempt *n* (its pid or start time learnt). No timeout deadline
   on either side, no reason, no message, the same earlier attempts.

Why a restart loses nothing (docs/scale.md, "Deferred observation writes"): a restarted operator
(or a new leader, or this loop resuming after another writer) rebuilds the run from the stored
status (``runtime_from_status``): a stored Starting job's launch request becomes an interrupted
one, re-sent at once with the same key (attempt *n*, ``resend_interrupted``). The agent has that
key already: it answers with the job's record and never starts it again (the operator posts a
``LaunchDeduplicated`` Event), and the record brings the job to Running, or to its end, exactly
as the unwritten round did. A stop meanwhile kills by that same key instead of re-sending. A
stored Running job is already what the unwritten round knew. So the same attempt is computed
whatever the steering did meanwhile, no attempt is added or skipped, and nothing was acted on
from the unwritten knowledge. Lost is only when the operator first saw the job run (``since``)
and its pid until the agent reports it again. A job with a timeout is excluded: its kill
deadline is counted from when the operator first saw it Running, and a restart would count it
anew, later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jobnet.core.scheduler.actions import Decision
from jobnet.core.scheduler.state import NEVER_LAUNCHED, JobRuntime, RunRuntime
from jobnet.core.states import JobState


def observed_only(stored: JobRuntime, decided: JobRuntime) -> bool:
    """Whether ``decided`` differs from the ``stored`` entry only as an observation of the stored
    launch (see the module docstring, 3.)."""
    if decided == stored:
        return True
    if (
        decided.state != JobState.RUNNING
        or decided.attempt != stored.attempt
        or decided.host != stored.host
        or decided.deadline is not None
        or stored.deadline is not None
        or decided.dispatch is not None
        or decided.reason is not None
        or decided.message is not None
        or decided.kill_reason is not None
        or decided.exit_code is not None
        or decided.finished_at is not None
        or (decided.earlier, decided.earlier_dropped) != (stored.earlier, stored.earlier_dropped)
    ):
        return False
    if stored.state == JobState.STARTING:
        return stored.dispatch is not None and stored.dispatch.op == "launch" and stored.dispatch.in_flight
    return stored.state == JobState.RUNNING and stored.dispatch is None


def deferrable(
    stored: RunRuntime, stored_jobnets: Mapping[str, JobState], decision: Decision, paths: Iterable[str]
) -> bool:
    """Whether the write of ``decision`` may wait (see the module docstring): ``stored`` is the
    runtime as last stored, ``stored_jobnets`` its jobnet states, ``paths`` every job changed
    since (this round's and the deferred rounds')."""
    runtime = decision.runtime
    if decision.actions or decision.consumed_annotations or decision.holds_for_output_tails:
        return False
    if (runtime.phase, runtime.started_at, runtime.finished_at, runtime.stop_scopes, runtime.settlements) != (
        stored.phase,
        stored.started_at,
        stored.finished_at,
        stored.stop_scopes,
        stored.settlements,
    ):
        return False
    if dict(decision.jobnet_states) != dict(stored_jobnets):
        return False
    return all(
        observed_only(stored.jobs.get(path, NEVER_LAUNCHED), runtime.jobs.get(path, NEVER_LAUNCHED)) for path in paths
    )


@dataclass
class WriteDeferral:
    """A run's deferred status write: the runtime as last stored, the jobs changed since and
    not yet written, and since when (pure; one per run loop). ``delay`` bounds how long a write
    waits (0: never)."""

    delay: float
    stored: RunRuntime
    stored_jobnets: dict[str, JobState]
    unwritten: frozenset[str] = frozenset()
    since: float | None = None

    def to_write(self, decision: Decision) -> Decision:
        """``decision`` with the deferred rounds' jobs among its changed ones (what to patch)."""
        if not self.unwritten:
            return decision
        return decision.model_copy(update={"changed": decision.changed | self.unwritten})

    def defer(self, decision: Decision, now: float) -> float | None:
        """Leave ``decision``'s write for later if it may wait: when to write it at the latest
        (None: write it now, with every deferred job)."""
        paths = decision.changed | self.unwritten
        since = now if self.since is None else self.since
        if now >= since + self.delay or not deferrable(self.stored, self.stored_jobnets, decision, paths):
            return None
        self.unwritten, self.since = paths, since
        return since + self.delay

    def stored_as(self, decision: Decision) -> None:
        """``decision`` (with every deferred job) is stored now."""
        self.stored, self.stored_jobnets = decision.runtime, dict(decision.jobnet_states)
        self.unwritten, self.since = frozenset(), None
