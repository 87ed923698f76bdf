"""The JobRun runtime: fetch facts, call the pure scheduler, act (persist, then SSH, then Events).

One :class:`RunLoop` per active JobRun (an asyncio task) wakes on agent events for its run,
on changes of its annotations and at the scheduler's deadlines, and per iteration::

    decision = reconcile(graph, runtime, facts, policy, now, annotations=<requests not yet applied>)
    patch the status (one merge patch at the known resourceVersion, only when something changed,
                      recording the steering requests applied)            # first
    remove the applied steering annotations (JSON patch, only while unchanged)
    Launch/Kill/Ack through the host's agent (idempotent by JobKey), post Events, log

A conflict (the run changed since the version decided from) means read it again and decide
again; see kube/versioned.py and core/steering.py.

The attempt of a launch is in the status before the launch request leaves, so a launch that
kopf or a restart repeats carries the same key and the agent deduplicates it.

:class:`HostLink` is one VM's agent shared by every run that uses it (per namespace, address,
port, user and credentials Secret): it keeps the agent channel open (reconnecting with backoff,
dropping a channel whose heartbeats stopped), caches the latest journal record per job key and
routes events to the run they belong to. After an operator restart the links watch the journals
from the start, so whatever finished meanwhile is collected.

Runs are (re)started from kopf's watch events: a run that is Pending/Running/Stuck, or one that
carries a stop/override annotation, gets a loop; its runtime is rebuilt from its status. A run
whose loop finished here starts again only for a steering request it has not applied: a late
event of an older version (still Running) is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from jobnet.core.agentproto import (
    AckRequest,
    AgentRequest,
    FenceRequest,
    FenceResult,
    JobKey,
    JobRecord,
    KillRequest,
    KillResult,
    LaunchRequest,
    LaunchResult,
    OutputStream,
    RecordResult,
    TailRequest,
    TailResult,
)
from jobnet.core.conditions import Condition, keep_transition_times, with_jobrun_conditions
from jobnet.core.deletion import DELETION_BLOCKED, blocked_condition, is_deleting
from jobnet.core.env import job_environment, run_environment
from jobnet.core.events import event_identity, event_name, implied_events
from jobnet.core.expansion import ExpansionError, RunGraph, expand
from jobnet.core.hosts import host_id
from jobnet.core.models import GROUP_VERSION, HostSpec
from jobnet.core.runstatus import (
    StatusEncoder,
    decoded_status,
    from_rfc3339,
    runtime_from_status,
    status_patch,
    to_rfc3339,
)
from jobnet.core.scheduler import (
    Ack,
    Action,
    DeliveryResult,
    DispatchOp,
    Event,
    Fence,
    Kill,
    Launch,
    RunRuntime,
    SchedulerPolicy,
    new_runtime,
    reconcile,
)
from jobnet.core.scheduler.deferral import WriteDeferral
from jobnet.core.scheduler.inbox import AgentInbox
from jobnet.core.snapshot import SnapshotError
from jobnet.core.states import TERMINAL_STATES, JobState, RunPhase
from jobnet.core.status import OUTPUT_TAIL_MAX_CHARS, JobRunStatus
from jobnet.core.steering import STEERING_KINDS, applied_status, plan_steering
from jobnet.kube.agentlost import report_lost_keys
from jobnet.kube.client import HTTP_CONFLICT, HTTP_NOT_FOUND, HTTP_UNPROCESSABLE, KubeApiError, KubeClient
from jobnet.kube.deletion import RunDeletions
from jobnet.kube.events import EventPoster, EventSettings
from jobnet.kube.leadership import ALWAYS_LEADING, LeaderGate, NotLeading
from jobnet.kube.runmetrics import report_round
from jobnet.kube.versioned import FinishedRuns, StatusChanged, VersionedRun
from jobnet.metrics import operator_metrics
from jobnet.ssh import (
    AgentInstaller,
    AgentRequestFailed,
    AgentSettings,
    HostAgent,
    HostConnectionPool,
    SshCredentials,
    SshError,
    SshSettings,
    SshTarget,
    default_zipapp,
)
from jobnet.ssh.errors import AuthenticationFailed, HostKeyMismatch, HostUnreachable

logger = logging.getLogger("jobnet.runtime")

#: Conflicts in a row after which a loop waits ``api_retry_delay`` before reading its run again.
MAX_QUICK_CONFLICTS = 3
_FINISHED = (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)
#: the answer type of an agent request
AnswerT = TypeVar("AnswerT", LaunchResult, KillResult, FenceResult)
_UNDELIVERED = {cls: cls.code for cls in (HostUnreachable, AuthenticationFailed, HostKeyMismatch)}


@dataclass(frozen=True)
class RuntimeConfig:
    """Every deadline of the runtime (seconds); ``jobnet operator`` options set them."""

    heartbeat_deadline: float = 30.0
    dispatch_timeout: float = 30.0
    kill_grace: float = 10.0
    agent_request_timeout: float = 10.0
    #: extra ``jobnet-agent serve`` arguments, e.g. ("--heartbeat-seconds", "1")
    agent_serve_args: tuple[str, ...] = ()
    ssh: SshSettings = field(default_factory=SshSettings)
    #: how long to wait before trying again after the API server refused a status patch
    api_retry_delay: float = 2.0
    #: launch requests in flight to one host at once; the others wait in the operator, their
    #: request timeout not yet started (a 1,000-job fan-out must not queue past the timeout)
    max_inflight_launches_per_host: int = 16
    #: how long a launch that never left (host unreachable) is retried (SchedulerPolicy)
    launch_retry_window: float = 60.0
    #: how long a host's agent channel stays open after its last run ended: the next run's first
    #: launch then needs no SSH connection, no agent start and no supervising process start
    agent_idle_timeout: float = 300.0
    #: how long a round that only observed a stored launch (accepted, started) may wait to be
    #: written with a later round (core/scheduler/deferral.py); 0: written at once
    observation_write_delay: float = 1.0
    #: how Events are retried, and which are posted again after a restart (kube/events.py)
    events: EventSettings = field(default_factory=EventSettings)

    @property
    def secret_read_deadline(self) -> float:
        """How long a transient failure to read a credentials Secret is retried before the
        request counts as not delivered: well inside the scheduler's dispatch timeout."""
        return self.dispatch_timeout / 2

    def policy(self) -> SchedulerPolicy:
        return SchedulerPolicy(
            heartbeat_deadline_seconds=self.heartbeat_deadline,
            dispatch_timeout_seconds=self.dispatch_timeout,
            kill_grace_seconds=self.kill_grace,
            launch_retry_window_seconds=self.launch_retry_window,
            launch_retry_backoff_min_seconds=self.ssh.reconnect_backoff_min,
            launch_retry_backoff_max_seconds=self.ssh.reconnect_backoff_max,
        )


@dataclass(frozen=True)
class LinkKey:
    namespace: str
    address: str
    port: int
    user: str
    secret: str

    @classmethod
    def of(cls, namespace: str, host: HostSpec) -> LinkKey:
        return cls(namespace, host.address, host.port, host.user, host.credentials_secret)

    @property
    def host_id(self) -> str:
        return host_id(self)


class CredentialsUnavailable(AuthenticationFailed):
    """The credentials Secret is missing or unusable: nothing was sent to the VM."""


class CredentialsUnreadable(HostUnreachable):
    """The API server did not answer the read of the credentials Secret in time: nothing was
    sent to the VM, and a later try may succeed (not a credentials problem)."""


def _secret_read_is_transient(error: KubeApiError) -> bool:
    """Unreachable, timed out, throttled or a server error: worth retrying. Anything else
    (404 missing, 403 forbidden) is an answer about the Secret itself."""
    return error.status is None or error.status in (408, 429) or error.status >= 500


class HostLink:
    """One VM's agent, shared by the runs that use it (see the module docstring)."""

    def __init__(self, key: LinkKey, runtime: JobRunRuntime) -> None:
        self.key = key
        self.runtime = runtime
        self.target = SshTarget(key.address, key.port, key.user)
        # A pool of its own: a connection made with one Secret (one namespace) must never carry
        # the jobs of another Secret to the same VM user.
        self.pool = HostConnectionPool(runtime.config.ssh)
        self.agent: HostAgent | None = None
        self.subscribers: dict[str, RunLoop] = {}
        #: latest journal record per key text; dropped once the agent confirms our ack
        self.records: dict[str, JobRecord] = {}
        self._heard_at: float | None = None
        self._keeper: asyncio.Task[None] | None = None
        # One connection attempt (so one Secret read) at a time, however many launches wait.
        self._connect_lock = asyncio.Lock()
        self.launch_window = asyncio.Semaphore(runtime.config.max_inflight_launches_per_host)
        #: the agent's hello of the channel whose runs' keys were checked (see agentlost.py)
        self._checked: object = None
        self._checking: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- subscriptions

    def subscribe(self, loop: RunLoop) -> None:
        self.subscribers[loop.uid] = loop
        for record in self.records.values():
            if record.key.run == loop.uid:
                loop.on_record(record)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_connected(), name=f"agent link {self.key.host_id}")

    def unsubscribe(self, loop: RunLoop) -> None:
        self.subscribers.pop(loop.uid, None)

    def last_heard(self) -> float | None:
        """When the agent last proved our records current, on the operator's clock: its last
        heartbeat whose journal seq we have caught up with. An event alone proves nothing about
        the other jobs: right after a reconnect the resumed watch replays old entries (a job's
        ``running`` while its ``exited`` is still on the way). Kept across a lost connection, so
        the heartbeat deadline counts from it rather than from the job's start."""
        self.note_heartbeat()
        return self._heard_at

    def note_heartbeat(self) -> None:
        age = self.agent.synced_heartbeat_age() if self.agent is not None else None
        if age is not None:
            self._heard_at = time.time() - age

    # -------------------------------------------------------------- connecting

    async def connect(self) -> HostAgent:
        """The connected agent (credentials read from the Secret on every new connection)."""
        if self.agent is not None and self.agent.connected:
            return self.agent
        async with self._connect_lock:
            return await self._connect_locked()

    async def _connect_locked(self) -> HostAgent:
        if self.agent is not None and self.agent.connected:
            return self.agent
        credentials = await self._credentials()
        if self.agent is None:
            self.agent = HostAgent(
                self.pool,
                self.runtime.installer(),
                self.target,
                credentials,
                on_event=self._on_event,
                settings=AgentSettings(
                    request_timeout=self.runtime.config.agent_request_timeout,
                    open_timeout=self.runtime.config.agent_request_timeout,
                    serve_args=self.runtime.config.agent_serve_args,
                ),
            )
        else:
            self.agent.credentials = credentials
        await self.agent.connect()
        return self.agent

    async def _credentials(self) -> SshCredentials:
        """The Secret's credentials; a transient API failure is retried with backoff up to
        :attr:`RuntimeConfig.secret_read_deadline` (then :class:`CredentialsUnreadable`)."""
        config = self.runtime.config
        secret = f"{self.key.namespace}/{self.key.secret}"
        give_up_at = time.monotonic() + config.secret_read_deadline
        backoff = config.ssh.reconnect_backoff_min
        while True:
            try:
                data = await self.runtime.client.get_secret_data(self.key.namespace, self.key.secret)
                break
            except KubeApiError as e:
                if not _secret_read_is_transient(e):
                    raise CredentialsUnavailable(
                        f"cannot read the credentials Secret {secret} for {self.target}: {e}"
                    ) from None
                left = give_up_at - time.monotonic()
                if left <= 0:
                    raise CredentialsUnreadable(
                        f"cannot read the credentials Secret {secret} for {self.target} "
                        f"(retried for {config.secret_read_deadline:g}s): {e}"
                    ) from None
                delay = min(backoff, left)
                logger.warning(
                    "host=%s cannot read credentials Secret %s: %s; retrying in %.1fs",
                    self.key.host_id,
                    secret,
                    e,
                    delay,
                )
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, config.ssh.reconnect_backoff_max)
        try:
            return SshCredentials.from_secret_data(data)
        except ValueError as e:
            raise CredentialsUnavailable(f"credentials Secret {secret} is not usable: {e}") from None

    async def _keep_connected(self) -> None:
        """While runs use this host: keep the channel (and so events and heartbeats) flowing.
        Once no run uses it, the open channel is kept (heartbeats still checked) for
        :attr:`RuntimeConfig.agent_idle_timeout`, never reopened; then it is closed."""
        config = self.runtime.config
        backoff = config.ssh.reconnect_backoff_min
        probe = min(1.0, config.heartbeat_deadline / 3)
        idle_until: float | None = None
        while True:
            if self.subscribers:
                idle_until = None
            else:
                idle_until = idle_until or time.monotonic() + config.agent_idle_timeout
                if time.monotonic() >= idle_until or self.agent is None or not self.agent.connected:
                    if self.agent is not None:
                        await self.agent.close()
                    if not self.subscribers:  # nobody subscribed while the channel was closing
                        return
            try:
                agent = await self.connect()
            except SshError as e:
                logger.warning(
                    "host=%s agent unreachable: %s (next try in %.1fs)", self.key.host_id, e.message, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, config.ssh.reconnect_backoff_max)
                continue
            if backoff != config.ssh.reconnect_backoff_min:
                logger.info("host=%s agent reachable again", self.key.host_id)
                self._wake_all()
            backoff = config.ssh.reconnect_backoff_min
            if agent.hello is not self._checked:  # a new channel: does the agent still know our jobs?
                self._checked = agent.hello
                self._checking = asyncio.create_task(report_lost_keys(self, agent))
            self.note_heartbeat()  # at every probe: the channel may die before the runs look again
            age = agent.heartbeat_age()
            if age is not None and age > config.heartbeat_deadline:
                logger.warning(
                    "host=%s no heartbeat for %.1fs: dropping the connection to reconnect", self.key.host_id, age
                )
                agent.drop_connection()
                self._wake_all()
                continue
            await asyncio.sleep(probe if idle_until is None else max(0.0, min(probe, idle_until - time.monotonic())))

    def _wake_all(self) -> None:
        for loop in list(self.subscribers.values()):
            loop.wake()

    def _on_event(self, record: JobRecord) -> None:
        text = record.key.text()
        if record.acknowledged and record.terminal:
            self.records.pop(text, None)
        else:
            self.records[text] = record
        loop = self.subscribers.get(record.key.run)
        if loop is not None:
            loop.on_record(record)

    async def close(self) -> None:
        self.subscribers.clear()
        for task in (self._keeper, self._checking):
            if task is not None:
                task.cancel()
        if self.agent is not None:
            await self.agent.close()
        self.pool.close()


class RunLoop:
    """The runtime of one JobRun (see the module docstring)."""

    def __init__(
        self,
        runtime: JobRunRuntime,
        body: Mapping[str, Any],
        graph: RunGraph,
        policy: SchedulerPolicy,
        first_status: Mapping[str, Any] | None = None,
    ) -> None:
        meta = body.get("metadata", {})
        self.runtime = runtime
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace") or "default"
        self.uid: str = meta["uid"]
        #: what the run's conditions describe (its creation and generation)
        self.metadata = {key: meta.get(key) for key in ("creationTimestamp", "generation")}
        self.graph = graph
        self.policy = policy
        self.run_env: dict[str, str] = run_environment(body.get("spec"))
        self.involved = {
            "apiVersion": GROUP_VERSION,
            "kind": "JobRun",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }
        stored_status = body.get("status") or {}
        #: keeps the status compact (large runs: compressed chunks; see docs/scale.md)
        self.status_encoder = StatusEncoder(graph.nodes, stored_status)
        status = decoded_status(stored_status)
        self.state: RunRuntime = (
            runtime_from_status(self.uid, graph, JobRunStatus.model_validate(status))
            if status.get("jobs")
            else new_runtime(self.uid)
        )
        self.jobnet_states: dict[str, JobState] = {
            path: JobState(entry["state"])
            for path, entry in (status.get("jobs") or {}).items()
            if graph.nodes.get(path) is not None and graph.nodes[path].kind == "jobnet"
        }
        #: the version of the JobRun the loop decides from and writes at (kube/versioned.py)
        self.versioned = VersionedRun.of(runtime.client, body)
        #: rounds that only observed a stored launch are written later (core/scheduler/deferral.py)
        self.deferral = WriteDeferral(runtime.config.observation_write_delay, self.state, dict(self.jobnet_states))
        self.conflicts = 0
        #: what the agents said since the last round (the scheduler's facts)
        self.inbox = AgentInbox(watching_since=time.time())
        #: output tails of finished jobs (key text -> (path, attempt, tail)) not yet in the status;
        #: the scheduler decides on a final record at once (the downstream job does not wait for
        #: an output tail), the tail follows in a later patch
        self.tails: dict[str, tuple[str, int, str]] = {}
        self.links: dict[LinkKey, HostLink] = {}
        self.requests: set[asyncio.Task[None]] = set()
        self.last_summary: dict[str, Any] | None = None
        #: what the loop's first write carries besides its decision (a new run's jobNetSnapshot)
        self.first_status = dict(first_status or {})
        #: deleted (and held by our finalizer): the whole run is stopped, then released
        self.deleting = is_deleting(meta)
        #: the DeletionBlocked condition last written (None: nothing blocks the deletion)
        self.blocked: Condition | None = None
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # The operator before may have died between a status write and its Events.
        runtime.restore_events(self.involved, status)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    # -------------------------------------------------------------- inputs

    def wake(self) -> None:
        self._wake.set()

    def observe(self, body: Mapping[str, Any]) -> None:
        """A watch event of the run (see :meth:`VersionedRun.observe`)."""
        if self.versioned.observe(body):
            self.wake()

    def request_deletion(self) -> None:
        if not self.deleting:
            self.deleting = True
            self.wake()

    def on_absent(self, keys: list[JobKey]) -> None:
        self.inbox.add_absent(keys)
        self.wake()

    def on_record(self, record: JobRecord) -> None:
        news = self.inbox.add_record(record)
        if news == "fetchTail":
            self.fetch_tail(record)
        if news != "stale":
            self.wake()

    def fetch_tail(self, record: JobRecord) -> None:
        node = self.graph.nodes.get(record.key.path)
        if node is None or node.host is None:
            return
        self.inbox.tails_fetching.add(record.key.text())
        self.track(self._fetch_tail(self.link(node.host), record))

    async def _fetch_tail(self, link: HostLink, record: JobRecord) -> None:
        """The last lines of stdout and stderr (half the budget each when both have output)."""
        text = record.key.text()
        sizes: tuple[tuple[OutputStream, int], ...] = (("stdout", record.stdout_bytes), ("stderr", record.stderr_bytes))
        streams = [stream for stream, size in sizes if size]
        budget = OUTPUT_TAIL_MAX_CHARS // len(streams) - 16
        parts = []
        try:
            agent = await link.connect()
            for stream in streams:
                self.runtime.gate.check(f"tail {text}")
                result = await agent.request(TailRequest(key=record.key, stream=stream, max_bytes=budget), TailResult)
                data = result.data[-budget:]
                parts.append(data if len(streams) == 1 else f"[{stream}]\n{data}")
        except SshError as e:
            self.job_log(logging.DEBUG, record.key.path, "no output tail: %s", e.message)
        finally:
            self.inbox.tails_fetching.discard(text)
        if parts:
            self.tails[text] = (record.key.path, record.key.attempt, "\n".join(parts)[-OUTPUT_TAIL_MAX_CHARS:])

    # -------------------------------------------------------------- the loop

    def start(self) -> None:
        # Every host a job of the run may still need: its channel (and the agent's supervising process)
        # opens now, while the run's first status write is on its way, not at the first launch.
        for node in self.graph.jobs():
            entry = self.state.jobs.get(node.path)
            if node.host is not None and (entry is None or entry.state not in TERMINAL_STATES):
                self.link(node.host)
        self.task = asyncio.create_task(self.run(), name=f"jobrun {self.label}")

    def link_key(self, host: HostSpec) -> LinkKey:
        return LinkKey.of(self.namespace, host)

    def link(self, host: HostSpec) -> HostLink:
        key = self.link_key(host)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = self.runtime.link(key)
            link.subscribe(self)
        return link

    async def run(self) -> None:
        logger.info("run=%s runtime started (phase %s)", self.label, self.state.phase)
        try:
            while True:
                # Cleared before the round reads its inputs: news arriving during the round's
                # awaits (a record during the status patch) make the next wait return at once.
                self._wake.clear()
                next_wakeup = await self.iterate()
                if next_wakeup is None:
                    if self._wake.is_set():
                        continue  # finished, but something arrived meanwhile (an annotation)
                    break
                timeout = None if next_wakeup == float("inf") else max(0.0, next_wakeup - time.time())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            logger.info("run=%s runtime finished (phase %s)", self.label, self.state.phase)
            self.runtime.finished.add(self.uid, self.versioned)
            if self.deleting:
                message = f"the run's jobs ended ({self.state.phase}) and their records were acknowledged"
                self.runtime.deletions.release(self.involved, "Normal", "Deleted", message)
        except StatusChanged as changed:
            logger.warning(
                "run=%s the stored status (version %s) is not the one this loop decided from (another writer, "
                "or the loop started from an old version): resuming from the stored status",
                self.label,
                changed.body.get("metadata", {}).get("resourceVersion"),
            )
            resume = changed.body
        else:
            return
        finally:
            for link in self.links.values():
                link.unsubscribe(self)
            self.runtime.forget(self)
        # Requests still in flight end on their own; the new loop re-sends them with the same key.
        await self.runtime.ensure_loop(resume, self.graph)

    async def iterate(self) -> float | None:
        """One fetch -> decide -> persist -> act round. Returns when to come back (inf: on news
        only; None: the run has finished and nothing is in flight)."""
        now = time.time()
        heartbeats: dict[str, float] = {}
        for key, link in self.links.items():
            heard = link.last_heard()
            if heard is not None:
                heartbeats[key.host_id] = max(heard, heartbeats.get(key.host_id, heard))
        facts = self.inbox.take_facts(heartbeats)
        # Steering requests already applied (their identity is in the status) are only removed.
        recorded = self.versioned.recorded
        steering = plan_steering(self.versioned.annotations, recorded)
        decision = reconcile(
            self.graph, self.state, facts, self.policy, now, annotations=steering.fresh, deleting=self.deleting
        )
        if decision.holds_for_output_tails:
            self.inbox.put_back(facts)
            return float("inf")  # the fetches wake the loop
        # The first write of this loop carries every job: the status may predate a restart.
        full = self.last_summary is None
        patch = status_patch(self.deferral.to_write(decision), self.jobnet_states, full=full)
        if recorded or decision.consumed_annotations:
            # Recorded in the same write that applies them: never applied twice.
            patch["appliedSteering"] = applied_status(steering.recorded_after(recorded, decision.consumed_annotations))
        summary = {key: value for key, value in patch.items() if key != "jobs"}
        tails_written = self.add_tails(patch["jobs"], decision.runtime)
        blocked = self.deletion_blocked(decision.runtime, str(to_rfc3339(now)))
        dirty = bool(patch["jobs"]) or summary != self.last_summary or blocked != self.blocked
        # A round that only observed a stored launch may be written with a later one: when it is due.
        may_wait = dirty and not (full or tails_written or blocked != self.blocked)
        write_by = self.deferral.defer(decision, now) if may_wait else None
        if dirty and write_by is None:
            encoded = self.status_encoder.encode(patch, full=full)
            status = {**self.first_status, **with_jobrun_conditions(encoded, self.metadata, str(to_rfc3339(now)))}
            if self.deleting:
                status["conditions"] = [*status["conditions"], *([blocked] if blocked else [])]
            try:
                await self.versioned.write_status(status)
            except KubeApiError as e:
                # Nothing is acted on before its decision is stored: decide again.
                self.inbox.put_back(facts)
                return await self.stored_elsewhere(e, now)
            self.conflicts = 0
            self.first_status = {}
            self.deferral.stored_as(decision)
            self.status_encoder.commit()
            self.last_summary = summary
            if blocked is not None and blocked != self.blocked:
                self.post_event(Event(type="Warning", reason=DELETION_BLOCKED, message=blocked["message"]), now)
            self.blocked = blocked
        for text in tails_written:
            del self.tails[text]
        report_round(operator_metrics, self.graph, self.state, decision)
        self.state = decision.runtime
        self.jobnet_states = dict(decision.jobnet_states)
        removed = await self.remove_applied()
        for action in decision.actions:  # in the scheduler's order: requests, acks, Events
            self.act(action, now)
        if not removed:
            return now + self.runtime.config.api_retry_delay
        if self.state.phase in _FINISHED and not self.requests and not self.inbox.deliveries:
            return None
        return min(decision.next_wakeup_at or float("inf"), write_by or float("inf"))

    def deletion_blocked(self, runtime: RunRuntime, now: str) -> Condition | None:
        """The DeletionBlocked condition of this round (its time kept while it holds)."""
        blocked = blocked_condition(runtime, self.metadata.get("generation"), now) if self.deleting else None
        return keep_transition_times([blocked], [self.blocked] if self.blocked else None)[0] if blocked else None

    async def stored_elsewhere(self, error: KubeApiError, now: float) -> float:
        """The status write was refused: when to decide again. A conflict (the run changed since
        the version the decision was made from) reads the run again and decides again at once
        (after a few in a row, after the retry delay); raises StatusChanged when the status
        itself changed."""
        delay = self.runtime.config.api_retry_delay
        if error.status == HTTP_CONFLICT:
            self.conflicts += 1
            logger.info(
                "run=%s the run changed since version %s: reading it again", self.label, self.versioned.resource_version
            )
            try:
                await self.versioned.refresh()
            except KubeApiError as e:
                logger.warning("run=%s cannot read the run again (%s); retrying in %.1fs", self.label, e, delay)
                return now + delay
            return now + (delay if self.conflicts > MAX_QUICK_CONFLICTS else 0.0)
        logger.warning("run=%s cannot store the status (%s); retrying in %.1fs", self.label, error, delay)
        return now + delay

    async def remove_applied(self) -> bool:
        """Remove the steering annotations whose request the status records as applied, each
        only while unchanged; False when the API refused (to try again after the retry delay)."""
        keys = self.versioned.to_remove()
        if not keys:
            return True
        try:
            await self.versioned.remove_applied(keys)
        except KubeApiError as e:
            if e.status == HTTP_UNPROCESSABLE:
                # Changed since (a newer request, or already removed): read it again, decide again.
                logger.info(
                    "run=%s the applied %s changed meanwhile: reading the run again", self.label, ", ".join(keys)
                )
                with contextlib.suppress(KubeApiError):
                    await self.versioned.refresh()
                self.wake()
                return True
            logger.warning("run=%s cannot remove the applied annotations %s (%s)", self.label, ", ".join(keys), e)
            return False
        logger.info("run=%s removed the applied %s", self.label, ", ".join(STEERING_KINDS[key] for key in keys))
        return True

    def add_tails(self, jobs: dict[str, Any], runtime: RunRuntime) -> list[str]:
        """Put the fetched output tails of finished jobs into the patch; the keys it wrote."""
        written = []
        for text, (path, attempt, tail) in self.tails.items():
            job = runtime.jobs.get(path)
            if job is None or job.attempt != attempt or job.state not in TERMINAL_STATES:
                continue
            jobs.setdefault(path, {})["outputTail"] = tail
            written.append(text)
        return written

    # -------------------------------------------------------------- acting

    def act(self, action: Action, now: float) -> None:
        if isinstance(action, Event):
            self.post_event(action, now)
        else:
            self.dispatch(action)

    def dispatch(self, action: Launch | Kill | Fence | Ack) -> None:
        """Start the agent request of ``action`` in the background."""
        if isinstance(action, Ack):
            self.inbox.ack_sent(action)
        node = self.graph.nodes[action.path]
        assert node.host is not None  # the scheduler never dispatches a job without a host
        link = self.link(node.host)
        if isinstance(action, Launch):
            # Queued from the decision on: the next round may come before the task first runs.
            self.inbox.queue_launch(action.key)
        request = {Launch: self.launch, Kill: self.kill, Fence: self.fence, Ack: self.ack}[type(action)]
        self.track(request(link, action))  # type: ignore[operator]

    def track(self, request: Coroutine[Any, Any, None]) -> None:
        """Run ``request`` in the background; the loop wakes when it is done."""
        task = asyncio.create_task(request)
        self.requests.add(task)
        task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self.requests.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, NotLeading):
            # Not sent: this replica's loops are about to be stopped; the next leader settles it.
            logger.warning("run=%s %s", self.label, error)
        elif error is not None:
            logger.error("run=%s request failed unexpectedly", self.label, exc_info=error)
        self.wake()

    def job_log(self, level: int, path: str | None, text: str, *args: Any) -> None:
        job = self.state.jobs.get(path) if path else None
        where = (
            f" job={path} host={job.host} attempt={job.attempt}"
            if job is not None
            else (f" job={path}" if path else "")
        )
        logger.log(level, f"run={self.label}{where}: {text}", *args)

    def post_event(self, event: Event, now: float) -> None:
        """Log ``event`` and queue it (named after what it is about: jobnet.core.events)."""
        self.job_log(
            logging.WARNING if event.type == "Warning" else logging.INFO,
            event.path,
            "%s: %s",
            event.reason,
            event.message,
        )
        name = event_name(self.name, self.uid, *event_identity(event, self.state, now))
        self.runtime.events.post(self.involved, event.type, event.reason, event.message, name=name)

    async def _connected(self, link: HostLink, key: JobKey, op: DispatchOp) -> HostAgent | DeliveryResult:
        """The connected agent, or the failure that proves the request never left."""
        try:
            return await link.connect()
        except SshError as e:
            code = next((code for cls, code in _UNDELIVERED.items() if isinstance(e, cls)), HostUnreachable.code)
            self.job_log(logging.WARNING, key.path, "cannot reach the agent for %s: %s", op, e.message)
            return DeliveryResult(
                key=key,
                op=op,
                outcome="notDelivered",
                error_code=code,
                error_message=e.message,
            )

    def deliver(self, result: DeliveryResult) -> None:
        if result.record is not None:
            self.on_record(result.record)
        self.inbox.add_delivery(result)
        self.wake()

    async def send(
        self,
        link: HostLink,
        action: Launch | Kill | Fence,
        request: AgentRequest,
        answer_type: type[AnswerT],
        doing: str,
    ) -> AnswerT | None:
        """Deliver ``request`` for ``action``: the agent's answer, or None once the failure is
        reported to the scheduler (not delivered, or outcome unknown).

        A launch first waits for its host's launch window; it counts as queued until it leaves
        (its timeouts start then), see :meth:`AgentInbox.queue_launch`."""
        key, op = action.key, action.kind
        queued = isinstance(action, Launch)
        try:
            async with link.launch_window if queued else contextlib.nullcontext():
                agent = await self._connected(link, key, op)
                if isinstance(agent, DeliveryResult):
                    self.deliver(agent)
                    return None
                self.runtime.gate.check(f"{op} {key.text()}")  # nothing awaited from here to the send
                self.job_log(logging.INFO, action.path, "%s", doing)
                if queued:
                    queued = False
                    self.inbox.leave_launch_queue(key, sent_at=time.time())
                try:
                    try:
                        return await agent.request(request, answer_type)
                    except AgentRequestFailed as e:
                        if op != "kill" or e.agent_code != "NotFound":
                            raise
                    # The agent never saw the key: fence it, so that a launch still on its way
                    # (retransmitted, or queued in a channel) is refused when it arrives.
                    fence = await agent.request(FenceRequest(key=key), FenceResult)
                    if not fence.fenced:  # the launch arrived meanwhile: kill it now
                        return await agent.request(request, answer_type)
                    self.job_log(logging.INFO, action.path, "kill: the agent never saw %s; fenced it", key)
                    # The fenced record settles the stopped job Stopped (never started), not Failed.
                    self.deliver(DeliveryResult(key=key, op=op, outcome="delivered", record=fence.record))
                    return None
                except AgentRequestFailed as e:
                    code, message = e.agent_code, e.message
                except SshError as e:
                    code, message = e.code, e.message
                self.job_log(logging.WARNING, action.path, "%s outcome unknown: %s", op, message)
                self.deliver(DeliveryResult(key=key, op=op, outcome="unknown", error_code=code, error_message=message))
                return None
        finally:
            if queued:
                self.inbox.leave_launch_queue(key, sent_at=None)  # never sent: no agent, or cancelled

    async def launch(self, link: HostLink, action: Launch) -> None:
        node = self.graph.nodes[action.path]
        assert node.script is not None  # job nodes always have a script
        environment = job_environment(
            self.graph,
            action.path,
            run_uid=self.uid,
            run_name=self.name,
            namespace=self.namespace,
            run_env=self.run_env,
            attempt=action.key.attempt,
            server_name=link.key.address,
        )
        request = LaunchRequest(
            key=action.key, script=node.script, args=list(node.args), env=environment, working_dir=node.working_dir
        )
        result = await self.send(link, action, request, LaunchResult, f"launching {node.script}")
        if result is None:
            return
        if result.deduplicated:
            self.job_log(logging.INFO, action.path, "the agent had already accepted %s", action.key)
        self.deliver(
            DeliveryResult(
                key=action.key, op="launch", outcome="delivered", record=result.record, deduplicated=result.deduplicated
            )
        )

    async def kill(self, link: HostLink, action: Kill) -> None:
        request = KillRequest(key=action.key, reason=action.reason, grace_seconds=action.grace_seconds)
        result = await self.send(
            link, action, request, KillResult, f"killing ({action.reason}, grace {action.grace_seconds:.1f}s)"
        )
        if result is None:
            return
        if result.already_ended:
            self.job_log(logging.INFO, action.path, "kill not needed: the job had already ended")
        self.deliver(
            DeliveryResult(
                key=action.key, op="kill", outcome="delivered", record=result.record, deduplicated=result.deduplicated
            )
        )

    async def fence(self, link: HostLink, action: Fence) -> None:
        result = await self.send(
            link, action, FenceRequest(key=action.key), FenceResult, f"fencing {action.key} before the re-run"
        )
        if result is None:
            return
        self.job_log(
            logging.INFO,
            action.path,
            "fence answered: %s",
            "fenced" if result.fenced else f"the key is {result.record.state}",
        )
        self.deliver(DeliveryResult(key=action.key, op="fence", outcome="delivered", record=result.record))

    async def ack(self, link: HostLink, action: Ack) -> None:
        try:
            agent = await link.connect()
            self.runtime.gate.check(f"ack {action.key.text()}")
            await agent.request(AckRequest(key=action.key), RecordResult)
        except SshError as e:
            # The record stays unacknowledged on the agent: the next operator start acks it again.
            self.job_log(logging.DEBUG, action.path, "ack not delivered: %s", e.message)


#: The JobRun event handler (``jobnet.kube.app``) that hands runs to :meth:`JobRunRuntime.on_jobrun`.
EVENT_HANDLER = "drive-jobruns"


class _QuietEventHandler(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage() == f"Handler '{EVENT_HANDLER}' succeeded.")


class JobRunRuntime:
    """The :class:`~jobnet.kube.app.RunStarter` that runs JobRuns (see the module docstring)."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self._client: KubeClient | None = None
        self._installer: AgentInstaller | None = None
        self.loops: dict[str, RunLoop] = {}
        #: runs whose loop finished: a late watch event of theirs starts no loop again
        self.finished = FinishedRuns()
        self._starting: set[str] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self.links: dict[LinkKey, HostLink] = {}
        #: asked before every request to an agent (and, through the client, every write)
        self.gate: LeaderGate = ALWAYS_LEADING
        #: while this replica leads (see :meth:`lead`)
        self.active = False
        self.deletions = RunDeletions(self)
        self._events: EventPoster | None = None
        #: runs whose implied Events were posted again in this term (see :meth:`restore_events`)
        self.restored: set[str] = set()

    @property
    def client(self) -> KubeClient:
        assert self._client is not None, "register() first"
        return self._client

    @property
    def events(self) -> EventPoster:
        if self._events is None:
            self._events = EventPoster(self.client, self.config.events)
        return self._events

    def restore_events(self, involved: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """Queue the Events the run's (decoded) status implies that happened within the restore
        window, once per run and term: the operator that wrote the status may have died before
        it posted them. Those that exist cost a 409 (jobnet.core.events)."""
        meta = involved["metadata"]
        if meta["uid"] in self.restored:
            return
        self.restored.add(meta["uid"])
        for event in implied_events(status, time.time() - self.config.events.restore_window):
            name = event_name(meta["name"], meta["uid"], *event.identity)
            self.events.post(involved, event.type, event.reason, event.message, name=name, at=event.at, again=True)

    async def prepare_installer(self) -> None:
        """Make the agent zipapp every channel's opening needs while the operator starts, in a
        worker thread: built from the package (``jobnet dev``: ~0.15 s of compiling its
        bytecode), or read from ``JOBNET_AGENT_ZIPAPP`` (the image), it held up a fresh operator's
        first run and, on the event loop, its first status write too. One that cannot be made now
        is tried again at the first opening, as before."""
        try:
            await asyncio.to_thread(self.installer)
        except (OSError, ImportError) as e:
            logger.warning("cannot make the agent zipapp yet (tried again at the first channel's opening): %s", e)

    def installer(self) -> AgentInstaller:
        if self._installer is None:
            zipapp, version = default_zipapp()
            self._installer = AgentInstaller(zipapp, version)
        return self._installer

    def link(self, key: LinkKey) -> HostLink:
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = HostLink(key, self)
        return link

    def forget(self, loop: RunLoop) -> None:
        if self.loops.get(loop.uid) is loop:
            del self.loops[loop.uid]

    # -------------------------------------------------------------- kopf

    def register(self, registry: kopf.OperatorRegistry, client: KubeClient, gate: LeaderGate) -> None:
        self._client = client
        self.gate = gate

        # The event handler sees every write of every run (our own status patches included);
        # kopf's per-call "succeeded" line would drown the log of a large run.
        logging.getLogger("kopf.objects").addFilter(_QuietEventHandler())

        @kopf.on.startup(registry=registry)
        async def prepare_agent_zipapp(**_: Any) -> None:
            await self.prepare_installer()

        @kopf.on.cleanup(registry=registry)
        async def stop_runtime(**_: Any) -> None:
            await self.close()

    async def start(self, jobrun: Mapping[str, Any], graph: RunGraph, first_status: Mapping[str, Any]) -> None:
        """A new run was expanded: run it (its loop's first write carries ``first_status``)."""
        await self.ensure_loop(jobrun, graph, first_status)

    async def lead(self) -> None:
        """This replica leads: runs get loops from now on (``jobnet.kube.app`` lists them)."""
        self.active = True

    async def follow(self) -> None:
        """This replica is leader no more: every loop, start retry and agent link stops at once
        (a new term lists the runs again and rebuilds each loop from its stored status)."""
        self.active = False
        for loop in self.loops.values():
            for request in loop.requests:
                request.cancel()  # not yet sent (the gate refuses them now): the next leader decides again
        await self.close()
        self.loops.clear()
        self._starting.clear()
        self.links.clear()
        self.restored.clear()

    async def on_jobrun(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        uid = body.get("metadata", {}).get("uid")
        if not uid:
            return
        loop = self.loops.get(uid)
        if event_type == "DELETED":
            operator_metrics.forget_run(uid)
            self.finished.forget(uid)
            self.restored.discard(uid)
            self.deletions.released(uid)
            if loop is not None and loop.task is not None:
                loop.task.cancel()
            return
        if not self.active:
            return
        if await self.deletions.observe(body, loop):
            return
        if loop is not None:
            loop.observe(body)
            return
        if self.finished.stale(uid, body):
            return  # the run finished here; this event is older, or brings no new request
        annotations = body.get("metadata", {}).get("annotations") or {}
        phase = (body.get("status") or {}).get("phase")
        steered = any(key in annotations for key in STEERING_KINDS)
        if phase in (RunPhase.PENDING, RunPhase.RUNNING, RunPhase.STUCK) or (phase in _FINISHED and steered):
            if (body.get("status") or {}).get("reason") == "InvalidJobNet":
                return  # never expanded: nothing to run
            await self.ensure_loop(body, None)
        elif phase in _FINISHED and uid not in self.restored:
            self.restore_finished(body)

    async def ensure_loop(
        self, body: Mapping[str, Any], graph: RunGraph | None, first_status: Mapping[str, Any] | None = None
    ) -> None:
        """Start the run's loop unless it runs (or is being started). API failures are retried in
        the background: kopf does not retry event handlers, and a resumed run may see no
        further event for a long time."""
        uid = body["metadata"]["uid"]
        if uid in self.loops or uid in self._starting:
            return
        self._starting.add(uid)
        if not await self._try_start(body, graph, first_status):
            task = asyncio.create_task(self._retry_start(body, graph, first_status), name=f"start jobrun {uid}")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return
        self._starting.discard(uid)

    async def _retry_start(
        self, body: Mapping[str, Any], graph: RunGraph | None, first_status: Mapping[str, Any] | None
    ) -> None:
        try:
            while True:
                await asyncio.sleep(self.config.api_retry_delay)
                if await self._try_start(body, graph, first_status):
                    return
        finally:
            self._starting.discard(body["metadata"]["uid"])

    async def _try_start(
        self, body: Mapping[str, Any], graph: RunGraph | None, first_status: Mapping[str, Any] | None = None
    ) -> bool:
        """True when the loop runs now or never will; False to try again (the API failed).

        The run executes the JobNets of its snapshot (``status.jobNetSnapshot``), never the
        JobNets as they are now: ``graph`` is given for a new run (it carries everything the run
        needs, the JobNets' stuckResolution included), a resumed run is expanded again from the
        snapshot. A run started by an operator without snapshots is expanded from the current
        JobNets, with a log line and a Warning Event saying so."""
        if graph is None:
            resumed = await self._resumed_graph(body)
            if not isinstance(resumed, RunGraph):
                return resumed
            graph = resumed
        if not self.active:
            return True  # leader no more while reading: the next term starts it
        marked = await self.deletions.ensure_finalizer(body)
        if marked is None:
            return False
        loop = RunLoop(self, marked, graph, self.config.policy(), first_status)
        self.loops[body["metadata"]["uid"]] = loop
        loop.start()
        return True

    async def _resumed_graph(self, body: Mapping[str, Any]) -> RunGraph | bool:
        """The run graph of a resumed run, expanded again from its snapshot; else as
        :meth:`_try_start`: True when it never resumes (an Event says why), False to try again."""
        meta = body["metadata"]
        namespace, name, uid = meta.get("namespace") or "default", meta.get("name"), meta["uid"]
        reference = (body.get("spec") or {}).get("jobNetRef", "")
        stored = (body.get("status") or {}).get("jobNetSnapshot")
        try:
            if stored is not None:
                catalog = await self.client.read_jobnet_snapshot(namespace, stored)
            else:
                catalog = (await self.client.list_jobnets(namespace)).catalog
                message = (
                    f"the run has no JobNet snapshot (started by an older operator): it resumes with "
                    f"JobNet {reference!r} and the JobNets it expands as they are now"
                )
                logger.warning("run=%s/%s %s", namespace, name, message)
                # Every resume says so again (a name of its own: the time of this resume).
                self.events.post(
                    body,
                    "Warning",
                    "NoJobNetSnapshot",
                    message,
                    name=event_name(name, uid, "resume", repr(time.time())),
                )
            return expand(reference, catalog, run_id=uid)
        except KubeApiError as e:
            if e.status != HTTP_NOT_FOUND or stored is None:
                logger.warning(
                    "run=%s/%s cannot start its runtime yet (%s); retrying in %.1fs",
                    namespace,
                    name,
                    e,
                    self.config.api_retry_delay,
                )
                return False
            why = f"its JobNet snapshot is gone: {e}"
        except (ValidationError, SnapshotError) as e:
            why = f"its JobNet snapshot is unusable: {e}"
        except (ExpansionError, KeyError) as e:
            why = f"JobNet {reference!r} no longer expands: {e}"
        return self._resume_failed(body, why)

    def _resume_failed(self, body: Mapping[str, Any], why: str) -> bool:
        """Say why the run cannot resume (never with a guessed graph): True, it never resumes.
        The Event is named after why, so an operator started again says it once."""
        meta = body["metadata"]
        message = f"cannot resume the run: {why}"
        logger.error("run=%s/%s %s", meta.get("namespace") or "default", meta.get("name"), message)
        name = event_name(meta["name"], meta["uid"], "resume", "ResumeFailed", why)
        self.events.post(body, "Warning", "ResumeFailed", message, name=name)
        return True

    def restore_finished(self, body: Mapping[str, Any]) -> None:
        """A run that finished before this term: its Events (see :meth:`restore_events`), when
        it finished within the restore window (its status is decoded only then)."""
        finished_at = from_rfc3339((body.get("status") or {}).get("finishedAt"))
        if finished_at is None or finished_at < time.time() - self.config.events.restore_window:
            return
        meta = body["metadata"]
        involved = {
            "apiVersion": GROUP_VERSION,
            "kind": "JobRun",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace") or "default", "uid": meta["uid"]},
        }
        self.restore_events(involved, decoded_status(body.get("status") or {}))

    async def close(self) -> None:
        if self._events is not None:
            self._events.close()
        self.deletions.close()
        for task in list(self._retries):
            task.cancel()
        for loop in list(self.loops.values()):
            if loop.task is not None:
                loop.task.cancel()
        for link in self.links.values():
            await link.close()
