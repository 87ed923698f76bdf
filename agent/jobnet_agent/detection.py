"""Detection of jobs whose supervisor is gone: the thin I/O around the pure decision
(:func:`jobnet_agent.endrule.decide`): what the agent sees of a job, and committing the end.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

from jobnet_agent.endrule import Observation, Verdict
from jobnet_agent.jobdir import JobDir
from jobnet_agent.journal import Journal
from jobnet_agent.procfs import group_alive, process_alive
from jobnet_agent.protocol import ACCEPTED, RUNNING, JobRecord


def observe(journal: Journal, record: JobRecord, boot_id: str) -> Optional[Tuple[Observation, int]]:
    """Look at an active job whose supervisor is gone: the observation and the job's supervisor
    lock (taken). None while a supervisor holds the lock: the usual case on every sweep, so
    nothing else is probed then (a /proc scan, file lookups)."""
    job = journal.job(record.key)
    lock_fd = job.try_take_supervisor_lock()
    if lock_fd is None:
        return None
    seen = Observation(
        supervisor_alive=False,
        boot_id=boot_id,
        process_alive=record.pid is not None
        and (process_alive(record.pid, record.pid_start_ticks) or group_alive(record.pgid or record.pid)),
        wrapper_exit=job.read_wrapper_exit(),
        may_have_started=job.may_have_started(),
    )
    return seen, lock_fd


def end_record(journal: Journal, record: JobRecord, verdict: Verdict) -> Optional[JobRecord]:
    """Commit an END verdict if the record did not change meanwhile (another process may act too)."""
    end = verdict.end
    assert end is not None, "only an END verdict has an end to record"
    sizes = stored_output_sizes(journal.job(record.key))
    _, committed = journal.update(
        record.key,
        lambda current: (
            current.replace(ended_at=time.time(), **sizes, **end.changes())
            if current.seq == record.seq and current.state in (ACCEPTED, RUNNING)
            else None
        ),
    )
    return committed


def stored_output_sizes(job: JobDir) -> Dict[str, int]:
    """The output sizes of a job whose supervisor (which counts them) is gone, from what is
    stored: the output stays retrievable (``tail``/``read``), so the record must say it exists."""
    sizes: Dict[str, int] = {}
    for stream in ("stdout", "stderr"):
        total, _, dropped = job.output(stream).sizes()
        sizes[stream + "_bytes"], sizes[stream + "_dropped"] = total, dropped
    return sizes
