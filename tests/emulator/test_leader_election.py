"""Leader election of operator replicas over a real Lease in the API emulator (kube/leader.py):
one leader at a time, a takeover after the lease expires or at once after a release, and a
leader cut off from the API server that stops before anyone else may start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import kopf
import pytest

from jobnet.core.lease import ElectionConfig
from jobnet.kube.client import KubeApiError, KubeClient, Timeouts
from jobnet.kube.leader import LeaderElector
from tests.support.emulator import EmulatorServer

pytestmark = pytest.mark.emulator

NAMESPACE = "default"
LEASE = "jobnet-operator"
#: Short, but with the proportions of client-go's defaults (15/10/2).
DURATIONS = {"lease_duration": 1.5, "renew_deadline": 1.0, "retry_period": 0.1}
#: Every wait below is bounded by this.
DEADLINE = 15.0


@dataclass
class Candidate:
    """One elector with its own client, and the log of its leadership."""

    elector: LeaderElector
    started: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def on_started(self) -> None:
        self.started.append(time.monotonic())

    async def on_stopped(self) -> None:
        self.stopped.append(time.monotonic())

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.on_started, self.on_stopped))

    async def crash(self) -> None:
        """Stop campaigning without handing the Lease back (a killed replica)."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def candidate(server: EmulatorServer, identity: str) -> Candidate:
    client = KubeClient(Timeouts(connect=0.5, request=0.5))
    await client.connect(kopf.ConnectionInfo(server=server.url))
    return Candidate(LeaderElector(client, NAMESPACE, LEASE, ElectionConfig(identity, **DURATIONS)))


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def watch_overlap(candidates: list[Candidate], until: Callable[[], Awaitable[None]]) -> None:
    """Run ``until`` while checking, every few milliseconds, that at most one candidate leads."""
    done = asyncio.create_task(until())
    while not done.done():
        leaders = [c.elector.config.identity for c in candidates if c.elector.leading()]
        assert len(leaders) <= 1, f"two leaders at once: {leaders}"
        await asyncio.sleep(0.005)
    await done


def lease_spec(server: EmulatorServer) -> dict[str, object]:
    leases = server.list_objects("coordination.k8s.io/v1", "leases", NAMESPACE)
    assert len(leases) == 1, leases
    spec: dict[str, object] = leases[0]["spec"]
    return spec


def test_one_leader_and_a_takeover_after_a_crash(emulator: EmulatorServer) -> None:
    async def scenario() -> None:
        a, b = await candidate(emulator, "replica-a"), await candidate(emulator, "replica-b")
        a.start()
        await wait_for(a.elector.leading, "replica-a to lead")
        b.start()

        async def crash_and_take_over() -> None:
            await asyncio.sleep(0.3)  # b campaigns against a live leader for a few turns
            assert not b.elector.leading() and not b.started
            await a.crash()
            crashed = time.monotonic()
            await wait_for(b.elector.leading, "replica-b to take over")
            # b waited out the lease it last saw renewed: not before a lease duration.
            assert time.monotonic() - crashed >= DURATIONS["lease_duration"] - DURATIONS["renew_deadline"]

        await watch_overlap([a, b], crash_and_take_over)
        assert len(a.started) == 1 and len(a.stopped) == 1  # a's cancellation ended its term
        assert len(b.started) == 1 and not b.stopped
        await b.crash()
        for c in (a, b):
            await c.elector.client.close()

    asyncio.run(scenario())
    spec = lease_spec(emulator)
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 2  # whole seconds, rounded like client-go's
    assert str(spec["renewTime"]).endswith("Z") and "." in str(spec["renewTime"])


def test_a_released_lease_is_taken_over_at_once(emulator: EmulatorServer) -> None:
    async def scenario() -> None:
        a, b = await candidate(emulator, "replica-a"), await candidate(emulator, "replica-b")
        a.start()
        await wait_for(a.elector.leading, "replica-a to lead")
        b.start()
        await a.crash()
        await a.elector.release()
        released = time.monotonic()
        await wait_for(b.elector.leading, "replica-b to take over")
        # A turn or two (retry period with jitter), not a lease duration.
        assert time.monotonic() - released < DURATIONS["lease_duration"]
        await b.crash()
        for c in (a, b):
            await c.elector.client.close()

    asyncio.run(scenario())


def test_a_leader_cut_off_from_the_api_stops_before_its_lease_can_expire(emulator: EmulatorServer) -> None:
    stopped_after: list[float] = []

    async def scenario() -> None:
        a = await candidate(emulator, "replica-a")
        a.start()
        await wait_for(a.elector.leading, "replica-a to lead")
        with emulator.outage():
            cut = time.monotonic()
            await wait_for(lambda: not a.elector.leading(), "replica-a to stop leading")
            stopped_after.append(time.monotonic() - cut)
            await wait_for(lambda: bool(a.stopped), "on_stopped")
        # Back in touch: its Lease is still its own, so it renews and leads again.
        await wait_for(a.elector.leading, "replica-a to lead again")
        assert len(a.started) == 2
        await a.crash()
        await a.elector.client.close()

    asyncio.run(scenario())
    # It stopped within the renew deadline of its last renewal: before the lease duration, the
    # earliest another replica could have taken over.
    assert stopped_after[0] <= DURATIONS["renew_deadline"] + 0.25  # + how late a loaded machine polls
    assert stopped_after[0] < DURATIONS["lease_duration"]


def test_the_emulator_refuses_a_lease_write_at_a_stale_version(emulator: EmulatorServer) -> None:
    """The precondition election relies on: a renewal or takeover written at a version that is
    no longer current answers 409, as a real API server does; a second create answers 409 too."""

    async def scenario() -> None:
        client = KubeClient(Timeouts(connect=0.5, request=0.5))
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        try:
            first = await client.write_lease(NAMESPACE, LEASE, {"holderIdentity": "a"}, None)
            assert first is not None
            renewed = {"holderIdentity": "a", "renewTime": "2026-12-03T08:00:00.000000Z"}
            second = await client.write_lease(NAMESPACE, LEASE, renewed, first)
            assert second is not None and second != first
            for stale in (first, None):
                with pytest.raises(KubeApiError) as refused:
                    await client.write_lease(NAMESPACE, LEASE, {"holderIdentity": "b"}, stale)
                assert refused.value.status == 409
        finally:
            await client.close()

    asyncio.run(scenario())
    assert lease_spec(emulator)["holderIdentity"] == "a"
