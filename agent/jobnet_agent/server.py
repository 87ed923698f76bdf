"""``jobnet-agent serve``: the JSON-lines protocol on stdin/stdout (docs/agent-protocol.md).

One serve process per SSH channel. It holds no state of its own: every answer comes from the
journal, every job is run by its own detached supervisor, so the channel (and this process) may
die at any moment without losing anything.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

from jobnet_agent import PROTOCOL_VERSION, __version__
from jobnet_agent.config import AgentConfig
from jobnet_agent.detection import end_record, observe
from jobnet_agent.endrule import ADOPT, END, decide
from jobnet_agent.eventlog import EventReader, EventWakeup
from jobnet_agent.faults import crash_point, pause_point
from jobnet_agent.forkserver import SupervisorForkServer, spawn_adopting_supervisor
from jobnet_agent.journal import Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.protocol import (
    ACCEPTED,
    ACTIVE_STATES,
    FAILED_TO_START,
    FENCED,
    FENCED_MESSAGE,
    MAX_READ_LENGTH,
    RUNNING,
    JobKey,
    JobRecord,
    LaunchSpec,
    ProtocolError,
    Request,
    RequestError,
    check_hello,
    encode,
    error,
    event,
    heartbeat,
    int_arg,
    kill_args,
    ok,
    optional_run_arg,
    parse_request,
    stream_arg,
)

_MAX_LINE_BYTES = 16 * 1024 * 1024
_GC_INTERVAL_SECONDS = 60.0
_SHUTDOWN_SECONDS = 10.0

#: How many requests may be in progress at once, most of them launches waiting for their
#: supervisor (then the channel waits too).
_MAX_REQUESTS_IN_PROGRESS = 16


class Later:
    """A request whose effect is done (and journaled) but whose answer takes a while."""

    def __init__(self, finish: Callable[[], Dict[str, Any]]) -> None:
        self.finish = finish


Handled = Union[Tuple[Dict[str, Any], Optional[Callable[[], None]]], Later]


class ActiveJobs:
    """The accepted and running jobs, kept current by following the event log.

    One directory scan when serve starts; afterwards a sweep costs a ``stat`` of the event log
    plus the new events, however many ended jobs the state dir keeps.
    """

    def __init__(self, journal: Journal) -> None:
        from_seq = journal.last_seq()
        records = journal.list_records()
        self._latest_seq: Dict[JobKey, int] = {r.key: r.seq for r in records}
        self._jobs: Dict[JobKey, JobRecord] = {r.key: r for r in records if r.state in ACTIVE_STATES}
        self._reader = journal.events.reader(from_seq)

    def current(self) -> List[JobRecord]:
        while True:
            records = self._reader.poll()
            if not records:
                return list(self._jobs.values())
            for record in records:
                if self._latest_seq.get(record.key, 0) >= record.seq:
                    continue  # already known from the scan
                self._latest_seq[record.key] = record.seq
                if record.state in ACTIVE_STATES:
                    self._jobs[record.key] = record
                else:
                    self._jobs.pop(record.key, None)


class Server:
    def __init__(self, config: AgentConfig, boot_id: str, reader: IO[bytes], writer: IO[bytes]) -> None:
        self.config = config
        self.boot_id = boot_id
        self.journal = Journal(config.state_dir, "serve")
        self.log = AgentLog(config.agent_log_path, "serve")
        self._reader = reader
        self._writer = writer
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._current_watch: Optional[Tuple[threading.Event, EventWakeup]] = None
        self._watching = False
        self._last_sent_seq = 0
        self._fork_server = SupervisorForkServer(config)
        self._active: ActiveJobs  # set by run(), after the journal is repaired
        self._request_slots = threading.BoundedSemaphore(_MAX_REQUESTS_IN_PROGRESS)
        self._connection_lost = False
        self._handlers: Dict[str, Callable[[Request], Handled]] = {
            "hello": self._hello,
            "launch": self._launch,
            "kill": self._kill,
            "fence": self._fence,
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "tail": self._tail,
            "read": self._read,
            "ack": self._ack,
            "ping": self._ping,
        }

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self.log.line(
            "serve started (agent %s, protocol %d, boot id %s)" % (__version__, PROTOCOL_VERSION, self.boot_id)
        )
        repaired = self.journal.repair(self.boot_id)
        for record in repaired.restored:
            self.log.line("journal repaired after a reboot: record restored from the event log (seq %d, %s)"
                          % (record.seq, record.state), record.key)  # fmt: skip
        for path in repaired.discarded:
            self.log.line(f"journal repaired after a reboot: discarded torn record {path} (its claim was never logged)")
        for record in repaired.relogged:
            self.log.line("journal repaired: re-logged event seq %d (%s)" % (record.seq, record.state), record.key)
        self._fork_server.prepare()
        self._active = ActiveJobs(self.journal)
        self.sweep()
        self._collect_garbage()
        threading.Thread(target=self._heartbeats, daemon=True).start()
        sweeper = threading.Thread(target=self._sweeps, daemon=True)
        sweeper.start()
        try:
            while not self._connection_lost:
                line = self._reader.readline(_MAX_LINE_BYTES)
                if not line:
                    break
                if line.strip():
                    self._handle_line(line)
        finally:
            self._stopping.set()
            self._stop_watch()
            # Let launches and a sweep in progress finish rather than cut them short.
            deadline = time.monotonic() + _SHUTDOWN_SECONDS
            self._wait_for_requests_in_progress(deadline)
            sweeper.join(timeout=max(0.0, deadline - time.monotonic()))
            self._report_unsent("channel closed")
            self.log.line("serve disconnected: channel closed")
        return 0

    def _handle_line(self, line: bytes) -> None:
        # A slot is held from the first byte of work until the request is carried out (by this
        # thread, or by the thread it hands a launch to): a serve that has to leave waits for
        # the slots, so it never leaves a launch it has accepted without a supervisor.
        self._request_slots.acquire()
        request_id: Optional[int] = None
        try:
            request = parse_request(line.decode("utf-8", "replace"))
            request_id = request.id
            outcome = self._handlers[request.op](request)
        except Exception as exc:
            self._request_slots.release()
            self._send(self._error_response(request_id, exc))
            return
        if isinstance(outcome, Later):
            # Answered from a thread once done (it releases the slot); the next requests need not wait for it.
            threading.Thread(target=self._finish_later, args=(request.id, outcome), daemon=True).start()
            return
        self._request_slots.release()
        result, after = outcome
        self._send(ok(request.id, result))
        if after is not None:
            after()

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

    def _send(self, message: Dict[str, Any]) -> bool:
        data = encode(message)
        with self._write_lock:
            if self._connection_lost:
                return False
            try:
                self._writer.write(data)
                self._writer.flush()
                if "event" in message:
                    self._last_sent_seq = message["event"]["seq"]
                return True
            except (OSError, ValueError):
                self._connection_lost = True
        self._report_unsent("connection lost")
        self.log.line("serve disconnected: cannot write to the channel")
        # Nothing can be reported any more and every fact is in the journal: leave now, the
        # operator reconnects and resumes its watch from the last seq it saw. Not before the
        # launches in progress have their supervisors: an accepted job is a promise to run it,
        # whoever is listening (else it would end failedToStart with its operator gone).
        self._wait_for_requests_in_progress(time.monotonic() + _SHUTDOWN_SECONDS)
        os._exit(0)

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
            self.log.line("could not report: %s (events seq %d..%d not sent)" % (why, self._last_sent_seq + 1, last))
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
                self.sweep()
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

    def sweep(self) -> None:
        """Find active jobs whose supervisor is gone and settle them (detection on restart)."""
        for record in self._active.current():
            self.check_job(record)

    def check_job(self, record: JobRecord) -> None:
        observed = observe(self.journal, record, self.boot_id)
        if observed is None:
            if record.kill_requested is not None and record.state == RUNNING:
                # A serve that recorded the kill may have died before waking the supervisor.
                self._wake_supervisor(record)
            return
        seen, taken = observed
        lock_fd: Optional[int] = taken
        try:
            verdict = decide(record, seen)
            if verdict.action == ADOPT:
                self.log.line(verdict.why, record.key)
                lock_fd = None  # handed over to the adopting supervisor
                spawn_adopting_supervisor(self.config, self.journal.job(record.key).path, taken)
            elif verdict.action == END:
                committed = end_record(self.journal, record, verdict)
                if committed is not None:
                    self.log.line(f"{verdict.why}: {committed.message}", record.key)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    # -- requests ----------------------------------------------------------------------------

    def _hello(self, request: Request) -> Handled:
        check_hello(request.args)
        client = request.args.get("client")
        self.log.line("client %r connected (protocol %d)" % (client, PROTOCOL_VERSION))
        return {
            "protocol": PROTOCOL_VERSION,
            "agentVersion": __version__,
            "bootId": self.boot_id,
            "hostname": socket.gethostname(),
            "lastSeq": self.journal.last_seq(),
            "pid": os.getpid(),
        }, None

    def _key(self, request: Request) -> JobKey:
        return JobKey.from_json(request.args.get("key"))

    def _existing(self, key: JobKey) -> JobRecord:
        record = self.journal.read_record(key)
        if record is None:
            raise ProtocolError("NotFound", f"the agent has no job {key.text()}")
        return record

    def _launch(self, request: Request) -> Handled:
        key = self._key(request)
        spec = LaunchSpec.from_json(request.args)
        accepted = JobRecord(key=key, state=ACCEPTED, accepted_at=time.time(), boot_id=self.boot_id)
        record, lock_fd = self.journal.claim(key, spec, lambda: accepted)
        if lock_fd is None:
            if record.reason == FENCED:
                self.log.line("launch ignored: key was fenced", key)
            elif record.state == RUNNING and record.pid is not None:
                self.log.line("launch ignored: already started (pid %d)" % record.pid, key)
            else:
                self.log.line(f"launch ignored: already {record.describe_end()}", key)
            return {"record": record.to_wire(), "deduplicated": True}, None
        self.log.line(
            "accepted: script %s, %d arg(s), timeout %s" % (spec.script, len(spec.args), spec.timeout_seconds), key
        )
        crash_point("serve:launch-after-accept")
        pause_point("serve:launch-after-accept")
        # The claim is journaled: later requests on this channel already see the job. Starting
        # it and waiting for its pid happen off the request loop.
        return Later(lambda: self._start_job(key, record, lock_fd))

    def _start_job(self, key: JobKey, accepted: JobRecord, lock_fd: int) -> Dict[str, Any]:
        pause_point("serve:before-hand-over")
        job_dir = self.journal.job(key).path
        ready_r, ready_w = os.pipe()
        try:
            self._fork_server.start_supervisor(job_dir, lock_fd, ready_w)
        finally:
            os.close(lock_fd)
            os.close(ready_w)
        try:
            # A byte (or EOF if the supervisor died) once the job has a pid or failed to start.
            select.select([ready_r], [], [], self.config.start_timeout_seconds)
        finally:
            os.close(ready_r)
        current = self.journal.read_record(key) or accepted
        return {"record": current.to_wire(), "deduplicated": False}

    def _kill(self, request: Request) -> Handled:
        key = self._key(request)
        grace, reason = kill_args(request.args, self.config.grace_seconds)

        def request_kill(current: JobRecord) -> Optional[JobRecord]:
            if current.ended or current.kill_requested is not None:
                return None
            return current.replace(kill_requested=reason, grace_seconds=grace)

        current, committed = self.journal.update(key, request_kill)
        if current is None:
            raise ProtocolError("NotFound", f"the agent has no job {key.text()}")
        if committed is None and current.ended:
            self.log.line(f"kill ignored: already {current.describe_end()}", key)
            return {"record": current.to_wire(), "deduplicated": current.kill_requested is not None,
                    "alreadyEnded": True}, None  # fmt: skip
        if committed is None:
            self.log.line(
                f"kill ignored: a kill ({current.kill_requested}) was already requested; reminding the supervisor",
                key,
            )
        else:
            self.log.line(f"kill requested ({reason}, grace {grace}s)", key)
        crash_point("serve:kill-after-request")
        self._wake_supervisor(committed or current, check=True)
        return {"record": (committed or current).to_wire(), "deduplicated": committed is None,
                "alreadyEnded": False}, None  # fmt: skip

    def _fence(self, request: Request) -> Handled:
        key = self._key(request)
        now = time.time()
        fenced = JobRecord(key=key, state=FAILED_TO_START, reason=FENCED, message=FENCED_MESSAGE,
                           accepted_at=now, ended_at=now, boot_id=self.boot_id)  # fmt: skip
        record, new = self.journal.fence(key, lambda: fenced)
        if new:
            self.log.line("fenced: never launched here, a launch of it will be refused", key)
        else:
            self.log.line(f"fence found the key already {record.describe_end()}", key)
        return {"record": record.to_wire(), "fenced": record.reason == FENCED}, None

    def _wake_supervisor(self, record: JobRecord, check: bool = False) -> None:
        if not self.journal.job(record.key).wake_supervisor() and check:
            # No supervisor listens (not started yet, or gone): detection settles it, and an
            # adopting supervisor carries out the kill recorded in the journal.
            self.check_job(record)

    def _get(self, request: Request) -> Handled:
        return {"record": self._existing(self._key(request)).to_wire()}, None

    def _list(self, request: Request) -> Handled:
        run = optional_run_arg(request.args)
        return {"records": [r.to_wire() for r in self.journal.list_records(run)]}, None

    def _watch(self, request: Request) -> Handled:
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
                records = watcher.poll()
                for record in records:
                    if not self._send(event(record)):
                        return
                if not records:
                    # Woken by every journal writer; the timeout only bounds a missed wake-up
                    # (e.g. from an older agent version sharing the state dir).
                    wakeup.wait(self.config.poll_seconds)
        except Exception as exc:
            self.log.line(f"event stream failed: {exc!r}")
        finally:
            watcher.close()
            wakeup.close()

    def _tail(self, request: Request) -> Handled:
        key = self._key(request)
        stream = stream_arg(request.args)
        max_bytes = min(int_arg(request.args, "maxBytes", default=4096), MAX_READ_LENGTH)
        self._existing(key)
        data, total, dropped = self.journal.job(key).output(stream).tail(max_bytes)
        return {"data": data.decode("utf-8", "replace"), "totalBytes": total, "droppedBytes": dropped}, None

    def _read(self, request: Request) -> Handled:
        key = self._key(request)
        stream = stream_arg(request.args)
        offset = int_arg(request.args, "offset", default=0)
        length = min(int_arg(request.args, "length", default=MAX_READ_LENGTH), MAX_READ_LENGTH)
        record = self._existing(key)
        data, stored = self.journal.job(key).output(stream).read(offset, length)
        eof = record.ended and offset + len(data) >= stored
        return {"data": base64.b64encode(data).decode("ascii"), "eof": eof}, None

    def _ack(self, request: Request) -> Handled:
        key = self._key(request)

        def acknowledge(current: JobRecord) -> Optional[JobRecord]:
            if not current.ended or current.acknowledged:
                return None
            return current.replace(acknowledged=True)

        current, committed = self.journal.update(key, acknowledge)
        if current is None:
            raise ProtocolError("NotFound", f"the agent has no job {key.text()}")
        if not current.ended:
            raise ProtocolError(
                "BadRequest",
                f"job {key.text()} is still {current.state}: only an ended job can be acknowledged",
            )
        if committed is not None:
            self.log.line(f"acknowledged ({committed.describe_end()})", key)
        return {"record": (committed or current).to_wire()}, None

    def _ping(self, request: Request) -> Handled:
        return {"time": time.time()}, None


def serve(config: AgentConfig, boot_id: str) -> int:
    return Server(config, boot_id, sys.stdin.buffer, sys.stdout.buffer).run()
