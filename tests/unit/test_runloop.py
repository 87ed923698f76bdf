"""RunLoop and JobRunRuntime with fakes: a fake Kubernetes client and a fake agent channel.

No sockets, no VMs: the fake client keeps the JobRun as an API server does (a resourceVersion
bumped by every write, 409 on a stale one, JSON patch ``test``) and records the status patches,
annotation removals and Events; the fake link answers agent requests the way an agent does. Each test drives the
loop round by round (``iterate``) and waits for its background requests, so what it asserts
is the order of fetch -> decide -> persist -> act, not timing.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import pytest

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
from jobnet.devenv.emulator.kube import json_patch, merge_patch
from jobnet.kube import runtime as runtime_module
from jobnet.kube.client import KubeApiError
from jobnet.kube.leadership import LeaderGate, NotLeading
from jobnet.kube.runtime import JobRunRuntime, LinkKey, RunLoop, RuntimeConfig
from jobnet.kube.versioned import FinishedRuns, StatusChanged
from tests.support.scheduler_sim import RUN_UID, graph, job

OVERRIDE, OVERRIDE_ID, STOP = "jobnet.dev/override", "jobnet.dev/override-id", "jobnet.dev/stop"
NAMESPACE = "batch"
NAME = "nightly-1"
BODY: Mapping[str, Any] = {
    "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": RUN_UID, "resourceVersion": "1"},
    "spec": {"jobNetRef": "net"},
    "status": {"phase": "Pending"},
}
POLICY = SchedulerPolicy(heartbeat_deadline_seconds=30, dispatch_timeout_seconds=20)
#: Every background request of a round ends within a few rounds of awaiting them.
MAX_SETTLE_ROUNDS = 10


class FakeClient:
    """The part of KubeClient a run's loop uses, over one stored JobRun; records every write."""

    def __init__(self, body: Mapping[str, Any] = BODY) -> None:
        self.stored: dict[str, Any] = copy.deepcopy(dict(body))
        self.patches: list[Mapping[str, Any]] = []
        self.removed: list[list[dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []
        self.event_names: set[str | None] = set()
        #: when set, Event posts wait for it (an API server that does not answer them yet)
        self.events_held: asyncio.Event | None = None
        self.failing_patches = 0
        self.failing_removals = 0
        #: the finalizer patches (added when a loop starts, removed when a deleted run is released)
        self.finalizer_patches: list[list[dict[str, Any]]] = []

    def write(self, change: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``change`` into the stored JobRun as a new version (a person's or our write)."""
        self.stored = merge_patch(self.stored, change)
        meta = self.stored["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.stored)

    def annotate(self, **annotations: str | None) -> dict[str, Any]:
        return self.write({"metadata": {"annotations": annotations}})

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
        answer: bool = False,
    ) -> dict[str, Any]:
        if self.failing_patches:
            self.failing_patches -= 1
            raise KubeApiError(f"patch {plural} {namespace}/{name}", 503, "the server is unavailable")
        if resource_version is not None and resource_version != self.stored["metadata"]["resourceVersion"]:
            raise KubeApiError(f"patch {plural} {namespace}/{name}", 409, "the object has been modified")
        self.patches.append(status)
        stored = self.write({"status": status})
        return stored if answer else {}

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.stored)

    async def json_patch(
        self, plural: str, namespace: str, name: str, operations: list[dict[str, Any]], what: str
    ) -> dict[str, Any]:
        if any(op["path"].startswith("/metadata/finalizers") for op in operations):
            self.finalizer_patches.append(operations)
            self.stored = json_patch(self.stored, operations)
            return self.write({})
        if self.failing_removals:
            self.failing_removals -= 1
            raise KubeApiError(what, 503, "the server is unavailable")
        annotations = dict(self.stored["metadata"].get("annotations") or {})
        for op in operations:
            key = op["path"].removeprefix("/metadata/annotations/").replace("~1", "/")
            if op["op"] == "test" and annotations.get(key) != op["value"]:
                raise KubeApiError(what, 422, f"testing value {op['path']} failed")
            if op["op"] == "remove":
                annotations.pop(key)
        self.removed.append(operations)
        self.stored["metadata"]["annotations"] = annotations
        return self.write({})

    async def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        at: str | None = None,
    ) -> bool:
        """Stored once per name, as an API server does (a second post of a name is a 409)."""
        if self.events_held is not None:
            await self.events_held.wait()
        if name in self.event_names:
            return False
        self.event_names.add(name)
        self.events.append((event_type, reason))
        return True

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

    async def close(self) -> None:
        self.subscribers.clear()


class FakeRuntime(JobRunRuntime):
    def __init__(self, client: FakeClient, agent: FakeAgent, observation_write_delay: float = 1.0) -> None:
        super().__init__(RuntimeConfig(api_retry_delay=0.5, observation_write_delay=observation_write_delay))
        self._client = client  # type: ignore[assignment]
        self.agent = agent
        self.active = True  # the leader (or the only replica)

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
    """Wait until the loop's background requests (agent requests, tail fetches) have ended and
    its Events are posted."""
    for _ in range(MAX_SETTLE_ROUNDS):
        if not loop.requests:
            await loop.runtime.events.idle()
            return
        await asyncio.gather(*list(loop.requests))
    raise AssertionError(f"requests still running after {MAX_SETTLE_ROUNDS} rounds: {loop.requests}")


def new_loop(client: FakeClient, agent: FakeAgent, observation_write_delay: float = 1.0) -> RunLoop:
    return RunLoop(FakeRuntime(client, agent, observation_write_delay), BODY, one_job(), POLICY)


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
        writes = len(client.patches)
        # The delivery's answer: running. Only an observation of the stored launch: its write
        # waits for the next decision (at most observation_write_delay).
        before = time.time()
        wake = await loop.iterate()
        assert loop.state.jobs["/net/load"].state == "Running" and len(client.patches) == writes
        assert client.job("/net/load")["state"] == "Starting"
        assert wake is not None and before + 1.0 <= wake <= time.time() + 1.0
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


def test_an_observation_is_written_when_its_delay_is_up_or_at_once_with_no_delay() -> None:
    async def scenario(delay: float) -> None:
        client, agent = FakeClient(), FakeAgent()
        loop = new_loop(client, agent, observation_write_delay=delay)
        await loop.iterate()
        await settle(loop)
        wake = await loop.iterate()  # the delivery's answer: running
        if delay:
            assert client.job("/net/load")["state"] == "Starting" and wake is not None
            await asyncio.sleep(max(0.0, wake - time.time()))
            await loop.iterate()
        assert client.job("/net/load")["state"] == "Running"

    run(scenario(0.0))
    run(scenario(0.05))


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


@pytest.mark.parametrize("refusal", ["unavailable", "conflict"])
def test_nothing_is_acted_on_before_its_decision_is_stored(refusal: str) -> None:
    """The API refuses the status write: unavailable (decide again after the retry delay), or a
    conflict, someone else's write since the loop's version (read the run again, decide again at once)."""

    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        loop = new_loop(client, agent)
        if refusal == "unavailable":
            client.failing_patches = 1
        else:
            client.annotate(team="etl")
        wakeup = await loop.iterate()
        await settle(loop)
        assert wakeup is not None and (wakeup > time.time()) == (refusal == "unavailable")
        assert agent.requests == [] and client.patches == []
        assert loop.versioned.resource_version == client.stored["metadata"]["resourceVersion"]  # (read again)
        await loop.iterate()  # stored, then launched
        await settle(loop)
        assert client.job("/net/load")["state"] == "Starting" and len(agent.sent(LaunchRequest)) == 1

    run(scenario())


def test_a_new_run_starts_from_its_graph_without_reading_its_snapshot_back() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        runtime = FakeRuntime(client, agent)
        assert await runtime._try_start(BODY, one_job())
        # The finalizer first; the loop decides from the version that wrote it (no conflict).
        assert client.finalizer_patches == [[{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]]
        loop = runtime.loops[RUN_UID]
        assert loop.versioned.resource_version == client.stored["metadata"]["resourceVersion"]
        assert loop.task is not None
        loop.task.cancel()
        await asyncio.gather(loop.task, return_exceptions=True)
        await settle(loop)

    run(scenario())


def test_a_replica_that_is_not_the_leader_sends_no_request_to_the_agent() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        loop = new_loop(client, agent)
        leading = [True]
        loop.runtime.gate = LeaderGate("replica-a", lambda: leading[0])
        await loop.iterate()  # the launch is stored, then sent in the background ...
        leading[0] = False  # ... after the term ended (a replica resumed from SIGSTOP)
        (refused,) = await asyncio.gather(*loop.requests, return_exceptions=True)
        assert isinstance(refused, NotLeading)
        assert agent.requests == []
        assert loop.inbox.deliveries == []  # nothing reported: the next leader fences the attempt

    run(scenario())


def test_a_follower_starts_no_loop_and_losing_the_lead_stops_every_loop() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        runtime = FakeRuntime(client, agent)
        runtime.active = False
        await runtime.on_jobrun("ADDED", BODY)
        assert runtime.loops == {}
        await runtime.lead()
        assert await runtime._try_start(BODY, one_job())
        loop = runtime.loops[RUN_UID]
        await runtime.follow()
        assert runtime.loops == {} and not runtime.active
        assert loop.task is not None
        await asyncio.gather(loop.task, return_exceptions=True)
        assert loop.task.cancelled()

    run(scenario())


def test_a_status_changed_under_the_loop_ends_it_without_acting() -> None:
    async def scenario() -> None:
        client, agent = FakeClient(), FakeAgent()
        loop = new_loop(client, agent)
        client.write({"status": {"phase": "Stopped"}})  # another writer's status
        with pytest.raises(StatusChanged):
            await loop.iterate()
        await settle(loop)
        assert agent.requests == [] and client.patches == []

    run(scenario())


async def failed_run() -> tuple[FakeClient, FakeAgent, RunLoop]:
    """A run whose one job exited 3: Failed, ready for an override."""
    client, agent, loop = await running_job()
    exited(agent, loop, exit_code=3, stdout_bytes=0)
    await loop.iterate()
    await settle(loop)
    assert client.phase() == "Failed"
    return client, agent, loop


def test_a_loop_decides_on_while_its_events_wait_for_the_api_server() -> None:
    async def scenario() -> None:
        client, agent, loop = await running_job()
        client.events_held = asyncio.Event()
        exited(agent, loop, exit_code=3, stdout_bytes=0)
        await loop.iterate()  # returns: the run is Failed, its JobFailed and RunFailed not yet posted
        assert client.phase() == "Failed" and client.events == []
        client.events_held.set()
        await settle(loop)
        assert [reason for _, reason in client.events] == ["JobFailed", "RunFailed"]

    run(scenario())


def test_an_operator_that_died_before_posting_the_events_of_its_last_write_posts_them_once() -> None:
    async def scenario() -> None:
        before, _, _ = await failed_run()
        assert [reason for _, reason in before.events] == ["JobFailed", "RunFailed"]
        client = FakeClient(before.stored)  # the same status; its Events never posted
        for _ in range(2):  # an operator restart, then another
            runtime = FakeRuntime(client, FakeAgent())
            await runtime.on_jobrun(None, client.stored)  # listed at the start: finished, no loop
            await runtime.events.idle()
        assert [reason for _, reason in client.events] == ["JobFailed", "RunFailed"]
        assert len(client.event_names) == 2

    run(scenario())


def test_an_applied_override_whose_removal_failed_is_only_removed_by_the_next_loop() -> None:
    async def scenario() -> None:
        client, agent, loop = await failed_run()
        loop.observe(client.annotate(**{OVERRIDE: "/net/load=Ready", OVERRIDE_ID: "o1"}))
        client.failing_removals = 1
        wakeup = await loop.iterate()
        await settle(loop)
        assert wakeup is not None and wakeup > time.time()  # the removal is tried again later
        assert client.stored["status"]["appliedSteering"] == {"override": "o1"}
        assert [launch.key.attempt for launch in agent.sent(LaunchRequest)] == [1, 2]
        assert OVERRIDE in client.stored["metadata"]["annotations"]

        restarted = RunLoop(loop.runtime, client.stored, one_job(), POLICY)  # an operator restart
        await restarted.iterate()
        await settle(restarted)
        assert {launch.key.attempt for launch in agent.sent(LaunchRequest)} == {1, 2}  # no attempt 3
        assert client.job("/net/load")["attempt"] == 2
        assert not set(client.stored["metadata"]["annotations"]) & {OVERRIDE, OVERRIDE_ID}
        assert [reason for _, reason in client.events].count("Overridden") == 1

    run(scenario())


def test_a_finished_run_ignores_late_events_and_starts_again_for_a_new_request() -> None:
    async def scenario() -> None:
        client, agent, loop = await failed_run()
        loop.observe(client.annotate(**{OVERRIDE: "/net/load=Succeeded", OVERRIDE_ID: "o1"}))
        await loop.iterate()
        await settle(loop)
        assert client.phase() == "Succeeded"
        finished = FinishedRuns()
        finished.add(RUN_UID, loop.versioned)
        late = {**BODY, "metadata": {**BODY["metadata"], "resourceVersion": "3"}, "status": {"phase": "Running"}}
        assert finished.stale(RUN_UID, late)
        late_with_applied = {
            **late,
            "metadata": {**late["metadata"], "annotations": {OVERRIDE: "/net/load=Succeeded", OVERRIDE_ID: "o1"}},
        }
        assert finished.stale(RUN_UID, late_with_applied)
        newer = {**client.stored, "metadata": {**client.stored["metadata"], "annotations": {STOP: "/"}}}
        assert not finished.stale(RUN_UID, newer)  # a new request: the run gets a loop again
        assert not finished.stale(RUN_UID, late)  # forgotten once started again

    run(scenario())


def test_the_agent_zipapp_is_made_at_start_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    zipapp = tmp_path / "jobnet-agent.pyz"
    zipapp.write_bytes(b"PK agent")
    made_in: list[threading.Thread] = []

    def made(cache_dir: Path | None = None) -> tuple[Path, str]:
        made_in.append(threading.current_thread())
        return zipapp, "0.0.1"

    monkeypatch.setattr(runtime_module, "default_zipapp", made)
    runtime = JobRunRuntime()
    run(runtime.prepare_installer())
    assert made_in and made_in[0] is not threading.main_thread()  # never on the event loop
    assert runtime.installer().zipapp == zipapp
    assert len(made_in) == 1  # the first channel's opening finds it made


def test_an_agent_zipapp_not_made_at_start_is_made_at_the_first_opening(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zipapp = tmp_path / "jobnet-agent.pyz"
    monkeypatch.setenv("JOBNET_AGENT_ZIPAPP", str(zipapp))
    runtime = JobRunRuntime()
    run(runtime.prepare_installer())  # the file is not there yet: the operator starts anyway
    assert "cannot make the agent zipapp yet" in caplog.text
    zipapp.write_bytes(b"PK agent")
    assert runtime.installer().zipapp == zipapp
