"""The durable journal of one agent state directory.

Layout::

    <state>/journal.lock          fcntl lock serialising every journal write; holds the write intent
    <state>/events.log            append-only JSON lines {"seq": N, "record": {...}}, fsynced: the
                                  durable truth (a state is reported only once its line is fsynced)
    <state>/boot_id               the boot under which the record files were last made current
    <state>/watchers/<pid>-<n>.wake  FIFO of a process following the event log: every writer
                                  writes a byte to each after appending an event (wakes it at once)
    <state>/jobs/<run>/<path>#<attempt>/
        record.json               the job's latest JobRecord (one sealed JSON line, rewritten in
                                  place), a cache of the event log rebuilt from it after a reboot
        spec.json                 what to run (mode 0600: env may hold secrets)
        supervisor.lock           held (flock) by the job's supervisor for its whole life; holds
                                  its pid, for people (liveness is the lock)
        control                   FIFO made by the supervisor once the script runs: a byte
                                  written here wakes it (kill requests)
        started                   marker written (fsynced) just before the script is started
        exitcode                  written by the job's shell wrapper when the script ends
        stdout, stderr            output head (made by the first byte); stdout.tail.<n>,
                                  stderr.tail.<n> the rotating tail

A state change is one transaction under ``journal.lock``: allocate ``seq`` = last logged seq + 1,
note the intent (seq, job dir) in the lock file, write the record file, append the event.
A process killed between the record and the event leaves the intent behind; the next transaction
sees it and appends the missing event, so the event log never misses a record that was written
and a seq is never given to two records.

One fsync per state change: only the event log is fsynced. The record files are not fsynced,
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
import hashlib
import itertools
import json
import os
import select
import shutil
import stat
import threading
import time
import urllib.parse
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from jobnet_agent.config import DEFAULT_COMPACT_THRESHOLD_BYTES
from jobnet_agent.endrule import WrapperExit, parse_wrapper_exit
from jobnet_agent.faults import crash_point
from jobnet_agent.protocol import JobKey, JobRecord, LaunchSpec

RECORD = "record.json"
SPEC = "spec.json"
SUPERVISOR_LOCK = "supervisor.lock"
CONTROL_FIFO = "control"
STARTED_MARKER = "started"
EXIT_CODE = "exitcode"
BOOT_ID = "boot_id"
WATCHERS = "watchers"
_WAKE_SUFFIX = ".wake"
_wake_numbers = itertools.count(1)

#: Size of the intent in the lock file (padded with spaces); job dir paths are far shorter.
_INTENT_BYTES = 1024


class JournalError(Exception):
    """The state directory cannot be used (missing permissions, corrupt files...)."""


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` so readers see the old or the new content, never a mix.

    ``durable`` also makes it survive a power loss (fsync of the file and of its directory).
    """
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(path))


def read_wrapper_exit(job_dir: str) -> Optional[WrapperExit]:
    """The wrapper's record of the script's end, or None when it wrote none (or was cut short)."""
    try:
        with open(os.path.join(job_dir, EXIT_CODE), "rb") as handle:
            return parse_wrapper_exit(handle.read(64))
    except OSError:
        return None


def _dump(data: Dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_CHECK = b',"_check":'
#: A record file rewritten in place stays within the first page: one page is copied whole or not
#: at all by a write that a kill -9 interrupts. A bigger record is replaced by a rename.
_IN_PLACE_MAX_BYTES = 4096
#: How often a reader rereads a record caught mid-rewrite before calling it torn.
_TORN_READ_RETRIES = 200


def sealed_record(record: JobRecord) -> bytes:
    """The record file's content: one JSON line whose last member checks the rest (crc32), so a
    reader can tell a record caught mid-rewrite (reread it) from a complete one."""
    body = _dump(record.to_stored())
    return body[:-1] + _CHECK + b"%d}\n" % zlib.crc32(body)


def unseal_record(data: bytes) -> Optional[Dict[str, Any]]:
    """The stored record of a record file's content; None when it does not check out (torn)."""
    line = data.split(b"\n", 1)[0]
    at = line.rfind(_CHECK)
    if at < 0:
        # Written by an agent version that replaced record files by a rename: never torn.
        body = line
    else:
        body = line[:at] + b"}"
        check = line[at + len(_CHECK) : -1]
        if not check.isdigit() or int(check) != zlib.crc32(body):
            return None
    try:
        data_ = json.loads(body.decode("utf-8"))
    except ValueError:
        return None
    return data_ if isinstance(data_, dict) else None


def write_record(path: str, record: JobRecord) -> None:
    """Make ``path`` hold ``record`` (not durable: see the module docstring).

    An existing record file is rewritten in place, padded with spaces to its old size: a new
    file per state costs an inode allocation, which is the most expensive step of a state change
    on a crowded ext4 (~0.5 ms CPU measured), and a truncation costs more. Readers check the seal
    (:func:`unseal_record`) and reread a record caught mid-rewrite.
    """
    data = sealed_record(record)
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        fd = None
    if fd is None or len(data) > _IN_PLACE_MAX_BYTES:
        if fd is not None:
            os.close(fd)
        atomic_write(path, data, durable=False)
        return
    try:
        padding = os.fstat(fd).st_size - len(data)
        if padding > 0:
            data += b" " * padding
        if os.pwrite(fd, data, 0) != len(data):
            raise JournalError(f"short write of journal record {path}")
    finally:
        os.close(fd)


def _dir_name(part: str) -> str:
    quoted = urllib.parse.quote(part, safe="")
    if len(quoted) > 180:
        return "h-" + hashlib.sha256(part.encode("utf-8")).hexdigest()
    return quoted


def read_last_line(fd: int, size: int) -> Tuple[Optional[bytes], int]:
    """The last complete line of a file and the offset just after it (0 when there is none)."""
    end = size
    chunk = 8192
    tail = b""
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        tail = os.pread(fd, pos - start, start) + tail
        pos = start
        complete_end = tail.rfind(b"\n")
        if complete_end < 0:
            continue
        line_start = tail.rfind(b"\n", 0, complete_end)
        if line_start >= 0 or pos == 0:
            end = pos + complete_end + 1
            return tail[line_start + 1 : complete_end], end
    return None, 0


class Transaction:
    """Journal writes made while holding ``journal.lock``."""

    def __init__(self, journal: Journal, lock_fd: int) -> None:
        self._journal = journal
        self._lock_fd = lock_fd
        self.last_seq = 0

    def commit(self, record: JobRecord) -> JobRecord:
        """Give the record the next seq, write it, then log it. Returns the record as stored."""
        journal = self._journal
        record = record.replace(seq=self.last_seq + 1)
        job_dir = journal.job_dir(record.key)
        intent = ("%d %s\n" % (record.seq, os.path.relpath(job_dir, journal.state_dir))).encode("utf-8")
        # Overwritten in place at a fixed size: an ftruncate of the lock file costs milliseconds.
        os.pwrite(self._lock_fd, intent.ljust(_INTENT_BYTES), 0)
        # Not fsynced: the event below is the durable copy (see the module docstring).
        write_record(os.path.join(job_dir, RECORD), record)
        crash_point(
            journal.role + ":journal-after-record",
            f"{journal.role}:journal-after-record:{record.state}",
        )
        journal.append_event(record)
        self.last_seq = record.seq
        return record


@dataclass
class RepairReport:
    """What :meth:`Journal.repair` fixed."""

    #: Record files rebuilt from the event log after a reboot (stale, torn or missing).
    restored: List[JobRecord] = field(default_factory=list)
    #: Records whose event was missing, now logged.
    relogged: List[JobRecord] = field(default_factory=list)
    #: Unreadable record files of claims whose accepted event never became durable (never started).
    discarded: List[str] = field(default_factory=list)


class Journal:
    def __init__(self, state_dir: str, role: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.role = role
        self.jobs_dir = os.path.join(self.state_dir, "jobs")
        self.events_path = os.path.join(self.state_dir, "events.log")
        self.lock_path = os.path.join(self.state_dir, "journal.lock")
        self.boot_id_path = os.path.join(self.state_dir, BOOT_ID)
        self.watchers_dir = os.path.join(self.state_dir, WATCHERS)

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
            raise JournalError(f"state dir {self.state_dir}: a path component is not a directory")
        except OSError as exc:
            raise JournalError(f"state dir {self.state_dir} is not usable: {exc.strerror or exc}")
        if not stat.S_ISDIR(info.st_mode):
            raise JournalError(f"state dir {self.state_dir} is not a directory")
        if not os.path.isdir(self.jobs_dir):
            raise JournalError(f"state dir {self.state_dir} has no jobs/ directory (never used by an agent?)")
        if not os.access(self.state_dir, os.R_OK | os.W_OK | os.X_OK):
            raise JournalError("state dir %s is not readable and writable by uid %d" % (self.state_dir, os.getuid()))
        for path in (self.lock_path, self.events_path):
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise JournalError(f"cannot open {path}: {exc.strerror or exc}")

    # -- paths and reads ---------------------------------------------------------------------

    def job_dir(self, key: JobKey) -> str:
        return os.path.join(self.jobs_dir, _dir_name(key.run), "%s#%d" % (_dir_name(key.path), key.attempt))

    def read_record(self, key: JobKey) -> Optional[JobRecord]:
        return self._read_record_file(os.path.join(self.job_dir(key), RECORD))

    def read_record_at(self, job_dir: str) -> Optional[JobRecord]:
        return self._read_record_file(os.path.join(job_dir, RECORD))

    @staticmethod
    def _read_record_file(path: str) -> Optional[JobRecord]:
        for _ in range(_TORN_READ_RETRIES):
            try:
                with open(path, "rb") as handle:
                    stored = unseal_record(handle.read())
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise JournalError(f"journal record {path} is unreadable: {exc}")
            if stored is not None:
                return JobRecord.from_stored(stored)
            time.sleep(0.0005)  # caught mid-rewrite: the writer is a few bytes from done
        raise JournalError(f"journal record {path} is unreadable: torn (its seal does not check out)")

    @classmethod
    def _read_record_file_if_intact(cls, path: str) -> Optional[JobRecord]:
        """The record, or None when it is missing or torn (a power loss hit it before its event
        was durable: never reported, rebuilt or discarded by :meth:`Journal.repair`)."""
        try:
            return cls._read_record_file(path)
        except JournalError:
            return None

    def read_spec(self, key: JobKey) -> LaunchSpec:
        path = os.path.join(self.job_dir(key), SPEC)
        try:
            with open(path, "rb") as handle:
                return LaunchSpec.from_json(json.loads(handle.read().decode("utf-8")))
        except (OSError, ValueError) as exc:
            raise JournalError(f"launch spec {path} is unreadable: {exc}")

    def job_dirs(self, run: Optional[str] = None) -> List[str]:
        runs = [_dir_name(run)] if run is not None else sorted(os.listdir(self.jobs_dir))
        found: List[str] = []
        for run_name in runs:
            run_dir = os.path.join(self.jobs_dir, run_name)
            try:
                names = sorted(os.listdir(run_dir))
            except (FileNotFoundError, NotADirectoryError):
                continue
            found.extend(os.path.join(run_dir, name) for name in names)
        return found

    def list_records(self, run: Optional[str] = None) -> List[JobRecord]:
        records = []
        for job_dir in self.job_dirs(run):
            record = self._read_record_file(os.path.join(job_dir, RECORD))
            if record is not None and (run is None or record.key.run == run):
                records.append(record)
        records.sort(key=lambda r: r.seq)
        return records

    def last_seq(self) -> int:
        fd = os.open(self.events_path, os.O_RDONLY)
        try:
            line, _ = read_last_line(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return json.loads(line.decode("utf-8"))["seq"] if line else 0

    def last_event_seq(self) -> int:
        """The seq of the last entry a watch sends as an event (0: none).

        Below ``last_seq`` only after a compaction: its closing ``{"seq": N}`` marker keeps seq
        numbering going but is no event, so a watcher that has received every event never sees N.
        """
        fd = os.open(self.events_path, os.O_RDONLY)
        try:
            end = os.fstat(fd).st_size
            while True:
                line, end = read_last_line(fd, end)
                if not line:
                    return 0
                entry = json.loads(line.decode("utf-8"))
                if "record" in entry:
                    return int(entry["seq"])
                end -= len(line) + 1
        finally:
            os.close(fd)

    # -- writes ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tx = Transaction(self, fd)
            tx.last_seq = self._finish_interrupted(fd)
            yield tx
        finally:
            os.close(fd)

    def _finish_interrupted(self, lock_fd: int) -> int:
        """Repair what a process killed inside a transaction left; return the last logged seq."""
        events_fd = os.open(self.events_path, os.O_RDWR)
        try:
            size = os.fstat(events_fd).st_size
            line, end = read_last_line(events_fd, size)
            if end != size:
                # A torn append (killed mid-write): the record file has it, the intent re-logs it.
                os.ftruncate(events_fd, end)
                os.fsync(events_fd)
        finally:
            os.close(events_fd)
        last = json.loads(line.decode("utf-8"))["seq"] if line else 0
        intent = os.pread(lock_fd, _INTENT_BYTES, 0).decode("utf-8", "replace").split()
        if len(intent) == 2 and intent[0].isdigit() and int(intent[0]) > last:
            record = self._read_record_file_if_intact(os.path.join(self.state_dir, intent[1], RECORD))
            if record is not None and record.seq == int(intent[0]):
                self.append_event(record)
                last = record.seq
        return last

    def append_event(self, record: JobRecord) -> None:
        line = _dump({"seq": record.seq, "record": record.to_stored()}) + b"\n"
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        wake_followers(self.watchers_dir)

    def claim(
        self, key: JobKey, spec: LaunchSpec, make_accepted: Callable[[], JobRecord]
    ) -> Tuple[JobRecord, Optional[int]]:
        """Claim a key for launching.

        Returns ``(record, supervisor_lock_fd)``: a fresh ``accepted`` record and the job's
        supervisor lock, already held (to hand over to the supervisor), or the existing record
        and None when the key was claimed before. The claim is the ``mkdir`` of the job
        directory, made under the journal lock together with the accepted record.
        """
        job_dir = self.job_dir(key)
        with self.transaction() as tx:
            existing = self._claim_job_dir(key)
            if existing is not None:
                return existing, None
            # Nothing here is fsynced but the accepted event (the commit below): the supervisor
            # makes the job directory durable, outside the journal lock, before its ``started``
            # marker; after a power loss before that, the job directory is rebuilt from the event
            # log and the job never ran. The spec is never needed after a reboot.
            atomic_write(os.path.join(job_dir, SPEC), _dump(spec.to_json()), durable=False)
            lock_fd = os.open(os.path.join(job_dir, SUPERVISOR_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
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
        job_dir = self.job_dir(key)
        run_dir = os.path.dirname(job_dir)
        if not os.path.isdir(run_dir):
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
            fsync_dir(self.jobs_dir)
        try:
            os.mkdir(job_dir, 0o700)
        except FileExistsError:
            # None: the claimant died inside its transaction, before its first record: nothing
            # was started (a supervisor is only started after that record), so claim it anew.
            return self.read_record(key)
        return None

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

    def repair(self, boot_id: str) -> RepairReport:
        """Make the record files and the event log agree; serve calls it before any request.

        Under a new boot id (the machine went down: unsynced record files may be stale, torn or
        missing) every record file is first rebuilt from the event log. Then every record whose
        event is missing is logged.
        """
        report = RepairReport()
        with self.transaction() as tx:
            if self._last_boot_id() != boot_id:
                self._restore_records(report)
                atomic_write(self.boot_id_path, boot_id.encode("utf-8") + b"\n")
            report.relogged = [r for r in self.list_records() if r.seq > tx.last_seq]
            for record in report.relogged:
                self.append_event(record)
        return report

    def _last_boot_id(self) -> Optional[str]:
        try:
            with open(self.boot_id_path, "rb") as handle:
                return handle.read().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None

    def _restore_records(self, report: RepairReport) -> None:
        logged: Dict[str, JobRecord] = {}
        reader = EventReader(self.events_path, 0)
        try:
            records = reader.poll()
            while records:
                for record in records:
                    logged[self.job_dir(record.key)] = record
                records = reader.poll()
        finally:
            reader.close()
        for job_dir, record in logged.items():
            current = self._read_record_file_if_intact(os.path.join(job_dir, RECORD))
            if current is None or current.seq < record.seq:
                os.makedirs(job_dir, mode=0o700, exist_ok=True)
                atomic_write(os.path.join(job_dir, RECORD), sealed_record(record))
                report.restored.append(record)
        for job_dir in self.job_dirs():
            path = os.path.join(job_dir, RECORD)
            if job_dir not in logged and os.path.exists(path) and self._read_record_file_if_intact(path) is None:
                os.unlink(path)
                fsync_dir(job_dir)
                report.discarded.append(path)

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
            for job_dir in self.job_dirs():
                record_path = os.path.join(job_dir, RECORD)
                record = self._read_record_file(record_path)
                if record is None or not (record.ended and record.acknowledged):
                    continue
                if now - os.stat(record_path).st_mtime < retention_seconds:
                    continue
                shutil.rmtree(job_dir)
                removed.append(record.key)
                run_dir = os.path.dirname(job_dir)
                try:
                    os.rmdir(run_dir)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
            if removed and os.path.getsize(self.events_path) > compact_threshold_bytes:
                self._compact(tx.last_seq)
        return removed

    def _compact(self, last_seq: int) -> None:
        """Rewrite the event log as the latest record of each remaining job, keeping the last seq."""
        lines = [_dump({"seq": r.seq, "record": r.to_stored()}) + b"\n" for r in self.list_records()]
        lines.append(_dump({"seq": last_seq}) + b"\n")
        atomic_write(self.events_path, b"".join(lines))


class EventReader:
    """Reads events with ``seq`` greater than a start point from the event log, incrementally.

    Follows appends cheaply (one ``stat`` when nothing changed) and notices a compaction
    (new inode): it then rereads from the start, skipping what it already delivered.
    """

    def __init__(self, events_path: str, from_seq: int) -> None:
        self.path = events_path
        self.delivered_seq = from_seq
        self._fd: Optional[int] = None
        self._inode: Optional[Tuple[int, int]] = None
        self._offset = 0
        self._partial = b""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def poll(self, max_bytes: int = 1024 * 1024) -> List[JobRecord]:
        info = os.stat(self.path)
        identity = (info.st_dev, info.st_ino)
        if identity != self._inode:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY)
            opened = os.fstat(self._fd)
            self._inode = (opened.st_dev, opened.st_ino)
            self._offset = 0
            self._partial = b""
            info = opened
        if info.st_size < self._offset:
            # A torn append was cut off by a repair: reread, skipping what was delivered.
            self._offset = 0
            self._partial = b""
        if info.st_size == self._offset:
            return []
        assert self._fd is not None
        data = os.pread(self._fd, min(max_bytes, info.st_size - self._offset), self._offset)
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        records: List[JobRecord] = []
        for line in lines:
            if not line:
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
            except ValueError:
                # Read across a cut-off torn append: start over from the beginning next poll.
                self._offset = 0
                self._partial = b""
                return records
            if entry["seq"] <= self.delivered_seq or "record" not in entry:
                continue
            self.delivered_seq = entry["seq"]
            records.append(JobRecord.from_stored(entry["record"]))
        return records


def wake_followers(watchers_dir: str) -> None:
    """Write a byte to the wake-up FIFO of every process following the event log."""
    try:
        names = os.listdir(watchers_dir)
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(_WAKE_SUFFIX):
            continue
        path = os.path.join(watchers_dir, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                # Nobody holds it open: its follower died without removing it.
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            continue
        try:
            os.write(fd, b"!")
        except BlockingIOError:
            pass  # full of earlier wake-ups: it wakes anyway
        finally:
            os.close(fd)


class EventWakeup:
    """A follower's wake-up FIFO in ``<state>/watchers/``: journal writers write to it after
    every appended event, so following the event log needs no tight polling.

    It is held open (read-write) from before it gets its visible name until it is removed, so
    a writer never mistakes a live follower's FIFO for a stale one.
    """

    def __init__(self, watchers_dir: str) -> None:
        os.makedirs(watchers_dir, mode=0o700, exist_ok=True)
        name = "%d-%d" % (os.getpid(), next(_wake_numbers))
        hidden = os.path.join(watchers_dir, name + ".new")
        os.mkfifo(hidden, 0o600)
        self._fd = os.open(hidden, os.O_RDWR | os.O_NONBLOCK)
        self.path = os.path.join(watchers_dir, name + _WAKE_SUFFIX)
        os.rename(hidden, self.path)
        self._closed = False
        self._lock = threading.Lock()  # wake() may come from another thread than close()

    def wait(self, timeout: float) -> None:
        """Return once woken (or after ``timeout``), with the wake-ups consumed."""
        select.select([self._fd], [], [], timeout)
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._fd, b"!")
            except BlockingIOError:
                pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
