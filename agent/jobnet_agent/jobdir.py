"""The job directory: the one module that knows its files, their formats and who writes them.

Layout of ``<state>/jobs/<run>/<path>#<attempt>/`` (run and path URL-quoted, hashed when long)::

    record.json       the job's latest JobRecord: one sealed JSON line, rewritten in place. A
                      cache of the event log, never fsynced (the journal's docstring says why);
                      written by the journal's transactions only.
    supervisor.lock   held (flock) by the job's supervising process while it supervises the job:
                      liveness is the lock. Holds that process's pid, for people (its first
                      16 bytes, a line padded with spaces; blank until a supervisor took the
                      job), then what to run: the launch spec's JSON line (mode 0600: env may
                      hold secrets), written with the claim; then the line the job's shell
                      wrapper appends when the script ends (``<code>[ orphaned]``), or
                      ``never`` when it never started it (see :mod:`jobnet_agent.endrule`).
    spec.json         (agents before 0.3 only) the launch spec, in a file of its own.
    exitcode          (agents before 0.3 only) the wrapper's line, in a file of its own.
    control           (agents before 0.2 only) FIFO their supervisor listened on for kills.
    started           (agents before 0.2 only) marker made just before the script was started.
                      The ``running`` record is that marker now: a job's script is started only
                      once its running event is durable (see :mod:`jobnet_agent.endrule`).
    stdout, stderr    output head, and ``*.tail.<n>`` segments (see :mod:`jobnet_agent.output`).

Every file costs an inode allocation, the most expensive file-system step of a job on a crowded
or busy ext4 (0.3-1.7 ms of system CPU measured on the test machine): files are made only when
needed (a job that writes no output has its directory, ``record.json`` and ``supervisor.lock``),
and a change of this layout is a change of this module.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import time
import zlib
from typing import Any, Dict, Optional

from jobnet_agent.durable import atomic_write, fsync_dir, poke_fifo, read_whole
from jobnet_agent.endrule import WrapperExit, parse_wrapper_exit
from jobnet_agent.output import StoredOutput
from jobnet_agent.protocol import JobKey, JobRecord, LaunchSpec

_RECORD = "record.json"
_SPEC = "spec.json"
_SUPERVISOR_LOCK = "supervisor.lock"
_STARTED_MARKER = "started"
_EXIT_CODE = "exitcode"
_OLDER_CONTROL_FIFO = "control"

#: A record file rewritten in place stays within the first page: one page is copied whole or not
#: at all by a write that a kill -9 interrupts. A bigger record is replaced by a rename.
_IN_PLACE_MAX_BYTES = 4096
#: How often a reader rereads a record caught mid-rewrite before calling it torn.
_TORN_READ_RETRIES = 200
_CHECK = b',"_check":'
#: The supervisor's pid in its lock file, padded so an adopting supervisor overwrites it whole.
_PID_FIELD_BYTES = 16


class JournalError(Exception):
    """The state directory cannot be used (missing permissions, unreadable or torn files...)."""


def dump_json(data: Dict[str, Any]) -> bytes:
    """Compact JSON, as every file of the state dir stores it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: The bytes a name keeps as they are (RFC 3986's unreserved characters, as urllib.parse.quote).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(part: str) -> str:
    """``urllib.parse.quote(part, safe="")``: each UTF-8 byte but the unreserved ones as %XX.
    Not imported from there: urllib.parse (with ipaddress) is ~3 ms of every agent process's
    start, for this one function."""
    return "".join(chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in part.encode("utf-8"))


@functools.lru_cache(maxsize=4096)
def _dir_name(part: str) -> str:
    # Cached: every transaction and every hand-over names its job directory (a run's id repeats
    # for each of its jobs), and quoting is most of the cost of a name.
    quoted = quote(part)
    if len(quoted) > 180:
        import hashlib  # here: rare, and OpenSSL's loading is ~3 ms of serve's start otherwise

        return "h-" + hashlib.sha256(part.encode("utf-8")).hexdigest()
    return quoted


def run_dir_name(run: str) -> str:
    """The name of a run's directory under ``<state>/jobs``."""
    return _dir_name(run)


def job_dir_path(jobs_dir: str, key: JobKey) -> str:
    return os.path.join(jobs_dir, _dir_name(key.run), f"{_dir_name(key.path)}#{key.attempt}")


def stored_json(record: JobRecord) -> bytes:
    """The record as every file of the state dir stores it (the record file seals it, the event
    log wraps it): encoded once per state change."""
    return dump_json(record.to_stored())


def sealed_record(record: JobRecord, body: Optional[bytes] = None) -> bytes:
    """The record file's content: one JSON line whose last member checks the rest (crc32), so a
    reader can tell a record caught mid-rewrite (reread it) from a complete one. ``body``: the
    record's :func:`stored_json`, when the caller has it already."""
    if body is None:
        body = stored_json(record)
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
        stored = json.loads(body.decode("utf-8"))
    except ValueError:
        return None
    return stored if isinstance(stored, dict) else None


class JobDir:
    """The files of one job, by what they mean (see the module docstring for the layout)."""

    def __init__(self, path: str) -> None:
        self.path = path

    # -- the directory -----------------------------------------------------------------------

    def make(self) -> bool:
        """Create the directory (the claim of its key); False if it exists already."""
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            return False
        return True

    def remove(self) -> None:
        import shutil  # here: only garbage collection removes (with bz2 and lzma, ~3 ms of a start)

        shutil.rmtree(self.path)

    def record_mtime(self) -> Optional[float]:
        """When the record was last written (retention counts from there); None when there is
        no record yet."""
        try:
            return os.stat(os.path.join(self.path, _RECORD)).st_mtime
        except FileNotFoundError:
            return None

    # -- record.json -------------------------------------------------------------------------

    def write_record(self, record: JobRecord, body: Optional[bytes] = None) -> None:
        """Make the record file hold ``record`` (not durable: see the journal's docstring);
        ``body``: its :func:`stored_json`, when the caller has it already.

        An existing record file is rewritten in place, padded with spaces to its old size: a new
        file per state costs an inode allocation, and a truncation costs more. Readers check the
        seal (:func:`unseal_record`) and reread a record caught mid-rewrite.
        """
        path = os.path.join(self.path, _RECORD)
        data = sealed_record(record, body)
        try:
            fd: Optional[int] = os.open(path, os.O_WRONLY)
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

    def restore_record(self, record: JobRecord) -> None:
        """Write the record file anew and durably (rebuilding it from the event log)."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        atomic_write(os.path.join(self.path, _RECORD), sealed_record(record))

    def read_record(self) -> Optional[JobRecord]:
        """The job's record; None when there is none yet. Raises JournalError when it is torn."""
        path = os.path.join(self.path, _RECORD)
        for _ in range(_TORN_READ_RETRIES):
            try:
                stored = unseal_record(read_whole(path))
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise JournalError(f"journal record {path} is unreadable: {exc}") from exc
            if stored is not None:
                return JobRecord.from_stored(stored)
            time.sleep(0.0005)  # caught mid-rewrite: the writer is a few bytes from done
        raise JournalError(f"journal record {path} is unreadable: torn (its seal does not check out)")

    def read_record_if_intact(self) -> Optional[JobRecord]:
        """The record, or None when it is missing or torn (a power loss hit it before its event
        was durable: never reported)."""
        try:
            return self.read_record()
        except JournalError:
            return None

    def discard_torn_record(self) -> Optional[str]:
        """Remove a torn record file (durably); its path, or None when it was intact or missing."""
        path = os.path.join(self.path, _RECORD)
        if not os.path.exists(path) or self.read_record_if_intact() is not None:
            return None
        os.unlink(path)
        fsync_dir(self.path)
        return path

    # -- the launch spec (in supervisor.lock) -----------------------------------------------

    def read_spec(self, lock_fd: Optional[int] = None) -> LaunchSpec:
        """What to run, from the lock file (through ``lock_fd`` when the caller holds it), or
        from ``spec.json`` for a job claimed by an agent before 0.3."""
        path = os.path.join(self.path, _SUPERVISOR_LOCK)
        try:
            fd = os.open(path, os.O_RDONLY) if lock_fd is None else lock_fd
            try:
                data = os.pread(fd, max(0, os.fstat(fd).st_size - _PID_FIELD_BYTES), _PID_FIELD_BYTES)
            finally:
                if lock_fd is None:
                    os.close(fd)
            data = data.split(b"\n", 1)[0]
            if not data.strip():
                path = os.path.join(self.path, _SPEC)
                with open(path, "rb") as handle:
                    data = handle.read()
            return LaunchSpec.from_json(json.loads(data.decode("utf-8")))
        except (OSError, ValueError) as exc:
            raise JournalError(f"launch spec in {path} is unreadable: {exc}") from exc

    # -- supervisor.lock ---------------------------------------------------------------------

    def create_supervisor_lock(self, spec: LaunchSpec) -> int:
        """Create the supervisor lock, held, with the spec of what to run (not durable: the spec
        is never needed after a reboot, the job is settled then): the fd travels to the job's
        supervisor. One file for both, as every file costs an inode."""
        fd = os.open(os.path.join(self.path, _SUPERVISOR_LOCK), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = b" " * _PID_FIELD_BYTES + dump_json(spec.to_json()) + b"\n"
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], written)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def try_take_supervisor_lock(self) -> Optional[int]:
        """The job's supervisor lock, if no supervisor holds it (the caller must close the fd)."""
        try:
            fd = os.open(os.path.join(self.path, _SUPERVISOR_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
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

    def supervisor_alive(self) -> bool:
        """Whether a supervisor holds the job's lock (a probe: the lock is released at once)."""
        fd = self.try_take_supervisor_lock()
        if fd is None:
            return True
        os.close(fd)
        return False

    @staticmethod
    def note_supervisor_pid(lock_fd: int, pid: int) -> None:
        """For people (liveness is the lock): in the lock file, as a file more costs an inode."""
        os.pwrite(lock_fd, (b"%d\n" % pid).ljust(_PID_FIELD_BYTES), 0)

    @staticmethod
    def supervisor_pid_of(lock_file_content: bytes) -> Optional[int]:
        """The pid :meth:`note_supervisor_pid` wrote in a lock file's content, or None (blank:
        no supervisor took the job yet)."""
        field = lock_file_content[:_PID_FIELD_BYTES].strip()
        return int(field) if field.isdigit() else None

    # -- started (agents before 0.2) ----------------------------------------------------------

    def may_have_started(self) -> bool:
        """Whether an agent before 0.2 marked the script started (it did so before its running
        record); today's agent starts a script only after its running record is durable."""
        return os.path.exists(os.path.join(self.path, _STARTED_MARKER))

    def wake_older_supervisor(self) -> None:
        """Wake the supervisor of an agent before 0.2 (it listens on the job's ``control`` FIFO, not
        on the event log), so that a kill reaches jobs it still runs after an upgrade."""
        try:
            poke_fifo(os.path.join(self.path, _OLDER_CONTROL_FIFO), b"k")
        except OSError:
            pass  # none: today's supervising process follows the journal

    # -- the wrapper's exit line (in supervisor.lock) ----------------------------------------

    @property
    def exit_code_path(self) -> str:
        """Where the job's wrapper appends the script's end: after the spec in the lock file."""
        return os.path.join(self.path, _SUPERVISOR_LOCK)

    def read_wrapper_exit(self) -> Optional[WrapperExit]:
        """The wrapper's record of the script's end, or None when it wrote none (or was cut short)."""
        try:
            after_pid = read_whole(os.path.join(self.path, _SUPERVISOR_LOCK))[_PID_FIELD_BYTES:]
        except OSError:
            after_pid = b""
        spec, newline, wrapper_line = after_pid.partition(b"\n")
        if spec.strip():
            return parse_wrapper_exit(wrapper_line) if newline else None
        # A job claimed by an agent before 0.3: its wrapper writes a file of its own.
        try:
            with open(os.path.join(self.path, _EXIT_CODE), "rb") as handle:
                return parse_wrapper_exit(handle.read(64))
        except OSError:
            return None

    # -- output ------------------------------------------------------------------------------

    def output(self, stream: str) -> StoredOutput:
        return StoredOutput(self.path, stream)
