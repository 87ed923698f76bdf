"""HostLink keeps an idle agent channel open for --agent-idle-timeout (the next run needs no
connection, agent start or supervising process start), checks its heartbeats meanwhile, never reopens
it while idle, and closes it at the deadline; a run subscribing meanwhile keeps it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from jobnet.kube.runtime import HostLink, LinkKey, RuntimeConfig
from jobnet.ssh import SshSettings

IDLE = 0.3


@dataclass
class FakeAgent:
    """The connected agent as HostLink sees it; counts closes, can lose its channel."""

    connected: bool = True
    heartbeat: float = 0.0
    closes: int = 0
    #: no hello: HostLink's check for keys the agent lost (agentlost.py) never starts
    hello: object = None

    def heartbeat_age(self) -> float | None:
        return self.heartbeat if self.connected else None

    def synced_heartbeat_age(self) -> float | None:
        return self.heartbeat_age()

    async def close(self) -> None:
        self.closes += 1
        self.connected = False

    def drop_connection(self) -> None:
        self.connected = False


@dataclass
class NoSecrets:
    reads: int = 0

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1  # a reconnect would need them: the test fails on the missing keys
        return {}


@dataclass
class StubRuntime:
    client: NoSecrets = field(default_factory=NoSecrets)
    config: RuntimeConfig = field(
        default_factory=lambda: RuntimeConfig(
            heartbeat_deadline=0.3, agent_idle_timeout=IDLE, ssh=SshSettings(reconnect_backoff_min=0.01)
        )
    )


@dataclass
class FakeRun:
    uid: str

    def on_record(self, record: Any) -> None:
        raise AssertionError("no records in these tests")

    def wake(self) -> None:
        pass


def _link() -> tuple[HostLink, FakeAgent, StubRuntime]:
    runtime = StubRuntime()
    link = HostLink(LinkKey("batch", "vm1", 22, "runner", "vm-creds"), runtime)  # type: ignore[arg-type]
    agent = FakeAgent()
    link.agent = agent  # type: ignore[assignment]
    return link, agent, runtime


async def _keeper_done(link: HostLink, timeout: float) -> float:
    """Seconds until the link's keeper returned (bounded)."""
    assert link._keeper is not None
    started = time.monotonic()
    await asyncio.wait_for(asyncio.shield(link._keeper), timeout)
    return time.monotonic() - started


def test_an_idle_channel_stays_open_until_the_idle_timeout_then_closes() -> None:
    async def scenario() -> tuple[float, int, int]:
        link, agent, runtime = _link()
        run = FakeRun("r1")
        link.subscribe(run)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        link.unsubscribe(run)  # type: ignore[arg-type]
        waited = await _keeper_done(link, 5)
        return waited, agent.closes, runtime.client.reads

    waited, closes, reads = asyncio.run(scenario())
    assert IDLE * 0.9 <= waited < IDLE + 1.0
    assert closes == 1 and reads == 0


def test_a_run_arriving_while_idle_keeps_the_channel() -> None:
    async def scenario() -> tuple[int, bool]:
        link, agent, _ = _link()
        first, second = FakeRun("r1"), FakeRun("r2")
        link.subscribe(first)  # type: ignore[arg-type]
        link.unsubscribe(first)  # type: ignore[arg-type]
        await asyncio.sleep(IDLE / 2)
        link.subscribe(second)  # type: ignore[arg-type]
        await asyncio.sleep(IDLE * 2)  # past the first idle deadline: still in use
        assert link._keeper is not None
        running = not link._keeper.done()
        await link.close()
        return agent.closes, running

    closes, running = asyncio.run(scenario())
    assert running and closes == 1  # closed by link.close() only


def test_a_channel_lost_while_idle_is_not_reopened() -> None:
    async def scenario() -> tuple[float, int]:
        link, agent, runtime = _link()
        run = FakeRun("r1")
        link.subscribe(run)  # type: ignore[arg-type]
        link.unsubscribe(run)  # type: ignore[arg-type]
        agent.heartbeat = 10.0  # silent past the heartbeat deadline: dropped, and idle: not reopened
        waited = await _keeper_done(link, 5)
        return waited, runtime.client.reads

    waited, reads = asyncio.run(scenario())
    assert waited < IDLE and reads == 0
