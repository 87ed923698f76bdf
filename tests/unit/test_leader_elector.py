"""The election loop (kube/leader.py) against a fake Lease store and a fake monotonic clock: a
leader whose renewals fail stops leading before its Lease can expire, counted from the send of
its last accepted renewal; a term that lapsed and was renewed restarts the leader's work."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from jobnet.core.lease import ElectionConfig
from jobnet.kube.client import KubeApiError
from jobnet.kube.leader import LeaderElector

CONFIG = ElectionConfig("replica-a", lease_duration=15, renew_deadline=10, retry_period=2)
WALL = datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One Lease with versions; ``failing`` refuses every request; ``latency`` is added to the
    clock by each request (the time a request takes)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing = False
        self.latency = 0.0
        self.writes: list[float] = []  # when (fake monotonic) each accepted write was sent

    def _answer(self, what: str) -> None:
        self.clock.now += self.latency
        if self.failing:
            raise KubeApiError(what, None, "the API server is unreachable")

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._answer("reading the Lease")
        return self.lease

    async def write_lease(
        self, namespace: str, name: str, spec: dict[str, object], resource_version: str | None
    ) -> str | None:
        sent = self.clock.now
        self._answer("writing the Lease")
        self.version += 1
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(spec)}
        self.writes.append(sent)
        return str(self.version)


def elector() -> tuple[LeaderElector, FakeLeases, Clock]:
    clock = Clock()
    leases = FakeLeases(clock)
    return LeaderElector(leases, "ns", "lease", CONFIG, monotonic=clock, wall=lambda: WALL), leases, clock


def test_renew_failures_end_the_lead_at_the_renew_deadline_of_the_last_accepted_send() -> None:
    async def scenario() -> None:
        candidate, leases, clock = elector()
        leases.latency = 0.5  # the accepted renewal was sent 0.5 s before its answer came
        await candidate._try_once()
        assert candidate.leading()
        last_send = leases.writes[-1]
        leases.failing = True
        for step in range(40):
            clock.now = last_send + step * 0.5
            await candidate._try_once()
            elapsed = clock.now - last_send
            # leads exactly while within the renew deadline of the send, never up to the expiry
            assert candidate.leading() == (elapsed < CONFIG.renew_deadline), elapsed
        assert not candidate.leading() and clock.now - last_send < CONFIG.lease_duration + 10

    asyncio.run(scenario())


def test_a_term_that_lapsed_and_was_renewed_restarts_the_leaders_work() -> None:
    async def scenario() -> None:
        candidate, leases, clock = elector()
        calls: list[str] = []

        async def started() -> None:
            calls.append("started")

        async def stopped() -> None:
            calls.append("stopped")

        await candidate._try_once()
        await candidate._transition(started, stopped)
        # Frozen past the renew deadline (but within the lease: nobody took over); its next
        # renewal is accepted before the election loop looked again.
        clock.now += CONFIG.renew_deadline + 1
        assert not candidate.leading()
        await candidate._try_once()
        assert candidate.leading()
        await candidate._transition(started, stopped)
        assert calls == ["started", "stopped", "started"]

    asyncio.run(scenario())
