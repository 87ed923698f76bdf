"""Detection of jobs whose supervisor is gone: the thin I/O around the pure decision
(:func:`jobnet_agent.endrule.decide`): what the agent sees of a job, committing the end, and
the :class:`Detector` that serve runs on start and every sweep.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from jobnet_agent.config import AgentConfig
from jobnet_agent.endrule import ADOPT, END, Observation, Verdict, decide
from jobnet_agent.eventlog import EventReader, record_of_entry
from jobnet_agent.jobdir import JobDir
from jobnet_agent.journal import Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.procfs import group_alive, process_alive
from jobnet_agent.protocol import ACCEPTED, ACTIVE_STATES, RUNNING, JobKey, JobRecord


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
        # A script starts only after its running record is durable (older agents: a marker).
        may_have_started=record.state == RUNNING or job.may_have_started(),
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


class ActiveJobs:
    """The accepted and running jobs, kept current by following the event log.

    One directory scan when serve starts (its repair's); afterwards a sweep costs a ``stat`` of
    the event log plus the new events, however many ended jobs the state dir keeps.
    """

    def __init__(self, records: List[JobRecord], reader: EventReader) -> None:
        """``records``: every job's record, read after ``reader`` was positioned (what changed
        during the scan is read again from the log: the latest seq per key tells)."""
        self._reader = reader
        self._latest_seq: Dict[JobKey, int] = {r.key: r.seq for r in records}
        self._jobs: Dict[JobKey, JobRecord] = {r.key: r for r in records if r.state in ACTIVE_STATES}

    def current(self) -> List[JobRecord]:
        while True:
            entries = self._reader.poll_states()
            if not entries:
                return list(self._jobs.values())
            # Only a job still active after these entries needs its record decoded (most of a
            # sweep's entries are of jobs that started and ended since the last one).
            active: Dict[JobKey, bytes] = {}
            for entry in entries:
                if self._latest_seq.get(entry.key, 0) >= entry.seq:
                    continue  # already known from the scan
                self._latest_seq[entry.key] = entry.seq
                if entry.state in ACTIVE_STATES:
                    active[entry.key] = entry.line
                else:
                    active.pop(entry.key, None)
                    self._jobs.pop(entry.key, None)
            for key, line in active.items():
                self._jobs[key] = record_of_entry(line)


class Detector:
    """Finds active jobs whose supervisor is gone and settles them: adopts a job that still
    runs, records the end of one that does not (serve runs it on start and every sweep).

    ``adopt(job_dir, lock_fd)`` hands a job that still runs to a supervising process (the fd is
    the job's supervisor lock, held; the caller closes its copy afterwards).
    """

    def __init__(
        self,
        config: AgentConfig,
        boot_id: str,
        journal: Journal,
        log: AgentLog,
        adopt: Callable[[str, int], None],
    ) -> None:
        self.config = config
        self.boot_id = boot_id
        self._adopt = adopt
        self.journal = journal
        self.log = log
        self._active: Optional[ActiveJobs] = None

    def start_from(self, records: List[JobRecord], reader: EventReader) -> None:
        """The active jobs are among ``records`` and what ``reader`` reads: serve's repair's
        scan (:attr:`RepairReport.following`), so that its start reads the state dir once."""
        self._active = ActiveJobs(records, reader)

    def sweep(self) -> None:
        """Check every active job (known since :meth:`start_from`)."""
        assert self._active is not None, "serve's repair (start_from) comes before any sweep"
        for record in self._active.current():
            self.check_job(record)

    def check_job(self, record: JobRecord) -> None:
        observed = observe(self.journal, record, self.boot_id)
        if observed is None:
            return  # supervised: its supervisor follows the journal (kills included)
        seen, lock_fd = observed
        try:
            verdict = decide(record, seen)
            if verdict.action == ADOPT:
                self.log.line(verdict.why, record.key)
                self._adopt(self.journal.job(record.key).path, lock_fd)
            elif verdict.action == END:
                committed = end_record(self.journal, record, verdict)
                if committed is not None:
                    self.log.line(f"{verdict.why}: {committed.message}", record.key)
        finally:
            os.close(lock_fd)
