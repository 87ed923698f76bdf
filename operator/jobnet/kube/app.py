"""The kopf operator: settings, login, and the JobNet/JobRun handlers.

Every handler is registered on a registry built here (never kopf's global one), so importing
this module has no side effects and tests can build as many operators as they like.

A JobRun is re-validated and expanded when the watch first shows it without a phase (a kopf
*event* handler: kopf then keeps no diffbase annotation in JobRuns, whose writes would each pass
admission and come back as one more watch event), because admission cannot stop
every race (a JobNet it needs may be deleted after the JobRun was admitted, or the webhook
may have been down with ``failurePolicy: Ignore``). An invalid JobRun ends ``Failed`` with
reason ``InvalidJobNet``, a message naming every problem, and a Warning Event. For a valid one
the JobNets it expands from are first stored as the run's snapshot (a ConfigMap owned by the
run, ``jobnet.core.snapshot``: the run executes that definition to its end, whatever happens to
the JobNets), then its expanded graph is handed to the :class:`RunStarter` (the runtime that
dispatches jobs plugs in there), whose first status write carries the run's first decision (its
phase, every job) and ``status.jobNetSnapshot`` in one write.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import kopf

from jobnet.core.conditions import jobnet_conditions, with_jobrun_conditions
from jobnet.core.events import event_name, start_failure_identity
from jobnet.core.expansion import RunGraph, expand_validated, job_count
from jobnet.core.models import API_GROUP, API_VERSION
from jobnet.core.snapshot import SnapshotError, encode_snapshot, snapshot_configmap, snapshot_status, used_jobnets
from jobnet.core.validation import validate_jobnet
from jobnet.kube import webhook
from jobnet.kube.certificates import CertificateConfig, CertificateManager, ManagedCertificateServer
from jobnet.kube.client import (
    HTTP_CONFLICT,
    HTTP_NOT_FOUND,
    JOBNETS,
    JOBRUNS,
    REPORTING_COMPONENT,
    KubeApiError,
    KubeClient,
    NamespaceJobNets,
    Timeouts,
)
from jobnet.kube.leader import LeaderElector
from jobnet.kube.leadership import ALWAYS_LEADING, LeaderGate, Leadership, LeaderWork, LeaseSettings
from jobnet.kube.nostorage import NoDiffBaseStorage, NoProgressStorage
from jobnet.kube.schedules import ScheduleController, ScheduleSettings, WallClock

logger = logging.getLogger(__name__)

INVALID_JOBNET = "InvalidJobNet"
SNAPSHOT_TOO_LARGE = "JobNetSnapshotTooLarge"
#: Tries of one describe of a namespace's JobNets (retry_delay apart) before waiting for the next
#: watch event (kopf lists everything again at each new watch).
API_TRIES = 3


@dataclass(frozen=True)
class WebhookConfig:
    """Where the admission server listens and how it is reached."""

    port: int = 9443
    listen_address: str = "0.0.0.0"
    host: str | None = None  # the host name in the webhook URL kopf advertises
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    managed_configuration: str | None = None  # create and point both webhook configurations
    certificate: CertificateConfig | None = None  # the operator keeps its own certificate in a Secret


@dataclass(frozen=True)
class OperatorConfig:
    """Everything ``jobnet operator`` is told on its command line."""

    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    kubeconfig: str | None = None  # explicit: wins over an in-cluster service account
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    #: the Lease the replicas elect their leader with; None: no election (one replica only)
    election: LeaseSettings | None = None
    watch_server_timeout: float = 60.0
    watch_client_timeout: float = 75.0
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    retry_delay: float = 5.0  # before retrying a handler after an API failure
    api_retry_max_delay: float = 30.0  # the longest wait between retries of one API request
    schedule_check_interval: float = 5.0  # how often JobSchedules re-read the wall clock


class RunStarter(Protocol):
    """Receives each valid JobRun's expanded graph once its snapshot is stored."""

    async def start(self, jobrun: Mapping[str, Any], graph: RunGraph, first_status: Mapping[str, Any]) -> None:
        """``jobrun`` as watched (no phase yet); the starter's first status write carries
        ``first_status`` (``jobNetSnapshot``) with the run's first decision."""

    def register(self, registry: kopf.OperatorRegistry, client: KubeClient, gate: LeaderGate) -> None:
        """Add the starter's own handlers (runs resumed after a restart, annotation changes);
        ``gate`` says whether this replica may send requests to agents."""

    async def on_jobrun(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A JobRun as listed or watched: resume its loop if it needs one (leader only)."""

    async def lead(self) -> None:
        """This replica became the leader: runs may be driven from now on."""

    async def follow(self) -> None:
        """This replica is leader no more: stop every run loop and agent link at once."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UnendingBackoffs:
    """The delays between kopf's retries of one failed API request: doubling from ``first``
    (one second) up to ``cap``, and never ending. kopf gives up on a request after the last delay
    of a finite list and the operator then exits ("escalating"); an API server that flaps or is
    away for a while must make the operator wait and carry on instead. Not ``Sized``, so kopf
    counts the attempts without announcing a last one. Each iteration starts anew (a request that
    succeeded resets its backoff)."""

    def __init__(self, cap: float, first: float = 1.0) -> None:
        self.cap = cap
        self.first = first

    def __iter__(self) -> Iterator[float]:
        delay = min(self.first, self.cap)
        while True:
            yield delay
            delay = min(delay * 2, self.cap)


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig, client: KubeClient) -> None:
    """kopf settings: explicit watch timeouts (kopf hangs without them), no bookkeeping in the
    objects (event handlers only: jobnet.kube.nostorage), and the admission server (its TLS part;
    the reviews are answered by jobnet.kube.webhook)."""
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = config.connect_timeout
    settings.networking.connect_timeout = config.connect_timeout
    settings.networking.request_timeout = config.request_timeout
    settings.networking.error_backoffs = UnendingBackoffs(config.api_retry_max_delay)
    # Only event handlers: no diffs or handler progress to keep (see jobnet.kube.nostorage).
    settings.persistence.progress_storage = NoProgressStorage()
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = client.instance
    # Only warnings and errors of handlers become Events; our own Events are posted explicitly.
    settings.posting.level = logging.WARNING
    # One driver per run comes from leader election (jobnet.kube.leadership), not kopf's
    # peering: peering pauses watches and daemons only, never the run loops.
    settings.peering.standalone = True
    hook = config.webhook
    webhooks = webhook.AdmissionWebhooks(client)
    if hook.certificate is not None:
        manager = CertificateManager(hook.certificate, client)
        settings.admission.server = ManagedCertificateServer(
            manager,
            webhooks=webhooks,
            managed=hook.managed_configuration,
            addr=hook.listen_address,
            port=hook.port,
            host=hook.host,
        )
    else:
        # Files (e.g. a mounted cert-manager Secret) are re-read when they change (kopf checks each minute).
        settings.admission.server = webhook.AdmissionServer(
            webhooks,
            managed=hook.managed_configuration,
            addr=hook.listen_address,
            port=hook.port,
            host=hook.host,
            certfile=hook.cert_file,
            pkeyfile=hook.key_file,
            insecure=hook.insecure,
        )


class RunLeader:
    """The leader's part in JobRuns (:class:`~jobnet.kube.leadership.LeaderWork`): new runs are
    expanded and started, unfinished ones resumed. kopf's handler bookkeeping is not used for
    this: every replica watches, and a follower's "nothing to do" must not mark a new run as
    handled. On becoming leader every JobRun is listed, so runs that changed under the previous
    leader (or under none) are picked up."""

    def __init__(
        self,
        config: OperatorConfig,
        client: KubeClient,
        gate: LeaderGate,
        starter: RunStarter | None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.client = client
        self.gate = gate
        self.starter = starter
        self._sleep = sleep
        #: the delays between tries of one failed API call while leading: doubling from
        #: ``--retry-delay`` up to ``--api-retry-max-delay``, anew for each call
        self._backoffs = UnendingBackoffs(max(config.retry_delay, config.api_retry_max_delay), config.retry_delay)
        self.active = False
        self._starting: set[str] = set()
        #: made Pending in this term (an event written before that may still come)
        self._started: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def lead(self) -> None:
        self.active = True
        if self.starter is not None:
            await self.starter.lead()
        self._spawn(self._list_and_start(), "list JobRuns")

    async def follow(self) -> None:
        self.active = False
        for task in list(self._tasks):
            task.cancel()
        self._starting.clear()
        self._started.clear()
        if self.starter is not None:
            await self.starter.follow()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _list_and_start(self) -> None:
        """Every JobRun of the watched namespaces, each list tried again (with backoff) while
        leading."""
        for namespace in self.config.namespaces or (None,):
            delays = iter(self._backoffs)
            while True:
                try:
                    runs = await self.client.list_objects(JOBRUNS, namespace)
                    break
                except KubeApiError as e:
                    delay = next(delays)
                    logger.warning("cannot list the JobRuns to drive (%s); retrying in %.1fs", e, delay)
                    await self._sleep(delay)
            for body in runs:
                await self.on_jobrun("ADDED", body)

    async def on_jobrun(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A JobRun as listed or watched: expand it when new, else hand it to the runtime."""
        if not self.active:
            return
        uid = body.get("metadata", {}).get("uid", "")
        if event_type == "DELETED":
            self._started.discard(uid)
        elif jobrun_needs_starting(body):
            if uid and uid not in self._starting and uid not in self._started:
                self._starting.add(uid)
                self._spawn(self._start(dict(body)), f"start jobrun {uid}")
            return
        if self.starter is not None:
            await self.starter.on_jobrun(event_type, body)

    async def _start(self, body: dict[str, Any]) -> None:
        """Expand and start a new run; an API failure is tried again (with backoff) until it works
        or this replica is leader no more (then the task is cancelled)."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        delays = iter(self._backoffs)
        try:
            while True:
                try:
                    await _start(body, name, namespace, meta["uid"], self.client, self.starter)
                    self._started.add(meta["uid"])
                    return
                except KubeApiError as e:
                    if e.status == HTTP_NOT_FOUND:
                        return  # deleted meanwhile
                    delay = next(delays)
                    logger.warning("cannot start JobRun %s/%s yet: %s; retrying in %.1fs", namespace, name, e, delay)
                    await self._sleep(delay)
        finally:
            self._starting.discard(meta["uid"])


class JobNetDescriber:
    """The leader's part in JobNets (:class:`~jobnet.kube.leadership.LeaderWork`): their statuses
    (valid or not, job count). A JobNet's validity depends on the JobNets it expands, so a change
    of any JobNet re-describes its namespace (patching only the statuses that change); on becoming
    leader every namespace with JobNets is described (they may have changed under no leader)."""

    def __init__(self, config: OperatorConfig, client: KubeClient, gate: LeaderGate) -> None:
        self.config = config
        self.client = client
        self.gate = gate
        self.described: set[str] = set()  # namespaces described in this term
        self._task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.described.clear()
        self._task = asyncio.create_task(self._describe_all(), name="describe JobNets")

    async def follow(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.described.clear()

    async def on_event(self, event_type: str | None, body: Mapping[str, Any], namespace: str) -> None:
        if self.gate.leading() and jobnets_need_describing(event_type, body, since_start=namespace in self.described):
            await self.describe(namespace)

    async def _describe_all(self) -> None:
        for scope in self.config.namespaces or (None,):
            try:
                items = await self.client.list_objects(JOBNETS, scope)
            except KubeApiError as e:
                logger.warning("cannot list the JobNets to describe (described at their next change): %s", e)
                continue
            for namespace in sorted({item["metadata"].get("namespace") or "default" for item in items}):
                if namespace not in self.described:
                    await self.describe(namespace)

    async def describe(self, namespace: str) -> None:
        """Describe the namespace's JobNets (see :func:`retried`)."""
        if await retried(
            lambda: _describe_namespace(namespace, self.client), f"describe the JobNets of {namespace}", self.config
        ):
            self.described.add(namespace)


def build_registry(
    config: OperatorConfig,
    client: KubeClient,
    starter: RunStarter | None = None,
    gate: LeaderGate = ALWAYS_LEADING,
) -> tuple[kopf.OperatorRegistry, list[LeaderWork]]:
    """The operator's handlers, bound to ``client`` (and ``starter`` for valid JobRuns), and the
    work only the leader does (see :mod:`jobnet.kube.leadership`); ``gate`` says whether this
    replica leads."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def apply_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings, config, client)

    @kopf.on.login(registry=registry)
    async def log_in(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if config.kubeconfig:
            os.environ["KUBECONFIG"] = config.kubeconfig  # where kopf's kubeconfig login reads it
            info = kopf.login_with_kubeconfig(**kwargs)
        else:
            info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is not None:
            await client.connect(info)
        return info

    @kopf.on.cleanup(registry=registry)
    async def close_client(**_: Any) -> None:
        await client.close()

    schedules = ScheduleController(
        client,
        WallClock(),
        ScheduleSettings(
            config.schedule_check_interval,
            config.namespaces,
            config.retry_delay,
            max(1, round(config.watch_server_timeout)),
        ),
    )
    schedules.register(registry)
    if starter is not None:
        starter.register(registry, client, gate)
    runs = RunLeader(config, client, gate, starter)

    # One handler for every JobRun event (kopf builds each handler's arguments at each event):
    # the run's driving, and its schedule's status when a JobSchedule created it.
    @kopf.on.event(API_GROUP, API_VERSION, JOBRUNS, id="drive-jobruns", registry=registry)
    async def drive_jobrun(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        raw = event.get("object")  # as the API server sent it (its resourceVersion included)
        jobrun = raw if isinstance(raw, Mapping) else body
        schedules.run_event(event.get("type"), jobrun)
        await runs.on_jobrun(event.get("type"), jobrun)

    # JobNets are described from watch events (see JobNetDescriber), not create/update/resume
    # handlers: kopf keeps no state in the JobNet then (its
    # diffbase annotation would hold the whole spec, and a large JobNet's does not fit the
    # 256 KiB of annotations). kopf lists every JobNet again at each new watch, so a describe that
    # failed is tried again then.
    jobnets = JobNetDescriber(config, client, gate)

    @kopf.on.event(API_GROUP, API_VERSION, JOBNETS, id="describe-jobnets", registry=registry)
    async def describe_jobnets(event: Mapping[str, Any], body: kopf.Body, namespace: str | None, **_: Any) -> None:
        await jobnets.on_event(event.get("type"), body, namespace or "default")

    return registry, [runs, jobnets, schedules]


async def retried(action: Callable[[], Awaitable[None]], what: str, config: OperatorConfig) -> bool:
    """Do ``action`` (an event handler's work) up to API_TRIES times while the API server fails,
    ``config.retry_delay`` apart; whether it was done. kopf does not retry event handlers: after
    the last try the object's next watch event (at the latest the next watch's listing) tries again."""
    for attempt in range(1, API_TRIES + 1):
        try:
            await action()
        except KubeApiError as e:
            if attempt == API_TRIES:
                logger.error("cannot %s (tried again at the next watch event): %s", what, e)
                return False
            logger.warning("cannot %s: %s; retrying in %.1fs", what, e, config.retry_delay)
            await asyncio.sleep(config.retry_delay)
        else:
            return True
    return False


def jobrun_needs_starting(body: Mapping[str, Any]) -> bool:
    """A JobRun is started while it has no phase (new, or its start failed) and is not being deleted."""
    return not (body.get("status") or {}).get("phase") and not body.get("metadata", {}).get("deletionTimestamp")


def jobnets_need_describing(event_type: str | None, body: Mapping[str, Any], *, since_start: bool) -> bool:
    """Whether a watch event of a JobNet calls for describing its namespace: it was deleted
    (others may expand it), its status does not describe its generation (new or changed), or
    nothing of the namespace was described since the operator started (changes while it was down)."""
    if event_type == "DELETED" or not since_start:
        return True
    observed = (body.get("status") or {}).get("observedGeneration")
    return bool(observed != body.get("metadata", {}).get("generation"))


def jobnet_status(name: str, jobnets: NamespaceJobNets, now: str) -> dict[str, Any]:
    """The status JobNet ``name`` should have: valid or not (and why), its job count, and the
    conditions saying so (``now`` is the transition time of a condition that changes)."""
    problems = jobnets.broken.get(name) or validate_jobnet(name, jobnets.catalog[name], jobnets.catalog)
    generation = jobnets.versions.get(name, {}).get("generation")
    previous = jobnets.statuses.get(name, {}).get("conditions")
    if problems:
        message = webhook.describe_problems(f"JobNet {name!r}", problems)
        summary: dict[str, Any] = {"valid": False, "jobCount": None, "message": message}
    else:
        # Valid: no expansion is missing or cyclic, so counting terminates.
        summary = {"valid": True, "jobCount": job_count(name, jobnets.catalog), "message": None}
    conditions = jobnet_conditions(summary["valid"], summary["message"], generation, now, previous)
    return {**summary, "observedGeneration": generation, "conditions": conditions}


async def _describe_namespace(namespace: str, client: KubeClient) -> None:
    jobnets = await client.list_jobnets(namespace)
    now = _now()
    for name, current in jobnets.statuses.items():
        wanted = jobnet_status(name, jobnets, now)
        if any(current.get(key) != value for key, value in wanted.items()):
            await client.patch_status(JOBNETS, namespace, name, wanted)


async def _start(
    body: Mapping[str, Any], name: str, namespace: str, uid: str, client: KubeClient, starter: RunStarter | None
) -> None:
    jobnets = await client.list_jobnets(namespace)
    spec = dict(body.get("spec", {}))
    reference = spec.get("jobNetRef")
    problems = webhook.jobrun_problems(spec, jobnets.catalog, jobnets.broken)
    if problems:
        await _fail(
            body,
            name,
            namespace,
            client,
            INVALID_JOBNET,
            webhook.describe_problems(f"JobRun {name!r} cannot start: JobNet {reference!r}", problems),
        )
        return
    assert isinstance(reference, str)  # validate_jobrun reported anything else as a problem
    graph = expand_validated(reference, jobnets.catalog, run_id=uid)
    used = used_jobnets(reference, jobnets.catalog)
    data = encode_snapshot(used)
    configmap = snapshot_configmap(body, data)
    try:
        snapshot = snapshot_status(configmap["metadata"]["name"], data, jobnets.versions, used)
    except SnapshotError as e:
        await _fail(body, name, namespace, client, SNAPSHOT_TOO_LARGE, f"JobRun {name!r} cannot start: {e}")
        return
    # The snapshot is stored before the run has a phase: nothing can be launched without it.
    await store_snapshot(configmap, client)
    jobs = len(graph.jobs())
    first = {"jobNetSnapshot": snapshot.model_dump(by_alias=True, mode="json")}
    logger.info(
        "JobRun %s/%s expanded JobNet %r into %d jobs (snapshot of %d JobNets, %d bytes, in ConfigMap %s)",
        namespace,
        name,
        reference,
        jobs,
        len(used),
        snapshot.size_bytes,
        snapshot.config_map,
    )
    if starter is not None:
        # The run's loop writes its first decision with the snapshot (one write and one watch
        # event less per run than a Pending write of its own before it).
        await starter.start(body, graph, first)
        return
    status = {"phase": "Pending", "progress": f"0/{jobs}", "counts": {"Pending": jobs}, **first}
    await client.patch_status(
        JOBRUNS, namespace, name, with_jobrun_conditions(status, body.get("metadata", {}), _now())
    )


async def _fail(
    body: Mapping[str, Any], name: str, namespace: str, client: KubeClient, reason: str, message: str
) -> None:
    now = _now()
    status = {"phase": "Failed", "reason": reason, "message": message, "finishedAt": now}
    await client.patch_status(JOBRUNS, namespace, name, with_jobrun_conditions(status, body.get("metadata", {}), now))
    # Named as a restarted operator names the Event this status implies (jobnet.core.events).
    event = event_name(name, body["metadata"]["uid"], *start_failure_identity(now))
    await client.post_event(body, "Warning", reason, message, name=event)
    logger.warning("JobRun %s/%s failed to start: %s", namespace, name, message.replace("\n", " "))


async def store_snapshot(configmap: dict[str, Any], client: KubeClient) -> None:
    """Create the run's snapshot ConfigMap. One that exists already is left from an earlier
    attempt of this start (the name holds the run's uid) whose reference never reached the run's
    status (the loop's first write carries it, before any launch), so nothing used it: it is
    replaced (it is immutable) by the snapshot of now."""
    try:
        await client.create_configmap(configmap)
    except KubeApiError as e:
        if e.status != HTTP_CONFLICT:
            raise
        await client.delete_configmap(configmap["metadata"]["namespace"], configmap["metadata"]["name"])
        await client.create_configmap(configmap)


async def run(config: OperatorConfig, starter: RunStarter | None = None) -> None:
    """Run the operator until it is told to stop (SIGTERM/SIGINT)."""
    client = KubeClient(Timeouts(connect=config.connect_timeout, request=config.request_timeout))
    election = config.election
    elector = None if election is None else LeaderElector(client, election.namespace, election.name, election.election)
    gate = ALWAYS_LEADING if elector is None else LeaderGate(elector.config.identity, elector.leading)
    client.gate = gate
    registry, work = build_registry(config, client, starter, gate)
    leadership = Leadership(elector, work)

    @kopf.on.startup(registry=registry)
    async def campaign(**_: Any) -> None:
        leadership.start()  # its requests fail (and are tried again) until kopf has logged in

    @kopf.on.cleanup(registry=registry)
    async def stop_leading(**_: Any) -> None:
        await leadership.stop()

    await kopf.operator(
        registry=registry,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        liveness_endpoint=config.liveness_endpoint,
    )


def run_blocking(config: OperatorConfig, starter: RunStarter | None = None) -> None:
    asyncio.run(run(config, starter))
