"""The long-lived agent channel: one SSH exec session running ``jobnet-agent serve`` per host.

Concurrency model (decided here, relied on by the operator): a channel owns one reader thread
(JSON lines from the agent's stdout) and one thread draining stderr. Requests may be sent from
any thread or from asyncio: :meth:`AgentChannel.submit` writes the line under a lock and returns
a :class:`concurrent.futures.Future` that the reader thread resolves by request id;
:meth:`AgentChannel.call` waits for it (threads), :meth:`AgentChannel.acall` awaits it through
``asyncio.wrap_future`` (which hops to the loop with ``call_soon_threadsafe``).

Events (after ``watch``) and heartbeats are handed to ``on_event`` / ``on_heartbeat`` on the
reader thread, in the order the agent sent them; asyncio users forward them with
``loop.call_soon_threadsafe``. The channel remembers the last heartbeat (monotonic time) so the
caller can detect HeartbeatLost, and the highest event ``seq`` seen so a new channel can resume
the stream with ``watch(fromSeq)``.

When the channel dies every pending request fails with :class:`ConnectionLost` (a request that
times out raises :class:`ResponseTimeout`): for a ``launch`` the outcome is then *unknown* and
the caller decides (e.g. re-send the same key: the agent deduplicates).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import json
import logging
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import paramiko
from pydantic import BaseModel, ValidationError

from jobnet.core.agentproto import (
    PROTOCOL_VERSION,
    AgentProtocolError,
    AgentRequest,
    EventMessage,
    Heartbeat,
    HeartbeatMessage,
    HelloRequest,
    HelloResult,
    JobRecord,
    Response,
    WatchRequest,
    WatchResult,
    parse_agent_message,
)
from jobnet.ssh.errors import AgentInstallFailed, AgentRequestFailed, ConnectionLost, ResponseTimeout

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)
_STDERR_LINES_KEPT = 20
_READ_CHUNK = 1 << 16


def serve_command(
    agent_path: str, *, python: str = "python3", serve_args: Sequence[str] = (), quote_path: bool = True
) -> str:
    """The shell command that starts ``serve`` from an installed zipapp (arguments quoted; the
    path too unless the caller quoted it). ``-I -S``: the agent is standard library only, so
    no site-packages to scan and no ``PYTHON*`` variables of the login to follow."""
    path = shlex.quote(agent_path) if quote_path else agent_path
    rest = " ".join(shlex.quote(part) for part in ("serve", *serve_args))
    return f"{shlex.quote(python)} -I -S {path} {rest}"


class ChannelClosed(ConnectionLost):
    """The operator closed the channel itself (a routine close, e.g. of an idle host's channel)."""


class AgentChannel:
    """JSON-lines request/response with one agent over one SSH exec session."""

    def __init__(
        self,
        transport: paramiko.Transport,
        command: str,
        *,
        host: str,
        on_event: Callable[[JobRecord], None] | None = None,
        on_heartbeat: Callable[[Heartbeat], None] | None = None,
        on_close: Callable[[ConnectionLost], None] | None = None,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.transport = transport
        self.request_timeout = request_timeout
        self._on_event = on_event
        self._on_heartbeat = on_heartbeat
        self._on_close = on_close
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, concurrent.futures.Future[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES_KEPT)
        self.closed_error: ConnectionLost | None = None
        self.last_heartbeat: Heartbeat | None = None
        self.last_heartbeat_at: float | None = None  # time.monotonic()
        self.last_event_seq = 0
        self.opened_at = time.monotonic()
        self.hello_result: HelloResult | None = None
        #: the exit status of the command once the channel was lost, when the VM sent one
        self.exit_status: int | None = None
        #: set by the reader at the first line from the agent
        self._heard = False
        try:
            self._channel = transport.open_session(timeout=open_timeout)
            self._channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"cannot open the agent channel on {host}: {exc.__class__.__name__}: {exc}") from None
        self._reader = threading.Thread(target=self._read_stdout, name=f"agent-channel-{host}", daemon=True)
        self._stderr_reader = threading.Thread(target=self._read_stderr, name=f"agent-stderr-{host}", daemon=True)
        self._reader.start()
        self._stderr_reader.start()

    # ------------------------------------------------------------ requests

    @property
    def closed(self) -> bool:
        return self.closed_error is not None

    def submit(self, request: AgentRequest) -> concurrent.futures.Future[dict[str, Any]]:
        """Send a request; the future resolves to the result object or fails with an SshError."""
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self.closed_error is not None:
                raise self.closed_error
            request_id = next(self._ids)
            self._pending[request_id] = (request.op, future)
        line = json.dumps({"id": request_id, **request.wire()}, separators=(",", ":")).encode() + b"\n"
        try:
            with self._send_lock:
                self._channel.sendall(line)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._fail(ConnectionLost(f"agent channel to {self.host} broke while sending {request.op}: {exc!r}"))
        return future

    def call(self, request: AgentRequest, result_type: type[R], timeout: float | None = None) -> R:
        """Send and wait (blocking). Raises AgentRequestFailed, ConnectionLost or ResponseTimeout."""
        future = self.submit(request)
        deadline = self.request_timeout if timeout is None else timeout
        try:
            result = future.result(deadline)
        except concurrent.futures.TimeoutError:
            raise self._timed_out(request, future, deadline) from None
        return self._parse_result(request, result, result_type)

    async def acall(self, request: AgentRequest, result_type: type[R], timeout: float | None = None) -> R:
        """Send and await (asyncio). Same errors as :meth:`call`."""
        future = self.submit(request)
        deadline = self.request_timeout if timeout is None else timeout
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), deadline)
        except TimeoutError:
            raise self._timed_out(request, future, deadline) from None
        return self._parse_result(request, result, result_type)

    def hello(self, client: str, timeout: float | None = None) -> HelloResult:
        """The version handshake; raises AgentInstallFailed when the agent speaks another protocol."""
        try:
            result = self.call(HelloRequest(client=client), HelloResult, timeout)
        except AgentRequestFailed as exc:
            raise AgentInstallFailed(f"agent on {self.host} refused hello: {exc.message}") from None
        if result.protocol != PROTOCOL_VERSION:
            raise AgentInstallFailed(
                f"agent on {self.host} speaks protocol {result.protocol}, this operator speaks {PROTOCOL_VERSION}"
            )
        self.hello_result = result
        return result

    def watch(self, from_seq: int | None = None, timeout: float | None = None) -> WatchResult:
        """Start the event stream after ``from_seq`` (default: after the last event this channel saw)."""
        start = self.last_event_seq if from_seq is None else from_seq
        return self.call(WatchRequest(from_seq=start), WatchResult, timeout)

    def heartbeat_age(self) -> float:
        """Seconds since the last heartbeat (or since the channel opened, before the first)."""
        return time.monotonic() - (self.last_heartbeat_at or self.opened_at)

    def stderr_tail(self) -> list[str]:
        return list(self._stderr)

    def close(self) -> None:
        self._fail(ChannelClosed(f"agent channel to {self.host} closed by the operator"))

    # ------------------------------------------------------------ internals

    def _timed_out(
        self, request: AgentRequest, future: concurrent.futures.Future[Any], deadline: float
    ) -> ResponseTimeout:
        with self._lock:
            for request_id, (_, pending) in list(self._pending.items()):
                if pending is future:
                    del self._pending[request_id]
        if self.closed_error is not None:
            return ResponseTimeout(self.closed_error.message)
        return ResponseTimeout(
            f"no response to {request.op} from the agent on {self.host} within {deadline:g}s: "
            "the request may or may not have been carried out"
        )

    def _parse_result(self, request: AgentRequest, result: dict[str, Any], result_type: type[R]) -> R:
        try:
            return result_type.model_validate(result)
        except ValidationError as exc:
            raise AgentRequestFailed(
                "BadResponse",
                f"agent on {self.host} sent an invalid {request.op} result: {exc.errors(include_url=False)}",
            ) from None

    def _read_stdout(self) -> None:
        buffer = b""
        reason = "the agent closed its output"
        try:
            while True:
                chunk = self._channel.recv(_READ_CHUNK)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._dispatch(line)
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
        if not self._heard:
            # Nothing came from serve: its command may have failed to start it (the zipapp not
            # installed, see AgentInstaller.start_command). The status follows the output's end
            # (or the channel closes without one); bounded in case the session lingers.
            self._channel.status_event.wait(self.request_timeout)
        status = self._channel.exit_status if self._channel.exit_status_ready() else None
        if status not in (None, -1):
            self.exit_status = status
        detail = f"; agent exited with status {status}" if status not in (None, -1) else ""
        last_stderr = f"; agent stderr: {self._stderr[-1]}" if self._stderr else ""
        self._fail(ConnectionLost(f"agent channel to {self.host} lost ({reason}{detail}{last_stderr})"))

    def _dispatch(self, line: bytes) -> None:
        self._heard = True
        try:
            message = parse_agent_message(line)
        except AgentProtocolError as exc:
            log.warning("ignoring a bad line from the agent on %s: %s", self.host, exc)
            return
        if isinstance(message, Response):
            with self._lock:
                op, future = self._pending.pop(message.id, (None, None))
            if future is None:
                log.debug("late or unknown response id %s from %s", message.id, self.host)
            elif message.ok:
                _settle(future, result=message.result or {})
            else:
                error = message.error
                _settle(
                    future,
                    error=AgentRequestFailed(
                        error.code if error else "Internal", error.message if error else f"{op} failed"
                    ),
                )
        elif isinstance(message, HeartbeatMessage):
            self.last_heartbeat = message.heartbeat
            self.last_heartbeat_at = time.monotonic()
            self._notify(self._on_heartbeat, message.heartbeat)
        elif isinstance(message, EventMessage):
            self.last_event_seq = max(self.last_event_seq, message.event.seq)
            self._notify(self._on_event, message.event)

    def _notify(self, callback: Callable[[Any], None] | None, value: Any) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:  # a broken consumer must not kill the channel
            log.exception("agent channel callback failed for %s", self.host)

    def _read_stderr(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._channel.recv_stderr(_READ_CHUNK)
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                self._stderr.extend(line.decode(errors="replace")[:500] for line in lines if line.strip())
        except (TimeoutError, OSError, paramiko.SSHException, EOFError):
            return

    def _fail(self, error: ConnectionLost) -> None:
        with self._lock:
            if self.closed_error is not None:
                return
            self.closed_error = error
            pending, self._pending = self._pending, {}
        self._channel.close()
        for op, future in pending.values():
            _settle(future, error=ConnectionLost(f"{error.message} while waiting for the {op} response"))
        log.info("%s", error.message)
        self._notify(self._on_close, error)


def _settle(future: concurrent.futures.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a request's future unless its waiter already gave up (timed out, cancelled)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass
