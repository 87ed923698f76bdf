"""``jobnet-agent serve``: the transport of the protocol (docs/agent-protocol.md) over
stdin/stdout, one serve process per SSH channel.

It holds no state of its own: every answer comes from the journal (:mod:`jobnet_agent.handlers`
carries the requests out), every job is run by its own detached supervisor, so the channel (and
this process) may die at any moment without losing anything.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from jobnet_agent import PROTOCOL_VERSION, __version__
from jobnet_agent.config import AgentConfig
from jobnet_agent.detection import Detector
from jobnet_agent.eventlog import EventReader, EventWakeup
from jobnet_agent.handlers import Handled, Handlers, Later
from jobnet_agent.handover import SupervisingProcess
from jobnet_agent.journal import GroupCommit, Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.protocol import (
    ProtocolError,
    Request,
    RequestError,
    encode,
    error,
    heartbeat,
    int_arg,
    ok,
    parse_request,
)

_MAX_LINE_BYTES = 16 * 1024 * 1024
_READ_BYTES = 64 * 1024
_GC_INTERVAL_SECONDS = 60.0
_SHUTDOWN_SECONDS = 10.0

#: How many requests may be in progress at once, most of them launches waiting for their
#: supervisor (then the channel waits too).
_MAX_REQUESTS_IN_PROGRESS = 16


def _nothing() -> None:
    pass


class Done(NamedTuple):
    """A request carried out, to be answered once its batch's journal writes are durable."""

    request_id: Optional[int]
    #: its answer, written with the batch's other answers (its slot freed then); None: ``then``
    #: answers it later and frees its slot
    answer: Optional[Dict[str, Any]]
    #: what follows once the batch's answers are written (a watch's stream, a launch's wait)
    then: Callable[[], None] = _nothing
    #: releases what ``then`` would have used, when the writes could not be made durable
    abandon: Callable[[], None] = _nothing


class _Waiters:
    """Threads that wait for launched jobs' pids off the request loop, kept for the next launches
    (a thread per launch paid its start and exit every time). At most as many as launches wait at
    once (bounded by the request slots)."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: Threads waiting for a task (each counted out as a task is queued for it).
        self._idle = 0

    def run(self, task: Callable[[], None]) -> None:
        with self._lock:
            idle = self._idle > 0
            if idle:
                self._idle -= 1
        if idle:
            self._tasks.put(task)
        else:
            threading.Thread(target=self._work, args=(task,), daemon=True).start()

    def _work(self, task: Callable[[], None]) -> None:
        while True:
            task()
            with self._lock:
                self._idle += 1
            task = self._tasks.get()


class Server:
    """Speaks the protocol on one channel: reads requests, has them carried out, writes the
    answers, heartbeats and the watched events.

    It exists so that a channel is only a view of the journal. It guarantees: requests are
    carried out in the order they arrive (a launch is claimed in order; its answer comes once
    its job has a pid, so answers may come out of order, matched by id); every request gets an
    answer while the channel lives; when the channel ends (end of input, or a write that
    fails), it leaves only after every launch it accepted has its supervisor, and logs what it
    could not report.
    """

    def __init__(self, config: AgentConfig, boot_id: str, in_fd: int, writer: IO[bytes]) -> None:
        self.config = config
        self.boot_id = boot_id
        self.journal = Journal(config.state_dir, "serve")
        self.log = AgentLog(config.agent_log_path, "serve")
        self._in_fd = in_fd
        self._writer = writer
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._current_watch: Optional[Tuple[threading.Event, EventWakeup]] = None
        self._watching = False
        self._last_sent_seq = 0
        self._supervising = SupervisingProcess(config)
        self._detector = Detector(config, boot_id, self.journal, self.log, self._supervising.adopt_job)
        self._handlers = Handlers(
            config, boot_id, self.journal, self.log, self._supervising.start_job, self._detector.check_job
        )
        self._request_slots = threading.BoundedSemaphore(_MAX_REQUESTS_IN_PROGRESS)
        self._waiters = _Waiters()
        #: Set (under the write lock) when a write to the channel failed; the serve loop then leaves.
        self._connection_lost = False
        self._leave_r, self._leave_w = os.pipe()

    # -- the serve loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Serve until the channel ends; the one place where serve decides to leave."""
        self.log.line(f"serve started (agent {__version__}, protocol {PROTOCOL_VERSION}, boot id {self.boot_id})")
        self._repair()
        # A fork, not a new interpreter: serve has imported the agent already. Now, while serve
        # has no other thread: the first ones start below. After the repair: the supervising
        # process reads the journal from its end, which a repair after a reboot may cut.
        self._supervising.fork()
        self._detector.sweep()
        self._collect_garbage()
        threading.Thread(target=self._heartbeats, daemon=True).start()
        sweeper = threading.Thread(target=self._sweeps, daemon=True)
        sweeper.start()
        try:
            for lines in self._batches():
                self._handle_batch(lines)
        finally:
            self._stopping.set()
            self._stop_watch()
            # Nothing more can be reported and every fact is in the journal: the operator
            # reconnects and resumes its watch from the last seq it saw. Not before the launches
            # in progress have their supervisors: an accepted job is a promise to run it,
            # whoever is listening (else it would end failedToStart with its operator gone).
            deadline = time.monotonic() + _SHUTDOWN_SECONDS
            self._wait_for_requests_in_progress(deadline)
            sweeper.join(timeout=max(0.0, deadline - time.monotonic()))
            with self._write_lock:
                lost = self._connection_lost
            self._report_unsent("connection lost" if lost else "channel closed")
            self.log.line("serve disconnected: " + ("cannot write to the channel" if lost else "channel closed"))
        return 0

    def _batches(self) -> Iterator[List[bytes]]:
        """The request lines from the channel, those that arrived together at once, until it
        ends or a write to it failed. A line longer than the limit comes in pieces (each
        refused as a bad request)."""
        buffer = b""
        scanned = 0
        while True:
            ready, _, _ = select.select([self._in_fd, self._leave_r], [], [])
            if self._leave_r in ready:
                return
            chunk = os.read(self._in_fd, _READ_BYTES)
            if not chunk:
                if buffer:
                    yield [buffer]
                return
            buffer += chunk
            lines = []
            while True:
                end = buffer.find(b"\n", scanned)
                if end < 0 and len(buffer) < _MAX_LINE_BYTES:
                    scanned = len(buffer)
                    break
                cut = _MAX_LINE_BYTES if end < 0 or end >= _MAX_LINE_BYTES else end + 1
                line, buffer, scanned = buffer[:cut], buffer[cut:], 0
                if line.strip():
                    lines.append(line)
            if self._connection_lost:
                return  # no answer could be written: the rest is for the next connection
            if lines:
                yield lines

    def _repair(self) -> None:
        repaired = self.journal.repair(self.boot_id, follow=True)
        assert repaired.following is not None, "asked for"
        self._detector.start_from(*repaired.following)
        for record in repaired.restored:
            self.log.line(
                f"journal repaired after a reboot: record restored from the event log (seq {record.seq}, "
                f"{record.state})",
                record.key,
            )
        for path in repaired.discarded:
            self.log.line(f"journal repaired after a reboot: discarded torn record {path} (its claim was never logged)")
        for record in repaired.relogged:
            self.log.line(f"journal repaired: re-logged event seq {record.seq} ({record.state})", record.key)

    def _handle_batch(self, lines: List[bytes]) -> None:
        """Carry out requests that arrived together, in order, as one group commit: their journal
        writes share one fsync, and none of them is answered (nor a launch handed to its
        supervisor) before it. A fan-out's launches and a round's acks come this way."""
        done: List[Done] = []
        with self.journal.group_commit() as group:
            try:
                for line in lines:
                    # A slot is held from the first byte of work until the request is carried out
                    # (by this thread, or by the thread it hands a launch to): a serve that has to
                    # leave waits for the slots, so it never leaves a launch it has accepted
                    # without a supervisor. All taken: finish what this batch holds first.
                    if not self._request_slots.acquire(blocking=False):
                        self._finish_batch(group, done)
                        self._request_slots.acquire()
                    done.append(self._handle_line(line))
            finally:
                self._finish_batch(group, done)

    def _finish_batch(self, group: GroupCommit, done: List[Done]) -> None:
        """Make the batch's journal writes durable, then answer its requests (each frees its slot)
        in one write to the channel (one SSH message for a round's acks), then start what follows."""
        try:
            group.sync()
        except OSError as exc:
            self.log.line(f"journal fsync failed: {exc!r}; the requests that wrote to it are not answered as done")
            failed = error(None, "Internal", f"the agent could not make its journal durable: {exc}")
            for entry in done:
                entry.abandon()  # nothing of it goes on: no launch is handed to a supervisor
            answers = [dict(failed, id=entry.request_id) for entry in done]
            follow: List[Callable[[], None]] = []
        else:
            answers = [entry.answer for entry in done if entry.answer is not None]
            follow = [entry.then for entry in done]
        done.clear()
        for _ in answers:
            self._request_slots.release()
        self._send(*answers)
        for then in follow:
            then()

    def _handle_line(self, line: bytes) -> Done:
        """Carry out one request (its slot taken); its id and what answers it once the journal
        writes of its batch are durable."""
        request_id: Optional[int] = None
        outcome: Handled
        try:
            request = parse_request(line.decode("utf-8", "replace"))
            request_id = request.id
            if request.op == "watch":
                outcome, after = self._watch(request)
            else:
                outcome, after = self._handlers.table[request.op](request), None
        except Exception as exc:
            return Done(request_id, self._error_response(request_id, exc))
        if isinstance(outcome, Later):
            # Answered by a waiter thread once done (it frees the slot); the next requests need not wait for it.
            later = outcome
            return Done(
                request.id,
                None,
                lambda: self._waiters.run(lambda: self._finish_later(request.id, later)),
                later.abandon,
            )
        return Done(request.id, ok(request.id, outcome), after or _nothing)

    def _finish_later(self, request_id: int, later: Later) -> None:
        try:
            response = ok(request_id, later.finish())
        except Exception as exc:
            response = self._error_response(request_id, exc)
        finally:
            self._request_slots.release()
        self._send(response)

    def _error_response(self, request_id: Optional[int], exc: Exception) -> Dict[str, Any]:
        if isinstance(exc, RequestError):
            return error(exc.request_id, exc.code, exc.message)
        if isinstance(exc, ProtocolError):
            return error(request_id, exc.code, exc.message)
        # An answer is owed whatever broke; the agent log keeps the detail.
        self.log.line(f"internal error answering request {request_id}: {exc!r}")
        return error(request_id, "Internal", f"{type(exc).__name__}: {exc}")

    def _send(self, *messages: Dict[str, Any]) -> bool:
        """Write messages that are no events, in one write (one SSH message for what is ready
        together); False once the channel is lost (the serve loop is then told to leave)."""
        return not messages or self._write(b"".join(encode(message) for message in messages))

    def _send_encoded(self, events: List[Tuple[int, bytes]]) -> bool:
        """Write watched events (seq, encoded message), in one write."""
        return not events or self._write(b"".join(message for _, message in events), events[-1][0])

    def _write(self, data: bytes, last_event_seq: Optional[int] = None) -> bool:
        with self._write_lock:
            if self._connection_lost:
                return False
            try:
                self._writer.write(data)
                self._writer.flush()
                if last_event_seq is not None:
                    self._last_sent_seq = last_event_seq
                return True
            except (OSError, ValueError):
                self._connection_lost = True
        os.write(self._leave_w, b"!")
        return False

    def _wait_for_requests_in_progress(self, deadline: float) -> None:
        """Until the requests in progress are done (a launch being accepted, or handing its job to
        a supervisor), or the deadline."""
        for _ in range(_MAX_REQUESTS_IN_PROGRESS):
            if not self._request_slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return

    def _report_unsent(self, why: str) -> None:
        if not self._watching:
            return
        last = self.journal.last_event_seq()
        if last > self._last_sent_seq:
            self.log.line(f"could not report: {why} (events seq {self._last_sent_seq + 1}..{last} not sent)")
        # Written to the channel is not received (the network may have lost it): a result the
        # operator has not acknowledged is unreported as far as anyone can tell. The journal keeps
        # it for the next connection.
        for record in self.journal.list_records():
            if record.ended and not record.acknowledged and record.seq <= self._last_sent_seq:
                self.log.line(
                    f"could not report: {why} before the operator acknowledged the result ({record.describe_end()})",
                    record.key,
                )

    # -- background work ---------------------------------------------------------------------

    def _heartbeats(self) -> None:
        while not self._stopping.wait(self.config.heartbeat_seconds):
            self._send(heartbeat(time.time(), self.journal.last_event_seq()))

    def _sweeps(self) -> None:
        last_gc = time.monotonic()
        while not self._stopping.wait(self.config.sweep_seconds):
            try:
                self._detector.sweep()
                if time.monotonic() - last_gc >= _GC_INTERVAL_SECONDS:
                    last_gc = time.monotonic()
                    self._collect_garbage()
            except Exception as exc:  # keep sweeping: a bad job dir must not blind the agent
                self.log.line(f"sweep failed: {exc!r}")

    def _collect_garbage(self) -> None:
        for key in self.journal.collect_garbage(
            self.config.retention_seconds, compact_threshold_bytes=self.config.compact_threshold_bytes
        ):
            self.log.line("removed: acknowledged and older than the retention period", key)

    # -- the watch stream --------------------------------------------------------------------

    def _watch(self, request: Request) -> Tuple[Dict[str, Any], Callable[[], None]]:
        """Answer with the last seq, then (once the answer is written) stream the events."""
        from_seq = int_arg(request.args, "fromSeq", default=0)
        self._stop_watch()
        stop = threading.Event()
        wakeup = self.journal.events.wakeup()
        self._current_watch = (stop, wakeup)
        watcher = self.journal.events.reader(from_seq)
        with self._write_lock:
            self._watching = True
            self._last_sent_seq = from_seq
        last_seq = self.journal.last_event_seq()

        def start() -> None:
            threading.Thread(target=self._stream_events, args=(watcher, stop, wakeup), daemon=True).start()

        return {"lastSeq": last_seq}, start

    def _stop_watch(self) -> None:
        if self._current_watch is not None:
            stop, wakeup = self._current_watch
            stop.set()
            wakeup.wake()

    def _stream_events(self, watcher: EventReader, stop: threading.Event, wakeup: EventWakeup) -> None:
        try:
            while not stop.is_set() and not self._stopping.is_set():
                events = watcher.poll_watched()
                if not self._send_encoded(events):
                    return
                if not events:
                    # Woken by every journal writer; the timeout only bounds a missed wake-up
                    # (e.g. from an older agent version sharing the state dir).
                    wakeup.wait(self.config.poll_seconds)
        except Exception as exc:
            self.log.line(f"event stream failed: {exc!r}")
        finally:
            watcher.close()
            wakeup.close()


def serve(config: AgentConfig, boot_id: str) -> int:
    code = Server(config, boot_id, sys.stdin.fileno(), sys.stdout.buffer).run()
    # Leave at once, without the interpreter's exit: the channel may be gone (flushing stdout at
    # exit would fail), and the daemon threads (heartbeats, a watch stream, a launch past its
    # deadline) must not outlive the decision to leave.
    os._exit(code)
