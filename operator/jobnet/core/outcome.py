"""What an agent's JobRecord means for a job's state (docs/agent-protocol.md, "Mapping").

``exited`` 0 -> Succeeded; ``exited`` non-zero, ``failedToStart``, ``interrupted`` -> Failed
with the record's reason; ``killed`` -> Stopped, unless the process had already exited on its
own (then the real exit code decides, F06-F09) or the kill was a timeout (Failed, TimedOut);
``timedOut`` -> Failed, TimedOut. ``lost`` (the job's supervisor died; the script ended
unsupervised) -> Stuck ``SupervisorLost`` (scenario E02): the operator never pretends to know
more than was recorded. When the job's wrapper recorded the script's exit code (the record's
``exitCode``), :func:`recorded_outcome` is what that code proves, and ``stuckResolution: Auto``
resolves the job from it; otherwise a person settles it. Pure: no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from jobnet.core.agentproto import JobRecord, KillRequested
from jobnet.core.states import JobState, Reason, StuckReason


class Outcome(BaseModel):
    """The final state a terminal record proves, with reason and message for people."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    reason: str | None
    #: None for a plain success (exit code 0 says it all; keeps large runs' status compact).
    message: str | None
    exit_code: int | None


def _kill_reason(record: JobRecord) -> str | None:
    requested = record.kill_requested
    if isinstance(requested, KillRequested):
        return requested.reason
    if isinstance(requested, str):
        return requested
    return None


def record_outcome(record: JobRecord, *, kill_reason: str | None = None) -> Outcome | None:
    """The outcome a terminal record proves; None while the record is not terminal.

    ``kill_reason`` is the reason of the kill the operator requested ("stop"/"timeout"), when
    it requested one: a timeout kill that the agent reports as ``killed`` is still a timeout.
    """
    if not record.terminal:
        return None
    code = record.exit_code
    detail = f": {record.message}" if record.message else ""
    if record.state == "exited" or (record.state == "killed" and code is not None and record.signal is None):
        # The script ended by itself (also when a kill arrived after it had exited): the real
        # exit code decides, whatever was requested (F06-F09).
        assert code is not None  # the agent's `exited` always carries one
        return _exit_outcome(code, record.reason, record.message)
    if record.state == "timedOut" or (record.state == "killed" and "timeout" in (kill_reason, _kill_reason(record))):
        return Outcome(
            state=JobState.FAILED,
            reason=Reason.TIMED_OUT,
            message=f"killed after exceeding its timeout{detail}",
            exit_code=code,
        )
    if record.state == "killed":
        return Outcome(
            state=JobState.STOPPED,
            reason=record.reason or Reason.STOP_REQUESTED,
            message=f"stopped on request{detail}",
            exit_code=code,
        )
    if record.state == "lost":
        known = "" if code is None else f" (its wrapper recorded exit code {code})"
        unknown = "" if known else "; how the script ended is unknown"
        return Outcome(
            state=JobState.STUCK,
            reason=StuckReason.SUPERVISOR_LOST,
            message=f"the agent lost the job's supervisor{known or unknown}{detail}",
            exit_code=None,
        )
    if record.fenced and kill_reason == "stop":
        # A stop's kill found no job and fenced the key: the script never ran, and a launch
        # arriving late is refused. Stopped, not Failed (a fence for a re-run keeps Fenced).
        # Unless the agent had reported the attempt running: then it lost the record, and the
        # scheduler keeps the job Stuck AgentLost (records.lost_before_fenced).
        return Outcome(
            state=JobState.STOPPED,
            reason=Reason.STOP_REQUESTED,
            message="stopped: never started (the stop reached the agent before the launch; its key is fenced)",
            exit_code=None,
        )
    # failedToStart, interrupted: the script did not finish by itself - never a success.
    default_reason = {"failedToStart": "FailedToStart", "interrupted": "HostRebooted"}
    return Outcome(
        state=JobState.FAILED,
        reason=record.reason or default_reason[record.state],
        message=f"agent reports {record.state}{detail}",
        exit_code=code,
    )


def _exit_outcome(code: int, reason: str | None, message: str | None) -> Outcome:
    """What exit code ``code`` proves; ``message``: the agent's, unless it only says the same."""
    if code == 0:
        return Outcome(state=JobState.SUCCEEDED, reason=None, message=None, exit_code=0)
    said = f"exited with code {code}"
    return Outcome(
        state=JobState.FAILED,
        reason=reason or Reason.NON_ZERO_EXIT,
        message=message if message and message.startswith(said) else f"{said}: {message}" if message else said,
        exit_code=code,
    )


def recorded_outcome(record: JobRecord) -> Outcome | None:
    """For a ``lost`` record whose wrapper recorded the script's exit code: what that code proves
    (the script ended, unsupervised, with it). None for anything else."""
    if record.state != "lost" or record.exit_code is None:
        return None
    return _exit_outcome(record.exit_code, None, None)


def describe_record(record: JobRecord) -> str:
    """Short text for messages: ``exited with code 0``, ``running (pid 42)``."""
    if record.state == "exited":
        return f"exited with code {record.exit_code}"
    if record.state == "lost" and record.exit_code is not None:
        return f"ended unsupervised (its supervisor died) with exit code {record.exit_code}, as its wrapper recorded"
    if record.state in ("accepted", "running"):
        return f"{record.state}" + (f" (pid {record.pid})" if record.pid else "")
    return record.state + (f" ({record.reason})" if record.reason else "")
