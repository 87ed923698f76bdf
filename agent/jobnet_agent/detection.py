"""Detection of jobs whose supervisor is gone: a pure decision, and the thin I/O that feeds it.

Never guesses a success: the end is ``exited`` only with an exit code the job's wrapper wrote.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import time
from typing import Dict, Optional, Tuple

from jobnet_agent.journal import STARTED_MARKER, SUPERVISOR_LOCK, Journal
from jobnet_agent.output import StoredOutput
from jobnet_agent.protocol import (
    ACCEPTED,
    EXITED,
    FAILED_TO_START,
    INTERRUPTED,
    KILLED,
    LOST,
    RUNNING,
    TIMED_OUT,
    JobRecord,
)
from jobnet_agent.supervisor import (
    WrapperExit,
    end_changes,
    group_alive,
    process_alive,
    read_wrapper_exit,
)

KEEP = "keep"
ADOPT = "adopt"
END = "end"


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the agent can see of an active job right now."""

    supervisor_alive: bool
    boot_id: str
    process_alive: bool
    wrapper_exit: Optional[WrapperExit]
    may_have_started: bool


@dataclasses.dataclass(frozen=True)
class Verdict:
    action: str
    changes: Dict[str, object]
    why: str


def decide(record: JobRecord, seen: Observation) -> Verdict:
    """What to do about an active (accepted/running) record."""
    if seen.supervisor_alive:
        return Verdict(KEEP, {}, "supervisor alive")
    if seen.wrapper_exit is not None:
        changes = end_changes(seen.wrapper_exit, None, None)
        if changes["state"] != EXITED:
            return Verdict(END, changes, "lost: supervisor died mid-run")
        changes["message"] = (
            "exited with code %d (recorded by the job's wrapper; its supervisor died before reporting)"
            % seen.wrapper_exit.code
        )
        return Verdict(END, changes, "supervisor died after the job ended: result recovered")
    if record.boot_id is not None and record.boot_id != seen.boot_id:
        if not seen.may_have_started:
            return Verdict(END, dict(
                state=FAILED_TO_START, reason="HostRebooted",
                message=f"the host rebooted before the script was started (boot id {record.boot_id}, now {seen.boot_id}); it never ran",
            ), "interrupted: host rebooted before start")  # fmt: skip
        return Verdict(END, dict(
            state=INTERRUPTED, reason="HostRebooted",
            message=f"the host rebooted while the job ran (boot id {record.boot_id}, now {seen.boot_id}); its result is unknown",
        ), "interrupted: host rebooted (boot id changed)")  # fmt: skip
    if not seen.may_have_started:
        return Verdict(END, dict(
            state=FAILED_TO_START, reason="SupervisorLost",
            message="the agent died before starting the script; it never ran",
        ), "lost: supervisor died before starting the script")  # fmt: skip
    if seen.process_alive and record.pid is not None:
        return Verdict(ADOPT, {}, "supervisor died, pid %d still runs: adopting it" % record.pid)
    if record.pid is None:
        return Verdict(END, dict(
            state=LOST, reason="SupervisorLost",
            message="the supervisor died while starting the script, before it reported a pid; "
            "whether the script ran is unknown",
        ), "lost: supervisor died while starting the script")  # fmt: skip
    if record.kill_requested is not None:
        state, reason = (TIMED_OUT, "TimedOut") if record.kill_requested == "timeout" else (KILLED, "StopRequested")
        return Verdict(END, dict(
            state=state, reason=reason,
            message="the process is gone after a kill was requested; its supervisor died, exit status unknown",
        ), "supervisor died during a kill; process gone")  # fmt: skip
    return Verdict(END, dict(
        state=LOST, reason="SupervisorLost",
        message="the supervisor died and the job's process (pid %d) is gone without an exit code; "
        "its result is unknown" % record.pid,
    ), "lost: supervisor died and pid %d is gone without an exit code" % record.pid)  # fmt: skip


def try_take_supervisor_lock(job_dir: str) -> Optional[int]:
    """The job's supervisor lock, if no supervisor holds it (the caller must close the fd)."""
    try:
        fd = os.open(os.path.join(job_dir, SUPERVISOR_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def observe(journal: Journal, record: JobRecord, boot_id: str) -> Optional[Tuple[Observation, int]]:
    """Look at an active job whose supervisor is gone: the observation and the job's supervisor
    lock (taken). None while a supervisor holds the lock: the usual case on every sweep, so
    nothing else is probed then (a /proc scan, file lookups)."""
    job_dir = journal.job_dir(record.key)
    lock_fd = try_take_supervisor_lock(job_dir)
    if lock_fd is None:
        return None
    seen = Observation(
        supervisor_alive=False,
        boot_id=boot_id,
        process_alive=record.pid is not None
        and (process_alive(record.pid, record.pid_start_ticks) or group_alive(record.pgid or record.pid)),
        wrapper_exit=read_wrapper_exit(job_dir),
        may_have_started=os.path.exists(os.path.join(job_dir, STARTED_MARKER)),
    )
    return seen, lock_fd


def end_record(journal: Journal, record: JobRecord, verdict: Verdict) -> Optional[JobRecord]:
    """Commit an END verdict if the record did not change meanwhile (another process may act too)."""
    sizes = stored_output_sizes(journal.job_dir(record.key))
    _, committed = journal.update(
        record.key,
        lambda current: (
            current.replace(ended_at=time.time(), **sizes, **verdict.changes)
            if current.seq == record.seq and current.state in (ACCEPTED, RUNNING)
            else None
        ),
    )
    return committed


def stored_output_sizes(job_dir: str) -> Dict[str, int]:
    """The output sizes of a job whose supervisor (which counts them) is gone, from what is
    stored: the output stays retrievable (``tail``/``read``), so the record must say it exists."""
    sizes: Dict[str, int] = {}
    for stream in ("stdout", "stderr"):
        total, _, dropped = StoredOutput(job_dir, stream).sizes()
        sizes[stream + "_bytes"], sizes[stream + "_dropped"] = total, dropped
    return sizes
