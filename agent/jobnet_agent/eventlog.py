"""The event log: ``<state>/events.log``, the durable truth of every job, and its followers.

``events.log`` holds append-only JSON lines ``{"seq": N, "record": {...}}``, each fsynced
before the state it records is reported: one fsync per state change, the only one. ``seq`` is
monotonic for the whole state dir (the journal allocates it under its lock). A compaction
rewrites the log as the latest record of each job and closes it with a bare ``{"seq": N}``
marker that keeps numbering going but is no event.

Followers (``watch``) read it with an :class:`EventReader` and sleep on an
:class:`EventWakeup`, a FIFO in ``<state>/watchers/<pid>-<n>.wake``: every append writes a byte
to each, so following needs no tight polling.

An append is fsynced at once, or (inside a journal group commit) by one :meth:`EventLog.sync`
for several appends of one writer, before anything of them is answered.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import select
import threading
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

from jobnet_agent.durable import atomic_write, poke_fifo
from jobnet_agent.jobdir import dump_json, stored_json
from jobnet_agent.protocol import JSON_STRING, JobKey, JobRecord, watched_event

_WAKE_SUFFIX = ".wake"
#: The wake-up FIFO of a follower that needs only records with a kill (agents before 0.3 wake it
#: for every record too: its name ends with ``_WAKE_SUFFIX``).
_KILLS_WAKE_SUFFIX = ".kills" + _WAKE_SUFFIX
_wake_numbers = itertools.count(1)
T = TypeVar("T")


def read_last_line(fd: int, size: int) -> Tuple[Optional[bytes], int]:
    """The last complete line of a file and the offset just after it (0 when there is none)."""
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
            return tail[line_start + 1 : complete_end], pos + complete_end + 1
    return None, 0


def _whole_entry(line: bytes) -> bool:
    """An entry as appended: a JSON object with a seq."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except ValueError:
        return False
    return isinstance(entry, dict) and isinstance(entry.get("seq"), int)


def _entry(record: JobRecord, body: Optional[bytes] = None) -> bytes:
    """The event's line: ``{"seq":N,"record":BODY}``, BODY the record's stored JSON (given by a
    caller that encoded it already for the record file: the same bytes as encoding it again)."""
    if body is None:
        body = stored_json(record)
    return b'{"seq":%d,"record":%s}\n' % (record.seq, body)


class EventLog:
    """``<state>/events.log`` and the wake-up FIFOs of its followers."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "events.log")
        self.watchers_dir = os.path.join(state_dir, "watchers")
        #: The wake-up FIFO of a follower of this process that its own appends need not wake.
        self._own_wakeup: Optional[str] = None

    def open_for_append(self) -> int:
        """An fd to append to (and cut) the log: a journal transaction opens one, under its lock
        (a compaction replaces the file, also under the lock)."""
        return os.open(self.path, os.O_RDWR | os.O_APPEND)

    def append(
        self, record: JobRecord, durable: bool = True, fd: Optional[int] = None, body: Optional[bytes] = None
    ) -> None:
        """Append the record's event (to ``fd`` if given: see :meth:`open_for_append`; ``body``:
        the record's stored JSON if encoded already); ``durable``: fsynced, and every follower
        woken. Otherwise the writer calls :meth:`sync` before it reports the state (a group
        commit)."""
        own = fd is None
        if fd is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, _entry(record, body))
            if durable:
                os.fsync(fd)
        finally:
            if own:
                os.close(fd)
        if durable:
            self.wake_followers(kills=record.kill_requested is not None)

    def sync(self, kills: bool = True) -> None:
        """Make every append so far durable (one fsync), then wake every follower (those that
        follow only kills if ``kills``: one of the appends carries one)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.wake_followers(kills)

    def wake_followers(self, kills: bool = True) -> None:
        wake_followers(self.watchers_dir, skip=self._own_wakeup, kills=kills)

    def skip_own_wakeup(self, wakeup: EventWakeup) -> None:
        """This process's appends do not wake ``wakeup`` (its follower needs only the others')."""
        self._own_wakeup = wakeup.path

    def last_seq(self) -> int:
        """The seq of the last entry (0: none), the compaction marker included."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            line, _ = read_last_line(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return int(json.loads(line.decode("utf-8"))["seq"]) if line else 0

    def last_event_seq(self) -> int:
        """The seq of the last entry a watch sends as an event (0: none).

        Below ``last_seq`` only after a compaction: its closing ``{"seq": N}`` marker keeps seq
        numbering going but is no event, so a watcher that has received every event never sees N.
        """
        fd = os.open(self.path, os.O_RDONLY)
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

    def cut_torn_append(self, fd: int) -> int:
        """Cut off a torn last line (a writer killed mid-append); return the last seq. Only under
        the journal lock, with its fd (:meth:`open_for_append`): the journal re-logs the cut event
        from its record file."""
        size = os.fstat(fd).st_size
        line, end = read_last_line(fd, size)
        if end != size:
            os.ftruncate(fd, end)
            os.fsync(fd)
        return _seq_of(line) if line else 0

    def cut_at_first_unreadable(self) -> bool:
        """After a power loss, cut the log at its first line that is not a whole entry; True if
        it cut. Appends of a group commit that no fsync covered yet may come back with holes (the
        page cache writes pages back in any order), but nothing from a hole on was answered: an
        fsync that finished after a later append would have made the hole's entry durable too."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            offset = 0
            while offset < len(data):
                end = data.find(b"\n", offset)
                if end < 0 or not _whole_entry(data[offset:end]):
                    os.ftruncate(fd, offset)
                    os.fsync(fd)
                    return True
                offset = end + 1
            return False
        finally:
            os.close(fd)

    def records(self) -> Iterator[JobRecord]:
        """Every logged record, oldest first."""
        reader = self.reader(0)
        try:
            batch = reader.poll()
            while batch:
                yield from batch
                batch = reader.poll()
        finally:
            reader.close()

    def rewrite(self, latest: Sequence[JobRecord], last_seq: int) -> None:
        """Compact: the log becomes ``latest`` (one record per job) and a marker keeping ``last_seq``."""
        lines = [_entry(record) for record in latest]
        lines.append(dump_json({"seq": last_seq}) + b"\n")
        atomic_write(self.path, b"".join(lines))

    def size(self) -> int:
        return os.path.getsize(self.path)

    def reader(self, from_seq: int, skip: Optional[bytes] = None) -> EventReader:
        return EventReader(self.path, from_seq, skip)

    def reader_at_end(self) -> EventReader:
        """A reader of the entries after the last one, starting where they will start: for a
        follower that learns the state so far otherwise (serve's first sweep, from the record
        files), which ``reader(last_seq())`` would make read and skip every entry of the log."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            line, end = read_last_line(fd, os.fstat(fd).st_size)
            return EventReader(self.path, _seq_of(line) if line else 0, opened=(fd, end))
        except BaseException:
            os.close(fd)
            raise

    def wakeup(self, kills_only: bool = False) -> EventWakeup:
        """A follower's wake-up; ``kills_only``: woken only by appends of records with a kill."""
        return EventWakeup(self.watchers_dir, _KILLS_WAKE_SUFFIX if kills_only else _WAKE_SUFFIX)


def _seq_of(line: bytes) -> int:
    """The seq of a whole entry, read without decoding the record when it is as appended."""
    if line.startswith(_SEQ_PREFIX):
        end = line.find(b",", len(_SEQ_PREFIX))
        if end < 0:
            end = line.find(b"}", len(_SEQ_PREFIX))
        digits = line[len(_SEQ_PREFIX) : end]
        if digits.isdigit():
            return int(digits)
    return int(json.loads(line.decode("utf-8"))["seq"])


_SEQ_PREFIX = b'{"seq":'


class EventReader:
    """Reads events with ``seq`` greater than a start point from the event log, incrementally.

    Follows appends cheaply (one ``stat`` when nothing changed) and notices a compaction
    (new inode): it then rereads from the start, skipping what it already delivered.

    ``skip``: entries whose line contains these bytes are passed over undecoded (a follower
    that needs only some records, e.g. the supervising process only those with a kill).
    """

    def __init__(
        self,
        events_path: str,
        from_seq: int,
        skip: Optional[bytes] = None,
        opened: Optional[Tuple[int, int]] = None,
    ) -> None:
        """``opened``: the log open already (the reader owns the fd from here) and the offset
        where the entries after ``from_seq`` start (:meth:`EventLog.reader_at_end`)."""
        self.path = events_path
        self._skip = skip
        self.delivered_seq = from_seq
        self._fd: Optional[int] = None
        self._inode: Optional[Tuple[int, int]] = None
        self._offset = 0
        self._partial = b""
        if opened is not None:
            self._fd, self._offset = opened
            info = os.fstat(self._fd)
            self._inode = (info.st_dev, info.st_ino)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def poll(self, max_bytes: int = 1024 * 1024) -> List[JobRecord]:
        return [JobRecord.from_stored(stored) for stored in self.poll_stored(max_bytes)]

    def poll_stored(self, max_bytes: int = 1024 * 1024) -> List[Dict[str, Any]]:
        """As :meth:`poll`, the records as stored."""
        return self._poll(_stored_record, max_bytes)

    def poll_watched(self, max_bytes: int = 1024 * 1024) -> List[Tuple[int, bytes]]:
        """As :meth:`poll`, each event as (seq, the message the watch stream sends:
        :func:`watched_event`, as stored and not decoded when it is stored as today)."""
        return self._poll(_watched, max_bytes)

    def poll_states(self, max_bytes: int = 1024 * 1024) -> List[EntryState]:
        """As :meth:`poll`, each event as (its record's key, seq and state, its line), read
        without decoding the record when it is stored as today (:func:`entry_state`)."""
        return self._poll(entry_state, max_bytes)

    def _poll(self, convert: Callable[[bytes], Optional[Tuple[int, T]]], max_bytes: int) -> List[T]:
        """The new entries' events, each as ``convert`` makes it from its line: (seq, event), or
        None for an entry that is no event; it raises ValueError for a line that is no JSON."""
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
        events: List[T] = []
        for line in lines:
            if not line:
                continue
            try:
                if self._skip is not None and self._skip in line:
                    self.delivered_seq = max(self.delivered_seq, _seq_of(line))
                    continue
                converted = convert(line)
            except ValueError:
                # Read across a cut-off torn append: start over from the beginning next poll.
                self._offset = 0
                self._partial = b""
                return events
            if converted is None or converted[0] <= self.delivered_seq:
                continue
            self.delivered_seq, event = converted
            events.append(event)
        return events


def _stored_record(line: bytes) -> Optional[Tuple[int, Dict[str, Any]]]:
    entry = json.loads(line.decode("utf-8"))
    if "record" not in entry:
        return None
    return int(entry["seq"]), entry["record"]


class EntryState(NamedTuple):
    key: JobKey
    seq: int
    state: str
    #: the entry's line (:func:`record_of_entry` decodes it)
    line: bytes


#: An entry's beginning as appended today: its seq, its record's key, seq and state.
_ENTRY_STATE = re.compile(
    rb'\{"seq":([0-9]+),"record":\{"key":(\{"run":'
    + JSON_STRING
    + rb',"path":'
    + JSON_STRING
    + rb',"attempt":[0-9]+\}),'
    rb'"seq":([0-9]+),"state":"([A-Za-z]+)"'
)


def entry_state(line: bytes) -> Optional[Tuple[int, EntryState]]:
    """An entry's (seq, :class:`EntryState`), the record not decoded when it is stored as today;
    None for an entry that is no event. Raises ValueError for a line that is no JSON."""
    match = _ENTRY_STATE.match(line)
    if match is not None:
        key = json.loads(match.group(2).decode("utf-8"))
        job = JobKey(run=key["run"], path=key["path"], attempt=key["attempt"])
        return int(match.group(1)), EntryState(job, int(match.group(3)), match.group(4).decode("ascii"), line)
    stored = _stored_record(line)
    if stored is None:
        return None
    record = JobRecord.from_stored(stored[1])
    return stored[0], EntryState(record.key, record.seq, record.state, line)


def record_of_entry(line: bytes) -> JobRecord:
    return JobRecord.from_stored(json.loads(line.decode("utf-8"))["record"])


def _watched(line: bytes) -> Optional[Tuple[int, Tuple[int, bytes]]]:
    event = watched_event(line)
    return None if event is None else (event[0], event)


def wake_followers(watchers_dir: str, skip: Optional[str] = None, kills: bool = True) -> None:
    """Write a byte to the wake-up FIFO of every process following the event log (but ``skip``,
    and but those that follow only kills unless ``kills``)."""
    try:
        names = os.listdir(watchers_dir)
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(_WAKE_SUFFIX) or (not kills and name.endswith(_KILLS_WAKE_SUFFIX)):
            continue
        path = os.path.join(watchers_dir, name)
        if path == skip:
            continue
        try:
            poke_fifo(path, b"!")
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                # Nobody holds it open: its follower died without removing it.
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


class EventWakeup:
    """A follower's wake-up FIFO in ``<state>/watchers/``: journal writers write to it after
    every appended event, so following the event log needs no tight polling.

    It is held open (read-write) from before it gets its visible name until it is removed, so
    a writer never mistakes a live follower's FIFO for a stale one.
    """

    def __init__(self, watchers_dir: str, suffix: str = _WAKE_SUFFIX) -> None:
        os.makedirs(watchers_dir, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{next(_wake_numbers)}"
        hidden = os.path.join(watchers_dir, name + ".new")
        os.mkfifo(hidden, 0o600)
        self._fd = os.open(hidden, os.O_RDWR | os.O_NONBLOCK)
        self.path = os.path.join(watchers_dir, name + suffix)
        os.rename(hidden, self.path)
        self._closed = False
        self._lock = threading.Lock()  # wake() may come from another thread than close()

    def wait(self, timeout: float) -> None:
        """Return once woken (or after ``timeout``), with the wake-ups consumed."""
        select.select([self._fd], [], [], timeout)
        self.drain()

    def fileno(self) -> int:
        """Readable when woken (for a caller's own select loop; then :meth:`drain`)."""
        return self._fd

    def drain(self) -> None:
        """Consume the wake-ups so far."""
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
