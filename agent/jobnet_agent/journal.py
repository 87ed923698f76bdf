"""The durable journal of one agent state directory: every job's record, changed only by
transactions.

Layout of the state dir (a job directory's own files: :mod:`jobnet_agent.jobdir`; the event log
and its followers' FIFOs: :mod:`jobnet_agent.eventlog`)::

    <state>/journal.lock          fcntl lock serialising every journal write; holds the write intent
    <state>/events.log            the event log: the durable truth
    <state>/boot_id               the boot under which the record files were last made current
    <state>/watchers/             wake-up FIFOs of the event log's followers
    <state>/jobs/<run>/<path>#<attempt>/   a job directory
    <state>/agent.log             the agent log (jobnet_agent.log)

A state change is one transaction under ``journal.lock``: allocate ``seq`` = last logged seq + 1,
note the intent (seq, job dir) in the lock file, write the record file, append the event.
A process killed between the record and the event leaves the intent behind; the next transaction
sees it and appends the missing event, so the event log never misses a record that was written
and a seq is never given to two records.

One fsync per state change, or fewer: only the event log is fsynced, and the transactions a
thread makes inside :meth:`Journal.group_commit` share one fsync at its end (serve carries out
the requests that arrive together that way: a fan-out's launches, a round's acks). The record files are not fsynced,
so they are always current while the machine stays up (a killed process loses nothing the page
cache holds), and only a power loss or kernel crash can leave one stale, torn or missing. Both
mean a reboot, so when serve starts under a new boot id it rebuilds every record file from the
event log (:meth:`Journal.repair`) before any request. A record file is created by a rename and
then rewritten in place within its first page (a kill -9 cannot tear a one-page write); its line
ends with a crc32 of the rest, so a reader that catches it mid-rewrite rereads it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from jobnet_agent.config import DEFAULT_COMPACT_THRESHOLD_BYTES
from jobnet_agent.durable import atomic_write, fsync_dir
from jobnet_agent.eventlog import EventLog, EventReader
from jobnet_agent.faults import crash_point, fail_point
from jobnet_agent.jobdir import JobDir, JournalError, job_dir_path, run_dir_name, stored_json
from jobnet_agent.protocol import JobKey, JobRecord, LaunchSpec

__all__ = ["GroupCommit", "Journal", "JournalError", "RepairReport", "Transaction"]

#: Size of the intent in the lock file (padded with spaces); job dir paths are far shorter.
_INTENT_BYTES = 1024


class Transaction:
    """Journal writes made while holding ``journal.lock``."""

    def __init__(self, journal: Journal, lock_fd: int, events_fd: int, last_seq: int) -> None:
        self._journal = journal
        self._lock_fd = lock_fd
        self._events_fd = events_fd
        self.last_seq = last_seq

    def commit(self, record: JobRecord) -> JobRecord:
        """Give the record the next seq, write it, then log it. Returns the record as stored."""
        journal = self._journal
        record = record.replace(seq=self.last_seq + 1)
        job = journal.job(record.key)
        # Relative to the state dir, which holds it (journal.job names it so).
        intent = f"{record.seq} {job.path[len(journal.state_prefix) :]}\n".encode()
        # Overwritten in place at a fixed size: an ftruncate of the lock file costs milliseconds.
        os.pwrite(self._lock_fd, intent.ljust(_INTENT_BYTES), 0)
        # Not fsynced: the event below is the durable copy (see the module docstring). Encoded
        # once for both.
        body = stored_json(record)
        job.write_record(record, body)
        crash_point(
            journal.role + ":journal-after-record",
            f"{journal.role}:journal-after-record:{record.state}",
        )
        group = journal.open_group()
        journal.events.append(record, durable=group is None, fd=self._events_fd, body=body)
        if group is not None:
            group.pending = True
            group.kills = group.kills or record.kill_requested is not None
        self.last_seq = record.seq
        return record


class GroupCommit:
    """The transactions of one thread whose events share one fsync (:meth:`Journal.group_commit`)."""

    def __init__(self, journal: Journal, one_transaction: bool) -> None:
        self._journal = journal
        #: an event appended but not yet fsynced
        self.pending = False
        #: one of them carries a kill (followers of kills only are woken for it)
        self.kills = False
        #: Its transactions are one: the lock is taken by the first and held until :meth:`sync`.
        self.one_transaction = one_transaction
        #: That transaction while it holds the lock: (lock fd, events fd, transaction).
        self.held: Optional[Tuple[int, int, Transaction]] = None

    def release(self) -> None:
        """Let the journal lock go, if the group holds it (its next write takes it anew)."""
        held, self.held = self.held, None
        if held is not None:
            os.close(held[1])
            os.close(held[0])

    def sync(self) -> None:
        """Make the events appended so far durable; nothing of them is reported before. The
        lock is let go first: the fsync needs no lock, and other writers need not wait for it."""
        self.release()
        if self.pending:
            self.pending = False  # once: a failed fsync is not retried
            crash_point(self._journal.role + ":journal-before-group-sync")
            kills, self.kills = self.kills, False
            fail_point(self._journal.role + ":journal-group-sync")
            self._journal.events.sync(kills)


class RepairReport:
    """What :meth:`Journal.repair` fixed."""

    def __init__(self) -> None:
        #: Record files rebuilt from the event log after a reboot (stale, torn or missing).
        self.restored: List[JobRecord] = []
        #: Records whose event was missing, now logged.
        self.relogged: List[JobRecord] = []
        #: Unreadable record files of claims whose accepted event never became durable (never
        #: started).
        self.discarded: List[str] = []
        #: With ``repair(follow=True)``: every record as repaired, in seq order, and a reader of
        #: the events logged after them (the caller's to close).
        self.following: Optional[Tuple[List[JobRecord], EventReader]] = None


class Journal:
    """Every job's record in one state directory, shared by all the agent's processes (serve,
    supervisors, the commands a person runs).

    It exists so that a state is reported only once it is durable, and nothing is lost whatever
    process dies at whatever step. It guarantees: records change only in transactions (one at a
    time, under ``journal.lock``), each with the next ``seq``, its record file written before its
    event and its event fsynced before the transaction returns; a key is claimed (launched or
    fenced) at most once; after a crash at any step the next transaction (or, after a reboot,
    :meth:`repair`) makes the record files and the event log agree again.
    """

    def __init__(self, state_dir: str, role: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        #: The state dir with a trailing separator: the paths inside it start with this.
        self.state_prefix = os.path.join(self.state_dir, "")
        self.role = role
        self.jobs_dir = os.path.join(self.state_dir, "jobs")
        self.lock_path = os.path.join(self.state_dir, "journal.lock")
        self.boot_id_path = os.path.join(self.state_dir, "boot_id")
        self.events = EventLog(self.state_dir)
        self._groups = threading.local()

    # -- setup -------------------------------------------------------------------------------

    def open(self, create: bool = True) -> None:
        """Check (and create) the state directory; raise JournalError with a clear reason."""
        if not create and not os.path.exists(self.state_dir):
            raise JournalError(f"state dir {self.state_dir} does not exist: no agent has used it (wrong --state-dir?)")
        try:
            if create:
                os.makedirs(self.jobs_dir, mode=0o700, exist_ok=True)
            info = os.stat(self.state_dir)
        except FileExistsError:
            raise JournalError(f"state dir {self.state_dir}: a path component is not a directory") from None
        except OSError as exc:
            raise JournalError(f"state dir {self.state_dir} is not usable: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(info.st_mode):
            raise JournalError(f"state dir {self.state_dir} is not a directory")
        if not os.path.isdir(self.jobs_dir):
            raise JournalError(f"state dir {self.state_dir} has no jobs/ directory (never used by an agent?)")
        if not os.access(self.state_dir, os.R_OK | os.W_OK | os.X_OK):
            raise JournalError(f"state dir {self.state_dir} is not readable and writable by uid {os.getuid()}")
        for path in (self.lock_path, self.events.path):
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise JournalError(f"cannot open {path}: {exc.strerror or exc}") from exc

    # -- reads -------------------------------------------------------------------------------

    def job(self, key: JobKey) -> JobDir:
        return JobDir(job_dir_path(self.jobs_dir, key))

    def read_record(self, key: JobKey) -> Optional[JobRecord]:
        return self.job(key).read_record()

    def read_spec(self, key: JobKey) -> LaunchSpec:
        return self.job(key).read_spec()

    def jobs(self, run: Optional[str] = None) -> List[JobDir]:
        """The job directories (of one run), in name order."""
        runs = [run_dir_name(run)] if run is not None else sorted(os.listdir(self.jobs_dir))
        found: List[JobDir] = []
        for run_name in runs:
            run_dir = os.path.join(self.jobs_dir, run_name)
            try:
                names = sorted(os.listdir(run_dir))
            except (FileNotFoundError, NotADirectoryError):
                continue
            found.extend(JobDir(os.path.join(run_dir, name)) for name in names)
        return found

    def list_records(self, run: Optional[str] = None) -> List[JobRecord]:
        """Every record (of one run), in seq order."""
        records = []
        for job in self.jobs(run):
            record = job.read_record()
            if record is not None and (run is None or record.key.run == run):
                records.append(record)
        records.sort(key=lambda r: r.seq)
        return records

    def last_seq(self) -> int:
        return self.events.last_seq()

    def last_event_seq(self) -> int:
        return self.events.last_event_seq()

    # -- writes ------------------------------------------------------------------------------

    @contextmanager
    def group_commit(self, one_transaction: bool = False) -> Iterator[GroupCommit]:
        """Inside, this thread's transactions append their events without fsync; the caller
        reports nothing of them before ``sync()`` (called at the end in any case). Each
        transaction is otherwise unchanged (its intent, record file and event in order), so a
        crash at any step leaves what it does today; only a power loss can take the appended
        events since the last fsync, none of them answered yet.

        ``one_transaction``: the group's transactions are one, from its first write to ``sync()``
        (the lock, the check for what a killed writer left, and the open files once, not per
        record). Only for a caller that never waits for another process inside the group: the
        lock is held all along (the supervising process's round; not serve's batch, whose
        requests may wait for a supervising process, or for a test's pause point)."""
        group = GroupCommit(self, one_transaction)
        self._groups.group = group
        try:
            yield group
        finally:
            self._groups.group = None
            group.sync()

    def open_group(self) -> Optional[GroupCommit]:
        """This thread's group commit, if it is in one."""
        group: Optional[GroupCommit] = getattr(self._groups, "group", None)
        return group

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        group = self.open_group()
        if group is not None and group.one_transaction:
            if group.held is None:
                group.held = self._begin()
            try:
                yield group.held[2]
            except BaseException:
                # Whatever it left (an intent without its event) is finished by the next
                # transaction, which must start afresh for that.
                group.release()
                raise
            return
        fd, events_fd, tx = self._begin()
        try:
            yield tx
        finally:
            os.close(events_fd)
            os.close(fd)

    def _begin(self) -> Tuple[int, int, Transaction]:
        """Take the journal lock: (lock fd, events fd, the transaction), repaired first."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        events_fd = -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Opened under the lock: a compaction (which replaces the file) holds it too.
            events_fd = self.events.open_for_append()
            return fd, events_fd, Transaction(self, fd, events_fd, self._finish_interrupted(fd, events_fd))
        except BaseException:
            if events_fd >= 0:
                os.close(events_fd)
            os.close(fd)
            raise

    def _finish_interrupted(self, lock_fd: int, events_fd: int) -> int:
        """Repair what a process killed inside a transaction left; return the last logged seq."""
        # A torn append (killed mid-write) is cut off: the record file has it, the intent re-logs it.
        last = self.events.cut_torn_append(events_fd)
        intent = os.pread(lock_fd, _INTENT_BYTES, 0).decode("utf-8", "replace").split()
        if len(intent) == 2 and intent[0].isdigit() and int(intent[0]) > last:
            record = JobDir(os.path.join(self.state_dir, intent[1])).read_record_if_intact()
            if record is not None and record.seq == int(intent[0]):
                self.events.append(record, fd=events_fd)
                last = record.seq
        return last

    def claim(
        self, key: JobKey, spec: LaunchSpec, make_accepted: Callable[[], JobRecord]
    ) -> Tuple[JobRecord, Optional[int]]:
        """Claim a key for launching.

        Returns ``(record, supervisor_lock_fd)``: a fresh ``accepted`` record and the job's
        supervisor lock, already held (to hand over to the supervisor), or the existing record
        and None when the key was claimed before. The claim is the ``mkdir`` of the job
        directory, made under the journal lock together with the accepted record.
        """
        job = self.job(key)
        with self.transaction() as tx:
            existing = self._claim_job_dir(key)
            if existing is not None:
                return existing, None
            # Nothing here is fsynced but the accepted event (the commit below): after a power
            # loss, the job directory is rebuilt from the event log, and a job whose running
            # event was not durable never ran.
            lock_fd = job.create_supervisor_lock(spec)
            try:
                record = tx.commit(make_accepted())
            except BaseException:
                os.close(lock_fd)
                raise
            return record, lock_fd

    def fence(self, key: JobKey, make_fenced: Callable[[], JobRecord]) -> Tuple[JobRecord, bool]:
        """Claim a key as ended without running, so that a launch of it arriving later is refused.

        Returns ``(record, fenced)``: the new fenced record and True, or the existing record and
        False when the key was claimed before (launched, or fenced already).
        """
        with self.transaction() as tx:
            existing = self._claim_job_dir(key)
            if existing is not None:
                return existing, False
            return tx.commit(make_fenced()), True

    def _claim_job_dir(self, key: JobKey) -> Optional[JobRecord]:
        """Inside a transaction: make the key's job directory, or return the record it has."""
        job = self.job(key)
        run_dir = os.path.dirname(job.path)
        if not os.path.isdir(run_dir):
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
            fsync_dir(self.jobs_dir)
        if job.make():
            return None
        # None: the claimant died inside its transaction, before its first record: nothing was
        # started (a supervisor is only started after that record), so claim it anew.
        return job.read_record()

    def update(
        self, key: JobKey, change: Callable[[JobRecord], Optional[JobRecord]]
    ) -> Tuple[Optional[JobRecord], Optional[JobRecord]]:
        """Compare-and-set: ``change`` sees the current record and returns the new one or None.

        Returns ``(current, committed)``; ``committed`` is None when nothing was written.
        """
        with self.transaction() as tx:
            current = self.read_record(key)
            if current is None:
                return None, None
            new = change(current)
            if new is None:
                return current, None
            return current, tx.commit(new)

    # -- recovery and garbage collection -----------------------------------------------------

    def repair(self, boot_id: str, follow: bool = False) -> RepairReport:
        """Make the record files and the event log agree; serve calls it before any request.

        Under a new boot id (the machine went down: unsynced record files may be stale, torn or
        missing) every record file is first rebuilt from the event log. Then every record whose
        event is missing is logged.

        ``follow``: the report carries the records it read and a reader of what is logged after
        them (:attr:`RepairReport.following`), both taken under the lock, so that serve's first
        sweep starts from this scan of the state dir instead of making its own.
        """
        report = RepairReport()
        with self.transaction() as tx:
            if self._last_boot_id() != boot_id:
                if self.events.cut_at_first_unreadable():
                    tx.last_seq = self.events.last_seq()
                self._restore_records(report)
                atomic_write(self.boot_id_path, boot_id.encode("utf-8") + b"\n")
            # In seq order (as listed): a group commit may leave several record files ahead of the log.
            records = self.list_records()
            report.relogged = [r for r in records if r.seq > tx.last_seq]
            for record in report.relogged:
                self.events.append(record)
            if follow:
                report.following = (records, self.events.reader_at_end())
        return report

    def _last_boot_id(self) -> Optional[str]:
        try:
            with open(self.boot_id_path, "rb") as handle:
                return handle.read().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None

    def _restore_records(self, report: RepairReport) -> None:
        logged: Dict[str, JobRecord] = {}
        for record in self.events.records():
            logged[self.job(record.key).path] = record
        for path, record in logged.items():
            job = JobDir(path)
            current = job.read_record_if_intact()
            if current is None or current.seq < record.seq:
                job.restore_record(record)
                report.restored.append(record)
        for job in self.jobs():
            if job.path not in logged:
                discarded = job.discard_torn_record()
                if discarded is not None:
                    report.discarded.append(discarded)

    def collect_garbage(
        self,
        retention_seconds: float,
        now: Optional[float] = None,
        compact_threshold_bytes: int = DEFAULT_COMPACT_THRESHOLD_BYTES,
    ) -> List[JobKey]:
        """Delete acknowledged, ended jobs acknowledged more than ``retention_seconds`` ago, then
        compact the event log if it has passed ``compact_threshold_bytes``."""
        now = time.time() if now is None else now
        removed = []
        with self.transaction() as tx:
            for job in self.jobs():
                # The record file's age first: a stat, where reading the record decodes it, and
                # most jobs are within their retention (every job of a busy day, when serve
                # starts and collects before its hello).
                mtime = job.record_mtime()
                if mtime is None or now - mtime < retention_seconds:
                    continue
                record = job.read_record()
                if record is None or not (record.ended and record.acknowledged):
                    continue
                job.remove()
                removed.append(record.key)
                try:
                    os.rmdir(os.path.dirname(job.path))
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
            if removed and self.events.size() > compact_threshold_bytes:
                self.events.rewrite(self.list_records(), tx.last_seq)
        return removed
