"""RunLoop and JobRunRuntime with fakes: a fake Kubernetes client and a fake agent channel.

No sockets, no VMs: the fake client records the status patches, annotation removals and
Events; the fake link answers agent requests the way an agent does. Each test drives the
loop round by round (``iterate``) and waits for its background requests, so what it asserts
is the order of fetch -> decide -> persist -> act, not timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from jobnet.core.agentproto import (
    AckRequest,
    AgentRequest,
    JobKey,
    JobRecord,
    LaunchRequest,
    LaunchResult,
    RecordResult,
    TailRequest,
    TailResult,
)
from jobnet.core.deletion import FINALIZER
from jobnet.core.expansion import RunGraph
from jobnet.core.scheduler import SchedulerPolicy
from jobnet.kube.client import KubeApiError
from jobnet.kube.runtime import JobRunRuntime, LinkKey, RunLoop, RuntimeConfig
from tests.support.scheduler_sim import RUN_UID, graph, job

NAMESPACE = "batch"
NAME = "nightly-1"
BODY: Mapping[str, Any] = {
    "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": RUN_UID},
    "spec": {"jobNetRef": "net"},
    "status": {"phase": "Pending"},
}
POLICY = SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20)
#: Every background request of a round ends within a few rounds of awaiting them.
MAX_SETTLE_ROUNDS = 10


class FakeClient:
    """The part of KubeClient a run's loop uses; records every write."""

    def __init__(self) -> None:
        self.patches: list[Mapping[str, Any]] = []
        self.removed: list[tuple[str, ...]] = []
        self.events: list[tuple[str, str]] = []
        self.failing_patches = 0
        self.json_patches: list[list[dict[str, Any]]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if self.failing_patches:
            self.failing_patches -= 1
            raise KubeApiError(f"patch {plural} {namespace}/{name}", 503, "the server is unavailable")
        self.patches.append(status)

    async def remove_annotations(self, plural: str, namespace: str, name: str, keys: tuple[str, ...]) -> None:
        self.removed.append(keys)

    async def json_patch(self, plural: str, namespace: str, name: str, ops: list[dict[str, Any]], what: str) -> None:
        self.json_patches.append(ops)

    async def post_event(self, involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason))

    async def read_jobnet_snapshot(self, namespace: str, stored: Mapping[str, Any]) -> None:
        raise AssertionError("a run started with its graph must not read its snapshot back")

    def job(self, path: str) -> dict[str, Any]:
        """The job's status as the patches so far merged it."""
        merged: dict[str, Any] = {}
        for patch in self.patches:
            merged.update(patch.get("jobs", {}).get(path) or {})
        return merged

    def phase(self) -> str | None:
        phases = [patch["phase"] for patch in self.patches if "phase" in patch]
        return phases[-1] if phases else None


class FakeAgent:
    """Answers like an agent: a launch runs, a tail returns output, an ack acknowledges."""

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.seq = 0
        #: when set, a tail request waits for it (an output tail still on its way)
        self.tail_gate: asyncio.Event | None = None

    def record(self, key: JobKey, state: str, **fields: Any) -> JobRecord:
        self.seq += 1
        return JobRecord.model_validate({"key": key, "seq": self.seq, "state": state, **fields})

    async def request(self, request: AgentRequest, answer_type: type[Any]) -> Any:
        self.requests.append(request)
        if isinstance(request, LaunchRequest):
            return LaunchResult(record=self.record(request.key, "running", pid=4242), deduplicated=False)
        if isinstance(request, TailRequest):
            if self.tail_gate is not None:
                await self.tail_gate.wait()
            return TailResult(data="rows loaded: 12\n", total_bytes=16, dropped_bytes=0)
        if isinstance(request, AckRequest):
            return RecordResult(record=self.record(request.key, "exited", exit_code=0, acknowledged=True))
        raise AssertionError(f"unexpected request {request!r}")

    def sent(self, kind: type[AgentRequest]) -> list[AgentRequest]:
        return [request for request in self.requests if isinstance(request, kind)]


class FakeLink:
    """A VM's agent link as a run's loop sees it, over the fake agent (always heard now)."""

    def __init__(self, key: LinkKey, agent: FakeAgent) -> None:
        self.key = key
        self.agent = agent
        self.launch_window = asyncio.Semaphore(16)
        self.subscribers: dict[str, RunLoop] = {}

    def subscribe(self, loop: RunLoop) -> None:
        self.subscribers[loop.uid] = loop

    def unsubscribe(self, loop: RunLoop) -> None:
        self.subscribers.pop(loop.uid, None)

    def last_heard(self) -> float:
        return time.time()

    async def connect(self) -> FakeAgent:
        return self.agent


class FakeRuntime(JobRunRuntime):
    def __init__(self, client: FakeClient, agent: FakeAgent) -> None:
        super().__init__(RuntimeConfig(api_retry_delay=0.5))
        self._client = client  # type: ignore[assignment]
        self.agent = agent

    def link(self, key: LinkKey) -> Any:
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = FakeLink(key, self.agent)  # type: ignore[assignment]
        return link


def one_job() -> RunGraph:
    return graph("net", net={"jobs": [job("load")]})


def run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(test)


async def settle(loop: RunLoop) -> None:
    """Wait until the loop's background requests (agent requests, tail fetches) have ended."""
    for _ in range(MAX_SETTLE_ROUNDS):
        if not loop.requests:
            return
        await asyncio.gather(*list(loop.requests))
    raise AssertionError(f"requests still running after {MAX_SETTLE_ROUNDS} rounds: {loop.requests}")


def new_loop(client: FakeClient, agent: FakeAgent) -> RunLoop:
    return RunLoop(FakeRuntime(client, agent), BODY, one_job(), POLICY)


async def running_job() -> tuple[FakeClient, FakeAgent, RunLoop]:
    """A run whose one job was launched and confirmed Running (two rounds)."""
    client, agent = FakeClient(), FakeAgent()
    loop = new_loop(client, agent)
    await loop.iterate()
    await settle(loop)
    await loop.iterate()
    return client, agent, loop


def exited(agent: FakeAgent, loop: RunLoop, **fields: Any) -> None:
    """The agent reports that the job's attempt 1 exited 0 with some output."""
    key = JobKey(run=RUN_UID, path="/net/load", attempt=1)
    loop.on_record(agent.record(key, "exited", **{"exit_code": 0, "pid": 4242, "stdout_bytes": 16, **fields}))


def test_a_round_stores_the_launch_before_it_is_sent_then_the_agents_answers_reach_the_status() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        loop = new_loop(client, agent)
        await loop.iterate()
        assert client.job("/net/load")["state"] == "Starting"
        await settle(loop)
        (launch,) = agent.sent(LaunchRequest)
        assert isinstance(launch, LaunchRequest) and launch.key.text() == f"{RUN_UID}:/net/load#1"
        await loop.iterate()  # the delivery's answer: running
        assert client.job("/net/load")["state"] == "Running"
        exited(agent, loop)
        await settle(loop)  # the output tail is fetched
        await loop.iterate()
        job = client.job("/net/load")
        assert (job["state"], job.get("exitCode"), job.get("outputTail")) == ("Succeeded", 0, "rows loaded: 12\n")
        assert client.phase() == "Succeeded"
        await settle(loop)
        assert [request.key.text() for request in agent.sent(AckRequest)] == [f"{RUN_UID}:/net/load#1"]
        assert await loop.iterate() is None  # finished, nothing in flight: the loop ends

    run(scenario())


def test_a_finished_runs_last_write_waits_for_the_output_tail_and_its_ack_follows_it() -> None:
    async def scenario() -> None:
        client, agent, loop = await running_job()
        agent.tail_gate = asyncio.Event()
        exited(agent, loop)
        writes = len(client.patches)
        assert await loop.iterate() == float("inf")  # held: the tail is on its way
        assert len(client.patches) == writes and client.phase() == "Running"
        assert agent.sent(AckRequest) == []
        agent.tail_gate.set()
        await settle(loop)
        await loop.iterate()
        assert len(client.patches) == writes + 1  # one write: Succeeded with its output tail
        assert client.job("/net/load")["outputTail"] == "rows loaded: 12\n" and client.phase() == "Succeeded"
        await settle(loop)
        assert len(agent.sent(AckRequest)) == 1

    run(scenario())


def test_an_ended_record_is_acknowledged_once_however_often_the_scheduler_asks() -> None:
    async def scenario() -> None:
        client, agent, loop = await running_job()
        exited(agent, loop, stdout_bytes=0)  # no output: nothing to wait for
        for _ in range(3):
            loop.wake()
            await loop.iterate()
            await settle(loop)
        assert len(agent.sent(AckRequest)) == 1

    run(scenario())


def test_nothing_is_acted_on_before_its_decision_is_stored() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        client.failing_patches = 1
        loop = new_loop(client, agent)
        wakeup = await loop.iterate()
        assert wakeup is not None and wakeup != float("inf")  # come back after the retry delay
        await settle(loop)
        assert agent.requests == [] and client.patches == []
        await loop.iterate()  # the API is back: stored, then launched
        await settle(loop)
        assert client.job("/net/load")["state"] == "Starting" and len(agent.sent(LaunchRequest)) == 1

    run(scenario())


def test_a_new_run_starts_from_its_graph_without_reading_its_snapshot_back() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        runtime = FakeRuntime(client, agent)
        assert await runtime._try_start(BODY, one_job())
        assert client.json_patches == [[{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]]
        loop = runtime.loops[RUN_UID]
        assert loop.task is not None
        loop.task.cancel()
        await asyncio.gather(loop.task, return_exceptions=True)
        await settle(loop)

    run(scenario())
