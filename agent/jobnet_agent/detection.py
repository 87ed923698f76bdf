"""Detection of jobs whose supervisor is gone: the thin I/O around the pure decision
(:func:`jobnet_agent.endrule.decide`): what the agent sees of a job, and committing the end.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Dict, Optional, Tuple

from jobnet_agent.endrule import Observation, Verdict
from jobnet_agent.journal import STARTED_MARKER, SUPERVISOR_LOCK, Journal, read_wrapper_exit
from jobnet_agent.output import StoredOutput
from jobnet_agent.procfs import group_alive, process_alive
from jobnet_agent.protocol import ACCEPTED, RUNNING, JobRecord


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
    end = verdict.end
    assert end is not None, "only an END verdict has an end to record"
    sizes = stored_output_sizes(journal.job_dir(record.key))
    _, committed = journal.update(
        record.key,
        lambda current: (
            current.replace(ended_at=time.time(), **sizes, **end.changes())
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
