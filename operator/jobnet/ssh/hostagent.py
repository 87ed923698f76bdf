"""The operator's asyncio handle on one VM's agent: connect, install, hello, watch, resume.

:class:`HostAgent` owns nothing but the *channel*; the transport comes from the shared
:class:`~jobnet.ssh.pool.HostConnectionPool`. It connects lazily (the first request or
:meth:`HostAgent.connect`), installs the agent if needed, checks the protocol with ``hello``
and starts the event stream with ``watch`` from the last ``seq`` it delivered, so after any
reconnect the consumer receives every journal entry exactly once and in order.

Events are delivered on the event loop (``on_event`` is called from the loop thread, in seq
order). Blocking SSH work runs in worker threads; no SSH call ever blocks the loop.
Requests never retry by themselves: a failure is raised to the caller, classified
(:mod:`jobnet.ssh.errors`), because only the caller knows whether re-sending is safe (a launch
is re-sent with the same key; the agent deduplicates).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from jobnet.core.agentproto import AgentRequest, Heartbeat, HelloResult, JobRecord
from jobnet.metrics import operator_metrics
from jobnet.ssh.channel import AgentChannel, ChannelClosed
from jobnet.ssh.errors import ConnectionLost
from jobnet.ssh.installer import AgentInstaller
from jobnet.ssh.pool import HostConnectionPool, SshCredentials, SshTarget

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class AgentSettings:
    """How the operator runs and talks to ``jobnet-agent serve`` (seconds)."""

    request_timeout: float = 10.0
    open_timeout: float = 10.0
    #: extra ``serve`` options, e.g. ("--heartbeat-seconds", "2", "--grace-seconds", "10")
    serve_args: tuple[str, ...] = ()
    client_name: str = "jobnet-operator"


class HeartbeatSync:
    """When the agent last proved the consumer's records current.

    A heartbeat announces the journal seq of the agent's last event; it proves "every record as
    of my arrival" once the consumer has been delivered that seq. Each heartbeat counts from
    when it arrived: on a busy agent the newest heartbeat is nearly always a few events ahead of
    the stream, and the proof must not wait for a quiet moment that may never come. Fed on the
    event loop, in the order the channel received heartbeats and events."""

    def __init__(self) -> None:
        self._pending: collections.deque[tuple[int, float]] = collections.deque()
        #: arrival (monotonic) of the newest heartbeat whose announced seq has been delivered
        self.proven_at: float | None = None

    def heard(self, announced_seq: int, arrived_at: float, delivered_seq: int) -> None:
        self._pending.append((announced_seq, arrived_at))
        self.settle(delivered_seq)

    def settle(self, delivered_seq: int) -> None:
        """Every event up to ``delivered_seq`` has been delivered."""
        while self._pending and self._pending[0][0] <= delivered_seq:
            _, self.proven_at = self._pending.popleft()

    def forget_pending(self) -> None:
        """The agent's journal was reset: its numbering starts over, so pending announcements
        mean nothing any more (the proofs already made stay true)."""
        self._pending.clear()


class HostAgent:
    """One VM's agent for the operator (asyncio)."""

    def __init__(
        self,
        pool: HostConnectionPool,
        installer: AgentInstaller,
        target: SshTarget,
        credentials: SshCredentials,
        *,
        on_event: Callable[[JobRecord], None],
        settings: AgentSettings | None = None,
    ) -> None:
        self.pool = pool
        self.installer = installer
        self.target = target
        self.credentials = credentials
        self.settings = settings or AgentSettings()
        self._on_event = on_event
        self._channel: AgentChannel | None = None
        self._connect_lock = asyncio.Lock()
        #: highest seq delivered to on_event: the next watch resumes after it
        self.delivered_seq = 0
        self.hello: HelloResult | None = None
        self._heartbeats = HeartbeatSync()

    @property
    def connected(self) -> bool:
        return self._channel is not None and not self._channel.closed

    def heartbeat_age(self) -> float | None:
        """Seconds since the agent's last heartbeat on the current channel (None: no channel)."""
        return self._channel.heartbeat_age() if self.connected and self._channel else None

    def synced_heartbeat_age(self) -> float | None:
        """Seconds since the newest heartbeat whose announced journal seq has been delivered
        (None: none so far, or no channel now); see :class:`HeartbeatSync`.

        A heartbeat alone proves the agent lives, not that the consumer's records are current:
        right after a reconnect the resumed watch may still be replaying (e.g. a job the consumer
        holds as ``running`` that the rebooted agent has since recorded ``interrupted``)."""
        proven_at = self._heartbeats.proven_at
        if not self.connected or proven_at is None:
            return None
        return time.monotonic() - proven_at

    async def connect(self) -> AgentChannel:
        """The live channel, connecting (and installing the agent) if there is none."""
        async with self._connect_lock:
            if self._channel is not None and not self._channel.closed:
                return self._channel
            loop = asyncio.get_running_loop()
            began = time.monotonic()
            opening = asyncio.ensure_future(asyncio.to_thread(self._open_channel, loop))
            try:
                channel, hello, connected_at = await asyncio.shield(opening)
            except asyncio.CancelledError:
                opening.add_done_callback(_close_opened)  # the thread goes on: close what it opens
                raise
            greeted_at = time.monotonic()
            try:
                if hello.last_seq < self.delivered_seq:
                    log.warning(
                        "agent on %s has journal seq %d < %d already seen: its state directory was reset; "
                        "resuming from the start",
                        self.target,
                        hello.last_seq,
                        self.delivered_seq,
                    )
                    self.delivered_seq = 0
                    self._heartbeats.forget_pending()
                # The replay advances delivered_seq as soon as the watch starts: log where it began.
                watch_from = self.delivered_seq
                await asyncio.to_thread(channel.watch, watch_from, self.settings.request_timeout)
            except BaseException:
                channel.close()
                raise
            if self.hello is not None:
                operator_metrics.ssh_reconnect(str(self.target))
            self.hello = hello
            self._channel = channel
            log.info(
                "agent channel to %s open (agent %s, boot id %s, watching after seq %d; "
                "ssh %.3f s, serve started and answered hello %.3f s, watch %.3f s)",
                self.target,
                hello.agent_version,
                hello.boot_id,
                watch_from,
                connected_at - began,
                greeted_at - connected_at,
                time.monotonic() - greeted_at,
            )
            return channel

    async def request(self, request: AgentRequest, result_type: type[R], timeout: float | None = None) -> R:
        """Send one request on the (re)connected channel; raises the classified SshError."""
        channel = await self.connect()
        sent = time.monotonic()
        result = await channel.acall(request, result_type, timeout)
        operator_metrics.observe_agent_roundtrip(time.monotonic() - sent)
        return result

    async def close(self) -> None:
        async with self._connect_lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def drop_connection(self) -> None:
        """Forget the channel and the pooled transport (e.g. after the heartbeat was lost), so the
        next request reconnects instead of waiting on a dead TCP connection; that connection is
        reset, so nothing written to it reaches the agent later."""
        channel, self._channel = self._channel, None
        if channel is not None:
            self.pool.invalidate(self.target, channel.transport, reset=True)
            channel.close()

    # ------------------------------------------------------------ worker-thread side

    def _open_channel(self, loop: asyncio.AbstractEventLoop) -> tuple[AgentChannel, HelloResult, float]:
        """A channel to a serve that answered hello (installing the agent when it is missing),
        and when the SSH connection was there (monotonic)."""
        transport = self.pool.transport(self.target, self.credentials)
        connected_at = time.monotonic()

        def forward(record: JobRecord) -> None:
            loop.call_soon_threadsafe(self._deliver, record)

        def beat(heartbeat: Heartbeat) -> None:
            loop.call_soon_threadsafe(self._heard, heartbeat.last_seq, time.monotonic())

        def closed(error: ConnectionLost) -> None:
            # A close the operator asked for is routine (the channel logged it at INFO already).
            if not isinstance(error, ChannelClosed):
                log.warning("%s", error.message)

        def open_channel(command: str) -> AgentChannel:
            try:
                return AgentChannel(
                    transport,
                    command,
                    host=str(self.target),
                    on_event=forward,
                    on_heartbeat=beat,
                    on_close=closed,
                    request_timeout=self.settings.request_timeout,
                    open_timeout=self.settings.open_timeout,
                )
            except ConnectionLost:
                self.pool.invalidate(self.target, transport)
                raise

        channel, hello = self.installer.start_serve(
            transport,
            self.target.address,
            open_channel,
            client=self.settings.client_name,
            serve_args=self.settings.serve_args,
            timeout=self.settings.request_timeout,
        )
        return channel, hello, connected_at

    def _deliver(self, record: JobRecord) -> None:
        """On the loop: hand over each journal entry once, in order (a resumed watch may overlap)."""
        if record.seq <= self.delivered_seq:
            return
        self.delivered_seq = record.seq
        self._on_event(record)
        self._heartbeats.settle(self.delivered_seq)

    def _heard(self, announced_seq: int, arrived_at: float) -> None:
        # Counted once the watch runs: before that, a reset journal's announcements would be
        # compared with the numbering of the old one.
        if self.connected:
            self._heartbeats.heard(announced_seq, arrived_at, self.delivered_seq)


def _close_opened(opening: asyncio.Future[tuple[AgentChannel, HelloResult, float]]) -> None:
    """The channel an abandoned opening made, closed (a failed opening closed its own)."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()
