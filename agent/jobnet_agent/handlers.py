"""The protocol's requests (docs/agent-protocol.md), carried out against the journal.

Apart from the transport (:mod:`jobnet_agent.server`: the channel, threads, heartbeats, the
watch stream): a handler takes a parsed :class:`Request` and returns its result, or raises a
ProtocolError. Tests call them directly, without pipes or a serve process.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import time
from typing import Any, Callable, Dict, Optional, Union

from jobnet_agent import PROTOCOL_VERSION, __version__
from jobnet_agent.config import AgentConfig
from jobnet_agent.faults import crash_point, pause_point
from jobnet_agent.journal import Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.protocol import (
    ACCEPTED,
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
    check_hello,
    int_arg,
    kill_args,
    optional_run_arg,
    stream_arg,
)

Result = Dict[str, Any]


class Later:
    """A request whose effect is done (and journaled) but whose answer takes a while: the
    transport calls ``finish`` off its request loop and answers with what it returns, or, when
    the journal writes could not be made durable, ``abandon`` instead (it releases what
    ``finish`` would have)."""

    def __init__(self, finish: Callable[[], Result], abandon: Callable[[], None]) -> None:
        self.finish = finish
        self.abandon = abandon


Handled = Union[Result, Later]


class Handlers:
    """Carries out every request but ``watch`` (a stream: the transport's).

    ``start_supervisor(job_dir, lock_fd, ready_w)`` gets an accepted job a supervisor (serve's
    supervising process, see jobnet_agent.handover; a fake in tests); ``settle(record)`` settles
    a job whose supervisor is gone (detection).
    """

    def __init__(
        self,
        config: AgentConfig,
        boot_id: str,
        journal: Journal,
        log: AgentLog,
        start_supervisor: Callable[[str, int, int], None],
        settle: Callable[[JobRecord], None],
    ) -> None:
        self.config = config
        self.boot_id = boot_id
        self.journal = journal
        self.log = log
        self._start_supervisor = start_supervisor
        self._settle = settle
        self.table: Dict[str, Callable[[Request], Handled]] = {
            "hello": self.hello,
            "launch": self.launch,
            "kill": self.kill,
            "fence": self.fence,
            "get": self.get,
            "list": self.list,
            "tail": self.tail,
            "read": self.read,
            "ack": self.ack,
            "ping": self.ping,
        }

    def _existing(self, key: JobKey) -> JobRecord:
        record = self.journal.read_record(key)
        if record is None:
            raise ProtocolError("NotFound", f"the agent has no job {key.text()}")
        return record

    def hello(self, request: Request) -> Handled:
        check_hello(request.args)
        client = request.args.get("client")
        self.log.line(f"client {client!r} connected (protocol {PROTOCOL_VERSION})")
        return {
            "protocol": PROTOCOL_VERSION,
            "agentVersion": __version__,
            "bootId": self.boot_id,
            "hostname": socket.gethostname(),
            "lastSeq": self.journal.last_seq(),
            "pid": os.getpid(),
        }

    def launch(self, request: Request) -> Handled:
        key = _key(request)
        spec = LaunchSpec.from_json(request.args)
        pause_point("serve:launch-before-claim")  # a launch still on its way: it arrives late
        accepted = JobRecord(key=key, state=ACCEPTED, accepted_at=time.time(), boot_id=self.boot_id)
        record, lock_fd = self.journal.claim(key, spec, lambda: accepted)
        if lock_fd is None:
            if record.reason == FENCED:
                self.log.line("launch ignored: key was fenced", key)
            elif record.state == RUNNING and record.pid is not None:
                self.log.line(f"launch ignored: already started (pid {record.pid})", key)
            else:
                self.log.line(f"launch ignored: already {record.describe_end()}", key)
            return {"record": record.to_wire(), "deduplicated": True}
        self.log.line(f"accepted: script {spec.script}, {len(spec.args)} arg(s), timeout {spec.timeout_seconds}", key)
        crash_point("serve:launch-after-accept")
        pause_point("serve:launch-after-accept")
        # The claim is journaled: later requests on this channel already see the job. Starting
        # it and waiting for its pid happen off the request loop.
        # Abandoned (its claim not durable): the lock goes, so detection settles the job as never
        # started instead of a serve that holds its lock keeping it accepted.
        return Later(lambda: self._start_job(key, record, lock_fd), lambda: os.close(lock_fd))

    def _start_job(self, key: JobKey, accepted: JobRecord, lock_fd: int) -> Result:
        pause_point("serve:before-hand-over")
        ready_r, ready_w = os.pipe()
        try:
            self._start_supervisor(self.journal.job(key).path, lock_fd, ready_w)
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

    def kill(self, request: Request) -> Handled:
        key = _key(request)
        grace, reason = kill_args(request.args, self.config.grace_seconds)

        def request_kill(current: JobRecord) -> Optional[JobRecord]:
            if current.ended or current.kill_requested is not None:
                return None
            return current.replace(kill_requested=reason, grace_seconds=grace)

        pause_point("serve:kill-before-request")  # held here, the kill has arrived but nothing acts on it yet
        current, committed = self.journal.update(key, request_kill)
        if current is None:
            raise ProtocolError("NotFound", f"the agent has no job {key.text()}")
        if committed is None and current.ended:
            self.log.line(f"kill ignored: already {current.describe_end()}", key)
            deduplicated = current.kill_requested is not None
            return {"record": current.to_wire(), "deduplicated": deduplicated, "alreadyEnded": True}
        if committed is None:
            self.log.line(
                f"kill ignored: a kill ({current.kill_requested}) was already requested; reminding the supervisor",
                key,
            )
        else:
            self.log.line(f"kill requested ({reason}, grace {grace}s)", key)
        crash_point("serve:kill-after-request")
        record = committed or current
        # A supervisor learns of the kill from the journal. Without one (not handed over yet, or
        # gone), detection settles the job, and an adopting supervisor carries out the kill.
        job = self.journal.job(key)
        job.wake_older_supervisor()
        if not job.supervisor_alive():
            self._settle(record)
        return {"record": record.to_wire(), "deduplicated": committed is None, "alreadyEnded": False}

    def fence(self, request: Request) -> Handled:
        key = _key(request)
        now = time.time()
        fenced = JobRecord(
            key=key,
            state=FAILED_TO_START,
            reason=FENCED,
            message=FENCED_MESSAGE,
            accepted_at=now,
            ended_at=now,
            boot_id=self.boot_id,
        )
        record, new = self.journal.fence(key, lambda: fenced)
        if new:
            self.log.line("fenced: never launched here, a launch of it will be refused", key)
        else:
            self.log.line(f"fence found the key already {record.describe_end()}", key)
        return {"record": record.to_wire(), "fenced": record.reason == FENCED}

    def get(self, request: Request) -> Handled:
        return {"record": self._existing(_key(request)).to_wire()}

    def list(self, request: Request) -> Handled:
        run = optional_run_arg(request.args)
        return {"records": [r.to_wire() for r in self.journal.list_records(run)]}

    def tail(self, request: Request) -> Handled:
        key = _key(request)
        stream = stream_arg(request.args)
        max_bytes = min(int_arg(request.args, "maxBytes", default=4096), MAX_READ_LENGTH)
        self._existing(key)
        data, total, dropped = self.journal.job(key).output(stream).tail(max_bytes)
        return {"data": data.decode("utf-8", "replace"), "totalBytes": total, "droppedBytes": dropped}

    def read(self, request: Request) -> Handled:
        key = _key(request)
        stream = stream_arg(request.args)
        offset = int_arg(request.args, "offset", default=0)
        length = min(int_arg(request.args, "length", default=MAX_READ_LENGTH), MAX_READ_LENGTH)
        record = self._existing(key)
        data, stored = self.journal.job(key).output(stream).read(offset, length)
        eof = record.ended and offset + len(data) >= stored
        return {"data": base64.b64encode(data).decode("ascii"), "eof": eof}

    def ack(self, request: Request) -> Handled:
        key = _key(request)

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
        return {"record": (committed or current).to_wire()}

    def ping(self, request: Request) -> Handled:
        return {"time": time.time()}


def _key(request: Request) -> JobKey:
    return JobKey.from_json(request.args.get("key"))
