"""Job states, run phases, reason codes and the transition rules, as data.

Everything the runtime may do to a job's state is written down here once:

* :data:`AUTOMATIC_TRANSITIONS` — what the scheduler itself may change (each change the
  scheduler makes is checked against it, so a bug shows up as an error, not as a wrong state);
* :data:`OVERRIDE_TRANSITIONS` — what a person may request with the ``jobnet.dev/override``
  annotation. Tengine let people edit only a stuck *root* jobnet; we allow settling any Stuck
  job (or sub-jobnet), re-running or bypassing a Failed one, and refuse the rest: a job that is
  still active has a truth the agent will report, and a Succeeded/Stopped/Skipped job is a
  settled fact (Skipped follows from its upstream and changes by itself when that changes).

The string values equal the ``JobStateName``/``RunPhaseName`` literals of :mod:`jobnet.core.status`
(the API's spelling); an agent's journal has its own ``RecordState`` (:mod:`jobnet.core.agentproto`).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class JobState(StrEnum):
    """The state of one job (and, derived from its children, of a jobnet)."""

    PENDING = "Pending"  # waiting for its `after` jobs / its jobnet to start
    READY = "Ready"  # may start now (transient: the scheduler launches Ready jobs at once)
    STARTING = "Starting"  # launch request sent to the agent, not confirmed yet
    RUNNING = "Running"  # the agent confirmed the process runs
    STOPPING = "Stopping"  # kill requested (stop or timeout), final state not known yet
    SUCCEEDED = "Succeeded"  # script exited 0 (or a person said so)
    FAILED = "Failed"  # script exited non-zero, never started, timed out, was lost...
    STOPPED = "Stopped"  # killed on request, or never started because its scope was stopped
    STUCK = "Stuck"  # the truth is unknown; see the reason; a person or the agent settles it
    SKIPPED = "Skipped"  # will never run: an upstream job did not succeed


class RunPhase(StrEnum):
    """The phase of a whole JobRun, summarising its jobs."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    STUCK = "Stuck"


S = JobState

TERMINAL_STATES: frozenset[JobState] = frozenset({S.SUCCEEDED, S.FAILED, S.STOPPED, S.SKIPPED})
#: States in which the scheduler is doing something (a process runs or is about to).
ACTIVE_STATES: frozenset[JobState] = frozenset({S.READY, S.STARTING, S.RUNNING, S.STOPPING})
#: States of a job that has not been handed to an agent in its current attempt.
UNLAUNCHED_STATES: frozenset[JobState] = frozenset({S.PENDING, S.READY, S.SKIPPED})


def is_terminal(state: JobState) -> bool:
    return state in TERMINAL_STATES


def is_active(state: JobState) -> bool:
    return state in ACTIVE_STATES


#: Every change the scheduler may make on its own (``state -> allowed next states``).
AUTOMATIC_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # Pending/Skipped are recomputed from the upstream on every reconcile: an override of an
    # upstream job (Failed -> Succeeded) turns a Skipped job back into Pending or Ready.
    S.PENDING: frozenset({S.READY, S.STARTING, S.SKIPPED, S.STOPPED, S.FAILED}),
    S.SKIPPED: frozenset({S.PENDING, S.READY, S.STARTING, S.STOPPED}),
    # Ready -> Failed: the job cannot be dispatched at all (no host).
    S.READY: frozenset({S.STARTING, S.PENDING, S.SKIPPED, S.STOPPED, S.FAILED}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.SUCCEEDED, S.FAILED, S.STOPPED, S.STUCK}),
    S.RUNNING: frozenset({S.STOPPING, S.SUCCEEDED, S.FAILED, S.STOPPED, S.STUCK}),
    S.STOPPING: frozenset({S.SUCCEEDED, S.FAILED, S.STOPPED, S.STUCK}),
    # Stuck -> anything the agent's journal proves (auto resolution), or Stopping when a
    # person stops it again (the kill is re-delivered).
    S.STUCK: frozenset({S.RUNNING, S.STOPPING, S.SUCCEEDED, S.FAILED, S.STOPPED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.STOPPED: frozenset(),
}

#: What a person may request with ``jobnet.dev/override: PATH=STATE``.
OVERRIDE_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # Ready = run it again as a new attempt (a new agent key, so never deduplicated away).
    S.STUCK: frozenset({S.READY, S.SUCCEEDED, S.FAILED, S.STOPPED}),
    # Re-run a failed job, or bypass it so that its downstream runs.
    S.FAILED: frozenset({S.READY, S.SUCCEEDED}),
}

#: States a person may name in an override annotation.
OVERRIDE_TARGETS: frozenset[JobState] = frozenset(
    target for targets in OVERRIDE_TRANSITIONS.values() for target in targets
)


def automatic_transition_allowed(old: JobState, new: JobState) -> bool:
    return old == new or new in AUTOMATIC_TRANSITIONS[old]


def override_allowed(old: JobState, new: JobState) -> bool:
    return new in OVERRIDE_TRANSITIONS.get(old, frozenset())


def describe_override_rules() -> str:
    """One line for error messages: ``Stuck -> Ready|Succeeded|...; Failed -> ...``."""
    return "; ".join(f"{old} -> {'|'.join(sorted(new))}" for old, new in OVERRIDE_TRANSITIONS.items())


class StuckReason(StrEnum):
    """Why a job is Stuck: the operator cannot know the job's real state."""

    LAUNCH_OUTCOME_UNKNOWN = "LaunchOutcomeUnknown"
    HEARTBEAT_LOST = "HeartbeatLost"
    STOP_OUTCOME_UNKNOWN = "StopOutcomeUnknown"
    HOST_DOWN = "HostDown"
    AGENT_LOST = "AgentLost"
    SUPERVISOR_LOST = "SupervisorLost"


#: Human message per stuck reason; ``str.format`` fields: path, host, attempts, detail.
STUCK_MESSAGES: Mapping[StuckReason, str] = {
    StuckReason.LAUNCH_OUTCOME_UNKNOWN: (
        "the launch request to {host} may or may not have reached the agent "
        "({attempts} delivery attempt(s), last: {detail}); whether the script runs is unknown"
    ),
    StuckReason.HEARTBEAT_LOST: (
        "no heartbeat from the agent on {host} for {detail}; the job may still be running or may have ended"
    ),
    StuckReason.STOP_OUTCOME_UNKNOWN: (
        "the kill request to {host} may or may not have reached the agent "
        "({attempts} delivery attempt(s), last: {detail}); whether the job still runs is unknown"
    ),
    StuckReason.HOST_DOWN: (
        "cannot reach {host} to stop the job ({attempts} attempt(s), last: {detail}); "
        "the VM may be down and the job's state is unknown"
    ),
    StuckReason.SUPERVISOR_LOST: (
        "the agent on {host} lost the job's supervisor and the script ended unsupervised ({detail}); "
        "unless its wrapper recorded the exit code, its result is unknown"
    ),
    StuckReason.AGENT_LOST: (
        "the agent on {host} has no record of this job ({detail}); its state directory may "
        "have been lost, so whether the script ran is unknown"
    ),
}


def stuck_message(reason: StuckReason, *, host: str, attempts: int = 0, detail: str = "") -> str:
    return STUCK_MESSAGES[reason].format(host=host, attempts=attempts, detail=detail or "n/a")


class Reason(StrEnum):
    """Reason codes the operator itself sets (agent records add their own, e.g. ScriptNotFound)."""

    HOST_UNREACHABLE = "HostUnreachable"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    HOST_KEY_MISMATCH = "HostKeyMismatch"
    NO_HOST = "NoHost"
    NON_ZERO_EXIT = "NonZeroExit"
    TIMED_OUT = "TimedOut"
    STOP_REQUESTED = "StopRequested"
    UPSTREAM_NOT_SUCCEEDED = "UpstreamNotSucceeded"
    OVERRIDDEN = "Overridden"


#: Delivery failures that prove the request never reached the agent (retried, then Failed).
UNDELIVERED_REASONS: frozenset[Reason] = frozenset(
    {Reason.HOST_UNREACHABLE, Reason.AUTHENTICATION_FAILED, Reason.HOST_KEY_MISMATCH}
)


def derive_jobnet_state(child_states: Iterable[JobState]) -> JobState:
    """The state of a jobnet (sub-jobnet or root) from its children's states.

    A jobnet finishes as a unit: Running while anything under it is active; Stuck when
    nothing is active and something is Stuck; Pending while it waits to start; once everything
    ended: Failed if any child failed, else Stopped if any was stopped, else Succeeded (all
    Skipped: Skipped).
    """
    states = set(child_states)
    if not states:
        return S.SUCCEEDED
    if states & ACTIVE_STATES:
        if states & {S.READY, S.STARTING, S.RUNNING}:
            return S.RUNNING
        return S.STOPPING
    if S.STUCK in states:
        return S.STUCK
    if S.PENDING in states:
        # Nothing active or stuck, yet some children wait: the jobnet itself has not started
        # (its own `after` is not satisfied); children may already be Stopped by a stop inside it.
        return S.PENDING
    if S.FAILED in states:
        return S.FAILED
    if S.STOPPED in states:
        return S.STOPPED
    if states == {S.SUCCEEDED}:
        return S.SUCCEEDED
    # Skipped children only arise behind a failed/stopped one; alone they mean the
    # jobnet itself never ran.
    return S.SKIPPED


def run_phase(root_state: JobState) -> RunPhase:
    """The run's phase from the derived state of its root jobnet."""
    return {
        S.PENDING: RunPhase.PENDING,
        S.READY: RunPhase.RUNNING,
        S.STARTING: RunPhase.RUNNING,
        S.RUNNING: RunPhase.RUNNING,
        S.STOPPING: RunPhase.RUNNING,
        S.STUCK: RunPhase.STUCK,
        S.SUCCEEDED: RunPhase.SUCCEEDED,
        S.FAILED: RunPhase.FAILED,
        S.STOPPED: RunPhase.STOPPED,
        S.SKIPPED: RunPhase.FAILED,
    }[root_state]
