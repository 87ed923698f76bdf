"""The end rule: how a job's end is decided from what was recorded. Pure: no I/O, no clock.

Two facts decide an end. The job's shell wrapper writes one when the script ends (its exit code,
and whether its supervisor was still its parent: :func:`wrapper_command` writes it,
:func:`parse_wrapper_exit` reads it back). The supervisor knows another (the wait status of the
wrapper and whether it sent a kill). :func:`end_of` turns them into the job's end;
:func:`decide` settles a job whose supervisor is gone from an :class:`Observation` (what the
agent saw on the VM, gathered by ``detection``).

Never a guessed success: the end is ``exited`` only with an exit code the wrapper wrote while
supervised, or a status the supervisor saw itself.
"""

from __future__ import annotations

import shlex
import signal
from typing import Dict, Optional

from jobnet_agent.frozen import Frozen, init_fields
from jobnet_agent.protocol import (
    EXITED,
    FAILED_TO_START,
    INTERRUPTED,
    KILLED,
    LOST,
    TIMED_OUT,
    JobRecord,
)

KEEP = "keep"
ADOPT = "adopt"
END = "end"


class WrapperExit(Frozen):
    """What the job's wrapper wrote: how the script ended, or that it never started."""

    #: The script's exit code; None: the wrapper never started the script (its supervisor died
    #: before telling it to go).
    code: Optional[int]
    #: The wrapper's parent was no longer its supervisor: the script ended unsupervised.
    orphaned: bool

    def __init__(self, code: Optional[int], orphaned: bool) -> None:
        init_fields(self, code=code, orphaned=orphaned)

    @property
    def started(self) -> bool:
        return self.code is not None


#: What the wrapper writes when its supervisor died before telling it to start the script.
NEVER_STARTED = b"never"


def wrapper_command(exit_file: str, supervisor_pid: int) -> str:
    """The ``sh -c`` program that runs the script (``"$@"``) and records how it ended.

    The wrapper starts with a *go* pipe as its stdin: it runs the script only once its supervisor
    writes a line there, which the supervisor does after the job's ``running`` record (its pid) is
    durable. If the supervisor dies first, the read sees end of file: the wrapper appends
    ``never`` to the exit file and exits without running anything, so a ``running`` record whose
    go never came is known never to have run.

    The wrapper then holds read ends of its own output pipes (fds 3 and 4, reopened through
    ``/proc``), so a supervisor that dies never SIGPIPEs the job; the script gets neither, and
    its stdin is /dev/null. When the script ends, the wrapper notes whether its parent is still
    ``supervisor_pid`` (else the supervisor died mid-run; the ``PPid:`` line of
    ``/proc/$$/status``, the 7th: the shell's ``read`` takes a byte per system call, and
    ``/proc/$$/stat``'s one line of ~300 bytes cost it 0.2 ms), appends the line ``<code>[ orphaned]``
    to the exit file (a file the job has already: no inode more per job) and exits the same
    way. The pid is given, not taken from ``$PPID``: the shell reads that at its start, and a
    supervisor that dies before the shell gets to run would leave ``$PPID`` naming the new
    parent (E02 then looked like a supervised end).
    """
    exit_to = shlex.quote(exit_file)
    never = NEVER_STARTED.decode()
    return (
        f"read -r _ || {{ printf '{never}\\n' >> {exit_to}; exit 125; }}; "
        "exec </dev/null; command exec 3</proc/$$/fd/1 4</proc/$$/fd/2 || :; "
        f'"$@" 3<&- 4<&-; c=$?; p=; {{ while read -r k v; do [ "$k" = PPid: ] && p=$v && break; done; }} '
        "2>/dev/null </proc/$$/status; o=; "
        f'[ -n "$p" ] && [ "$p" != {supervisor_pid} ] && o=" orphaned"; '
        f'printf "%s%s\\n" "$c" "$o" >> {exit_to}; exit "$c"'
    )


def parse_wrapper_exit(text: bytes) -> Optional[WrapperExit]:
    """The wrapper's record from its exit file's content; None when it was cut short."""
    fields = text.split()
    if not text.endswith(b"\n") or not fields:
        return None
    if fields == [NEVER_STARTED]:
        return WrapperExit(code=None, orphaned=True)
    if not fields[0].isdigit():
        return None
    return WrapperExit(code=int(fields[0]), orphaned=fields[1:] == [b"orphaned"])


class End(Frozen):
    """How a job ended: the fields of its terminal record."""

    state: str
    reason: Optional[str]
    message: str
    exit_code: Optional[int]
    signal: Optional[int]

    def __init__(
        self,
        state: str,
        reason: Optional[str],
        message: str,
        exit_code: Optional[int] = None,
        signal: Optional[int] = None,
    ) -> None:
        init_fields(self, state=state, reason=reason, message=message, exit_code=exit_code, signal=signal)

    def changes(self) -> Dict[str, object]:
        """The record fields this end sets (for :meth:`JobRecord.replace`)."""
        return dict(vars(self))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def end_of(wrapper_exit: Optional[WrapperExit], status: Optional[int], kill_reason: Optional[str]) -> End:
    """The end of a job once its process-group leader (the wrapper) is gone.

    ``status`` is the wrapper's wait status as ``Popen.returncode`` gives it (-N for signal N;
    None when it was not our child), ``kill_reason`` the kill we sent (``stop``/``timeout``).
    A wrapper that never got its go never ran the script: ``failedToStart``, whatever else.

    The wrapper's exit code is the truth whenever the script ended supervised (even when a kill
    was requested: the script had already ended by itself, F06-F09). A script that ended after
    its supervisor died ran unsupervised for a while: ``lost``, with the code the wrapper
    recorded (the operator resolves the job from it under ``stuckResolution: Auto``). Without
    the wrapper's record, a kill we sent explains the end; anything else is unknown and
    ``lost``, never a success.
    """
    if wrapper_exit is not None and wrapper_exit.code is None:
        message = "its supervisor died before telling the wrapper to start the script; it never ran"
        return End(FAILED_TO_START, "SupervisorLost", message)
    if wrapper_exit is not None and wrapper_exit.orphaned:
        return End(
            LOST,
            "SupervisorLost",
            "its supervisor died mid-run; the script ended unsupervised (the wrapper recorded exit code "
            f"{wrapper_exit.code})",
            exit_code=wrapper_exit.code,
        )
    if wrapper_exit is not None:
        return End(EXITED, None, f"exited with code {wrapper_exit.code}", exit_code=wrapper_exit.code)
    signum = -status if status is not None and status < 0 else None
    if kill_reason is not None:
        state, reason = (TIMED_OUT, "TimedOut") if kill_reason == "timeout" else (KILLED, "StopRequested")
        how = f"by {signal_name(signum)}" if signum else "(exit status unknown)"
        verb = "timed out" if state == TIMED_OUT else "stopped"
        return End(state, reason, f"{verb}: process group ended {how}", signal=signum)
    if signum is not None:
        return End(
            EXITED,
            "Signaled",
            f"terminated by {signal_name(signum)}, not sent by the agent",
            exit_code=128 + signum,
            signal=signum,
        )
    if status is not None:
        return End(EXITED, None, f"exited with code {status}", exit_code=status)
    return End(
        LOST,
        "SupervisorLost",
        "the job's process group ended without an exit code (killed from outside?); its result is unknown",
    )


class Observation(Frozen):
    """What the agent can see of an active job right now."""

    supervisor_alive: bool
    boot_id: str
    process_alive: bool
    wrapper_exit: Optional[WrapperExit]
    may_have_started: bool

    def __init__(
        self,
        supervisor_alive: bool,
        boot_id: str,
        process_alive: bool,
        wrapper_exit: Optional[WrapperExit],
        may_have_started: bool,
    ) -> None:
        init_fields(
            self,
            supervisor_alive=supervisor_alive,
            boot_id=boot_id,
            process_alive=process_alive,
            wrapper_exit=wrapper_exit,
            may_have_started=may_have_started,
        )


class Verdict(Frozen):
    """What to do about an active job: keep it, adopt it (a new supervisor), or end it."""

    action: str
    #: The end to record, for END.
    end: Optional[End]
    #: For the agent log.
    why: str

    def __init__(self, action: str, end: Optional[End], why: str) -> None:
        init_fields(self, action=action, end=end, why=why)


def decide(record: JobRecord, seen: Observation) -> Verdict:
    """What to do about an active (accepted/running) record, given what the agent sees."""
    if seen.supervisor_alive:
        return Verdict(KEEP, None, "supervisor alive")
    if seen.wrapper_exit is not None:
        end = end_of(seen.wrapper_exit, None, None)
        if end.state == FAILED_TO_START:
            return Verdict(END, end, "lost: supervisor died before starting the script")
        if end.state != EXITED:
            return Verdict(END, end, "lost: supervisor died mid-run")
        code = seen.wrapper_exit.code
        message = f"exited with code {code} (recorded by the job's wrapper; its supervisor died before reporting)"
        end = End(end.state, end.reason, message, end.exit_code, end.signal)
        return Verdict(END, end, "supervisor died after the job ended: result recovered")
    if record.boot_id is not None and record.boot_id != seen.boot_id:
        boots = f"boot id {record.boot_id}, now {seen.boot_id}"
        if not seen.may_have_started:
            message = f"the host rebooted before the script was started ({boots}); it never ran"
            return Verdict(
                END, End(FAILED_TO_START, "HostRebooted", message), "interrupted: host rebooted before start"
            )
        message = f"the host rebooted while the job ran ({boots}); its result is unknown"
        return Verdict(END, End(INTERRUPTED, "HostRebooted", message), "interrupted: host rebooted (boot id changed)")
    if not seen.may_have_started:
        message = "the agent died before starting the script; it never ran"
        return Verdict(
            END, End(FAILED_TO_START, "SupervisorLost", message), "lost: supervisor died before starting the script"
        )
    if seen.process_alive and record.pid is not None:
        return Verdict(ADOPT, None, f"supervisor died, pid {record.pid} still runs: adopting it")
    if record.pid is None:
        message = (
            "the supervisor died while starting the script, before it reported a pid; whether the script ran is unknown"
        )
        return Verdict(END, End(LOST, "SupervisorLost", message), "lost: supervisor died while starting the script")
    if record.kill_requested is not None:
        state, reason = (TIMED_OUT, "TimedOut") if record.kill_requested == "timeout" else (KILLED, "StopRequested")
        message = "the process is gone after a kill was requested; its supervisor died, exit status unknown"
        return Verdict(END, End(state, reason, message), "supervisor died during a kill; process gone")
    message = (
        f"the supervisor died and the job's process (pid {record.pid}) is gone without an exit code; "
        "its result is unknown"
    )
    why = f"lost: supervisor died and pid {record.pid} is gone without an exit code"
    return Verdict(END, End(LOST, "SupervisorLost", message), why)
