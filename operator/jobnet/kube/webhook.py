"""The admission webhooks, served from a plain aiohttp handler: validation of JobNets, JobRuns,
JobSchedules and JobCalendars, and the mutating webhook that records who steers a JobRun.

kopf's webhook server (:class:`AdmissionServer`, a ``kopf.WebhookServer``) keeps only its TLS
part: the certificate, its reload when the files change, the URL it is reached at. Each review
is answered here without kopf's admission machinery (which builds causes, loggers, diffs and a
handler state per request): the review is read (``jobnet.core.admission``), the endpoint named
by the URL path judges it, and the AdmissionReview response is built from the verdict. The
paths are those of ``jobnet.core.admission.ENDPOINTS`` (``/validate-jobnet``,
``/validate-jobrun``, ``/validate-jobschedule``, ``/validate-jobcalendar``, ``/mutate-jobrun``;
the Helm chart's Validating- and MutatingWebhookConfiguration use the same paths). A denial
lists every problem with its field path (HTTP code 422); a check that fails (the API server
cannot be read) denies with code 500 and its reason, and is logged. With
``--webhook-configuration NAME`` the operator creates both configurations and points them at
the URL it serves.

The decisions are the pure core's (``jobnet.core.validation``, ``jobnet.core.annotations``);
this module only fetches the namespace's JobNets through the client and turns problems into a
denial.

Deleting a JobNet that a JobSchedule runs, or a JobCalendar that one uses, is refused, naming
the schedules (like deleting a JobNet that another expands).

A JobRun UPDATE is judged only when it adds or changes ``jobnet.dev/override`` or
``jobnet.dev/stop`` (an override whose precondition, ``PATH=STATE@SEEN#ATTEMPT``, the run's
stored status already contradicts is refused too): every other write (the operator removing
applied annotations, its own bookkeeping, finalizers during deletion, a person's labels) passes
untouched. The mutating
webhook stamps ``jobnet.dev/override-by``/``jobnet.dev/stop-by`` with the requester the API
server authenticated (``userInfo.username``) and overwrites any value the request brought, so
the audit trail cannot be forged through them. It also gives each new override or stop an
identity (``jobnet.dev/override-id``/``jobnet.dev/stop-id``, a fresh random id): the run's loop
records the identities it applied, so a request is applied at most once (core/steering.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import kopf
from aiohttp import web

from jobnet.core.admission import (
    CONFIGURATION_KINDS,
    ENDPOINTS,
    Review,
    ReviewError,
    annotation_patch,
    parse_review,
    review_response,
    webhook_configurations,
)
from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    changed_steering,
    requester_stamps,
    stale_override_problems,
    static_steering_problems,
)
from jobnet.core.deletion import add_finalizer_patch
from jobnet.core.expansion import ExpansionError, RunGraph, expand
from jobnet.core.models import JobNetSpec, JobScheduleSpec
from jobnet.core.runstatus import decoded_status
from jobnet.core.schedulevalidation import schedules_using, validate_jobcalendar, validate_jobschedule
from jobnet.core.snapshot import snapshot_size_problem
from jobnet.core.steering import identity_stamps
from jobnet.core.validation import (
    Catalog,
    Problem,
    name_problem,
    parse_jobnet,
    parse_spec,
    validate_jobnet,
    validate_jobnet_deletion,
    validate_jobrun,
)
from jobnet.kube.client import HTTP_CONFLICT, JOBCALENDARS, JOBSCHEDULES, KubeApiError, KubeClient

logger = logging.getLogger(__name__)

ADMISSION_API = "admissionregistration.k8s.io/v1"
#: HTTP code of a denial, as the API server's own validation uses for invalid objects.
DENIAL_CODE = 422
#: HTTP code of a denial because the check itself failed (e.g. the JobNets could not be read).
FAILED_CHECK_CODE = 500
#: Largest AdmissionReview the webhook reads. An UPDATE carries the object and the old object,
#: each up to the API server's 3 MiB request limit; aiohttp's default (1 MiB) would refuse (413)
#: the review of any change of a large JobNet, and with it the change.
ADMISSION_REVIEW_MAX_BYTES = 8 * 1024 * 1024

#: Tries of ``--webhook-configuration``'s writes each time the server starts serving, the
#: n-th after n × CONFIGURE_RETRY_DELAY seconds (a later certificate reload tries again).
CONFIGURE_TRIES = 5
CONFIGURE_RETRY_DELAY = 2.0

#: A validating endpoint: the denial's message for a review, or None to admit it.
Validator = Callable[[Review], Awaitable[str | None]]


def describe_problems(subject: str, problems: Sequence[Problem]) -> str:
    """``JobNet 'x' is invalid (2 problems):`` followed by one ``- path: message`` line each."""
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"{subject} is invalid ({count}):\n" + "\n".join(f"- {problem}" for problem in problems)


def _denial(subject: str, problems: Sequence[Problem]) -> str | None:
    return describe_problems(subject, problems) if problems else None


class AdmissionWebhooks:
    """Answers the AdmissionReviews of every endpoint, reading JobNets through ``client``."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._validators: dict[str, Validator] = {
            "/validate-jobnet": self.validate_jobnet,
            "/validate-jobrun": self.validate_jobrun,
            "/validate-jobschedule": self.validate_jobschedule,
            "/validate-jobcalendar": self.validate_jobcalendar,
        }
        self._endpoints = {endpoint.path: endpoint for endpoint in ENDPOINTS}

    async def serve(self, request: web.Request) -> web.Response:
        """The aiohttp handler: one AdmissionReview in, its answer out (HTTP 400 for a call that
        is not an AdmissionReview, 404 for a path or kind no endpoint judges)."""
        try:
            payload = json.loads(await request.clone(client_max_size=ADMISSION_REVIEW_MAX_BYTES).read())
            review = parse_review(payload)
        except (ValueError, ReviewError) as e:  # json's JSONDecodeError is a ValueError
            raise web.HTTPBadRequest(reason=str(e)) from None
        path = "/" + request.match_info.get("id", "")
        endpoint = self._endpoints.get(path)
        if endpoint is None or endpoint.plural != review.plural:
            raise web.HTTPNotFound(reason=f"no webhook judges {review.plural} at {path}")
        if review.operation not in endpoint.operations:
            return web.json_response(review_response(payload))
        try:
            if endpoint.mutating:
                return web.json_response(review_response(payload, patch=self.stamp_jobrun(review)))
            denial = await self._validators[path](review)
        except Exception as e:  # the check failed: deny, saying why (kopf's admission did the same)
            logger.error("admission of %s %s/%s failed: %s", review.plural, review.namespace, review.name, e)
            return web.json_response(review_response(payload, denial=str(e) or repr(e), code=FAILED_CHECK_CODE))
        return web.json_response(review_response(payload, denial=denial, code=DENIAL_CODE))

    async def validate_jobnet(self, review: Review) -> str | None:
        name, namespace, operation, old, new = review.name, review.namespace, review.operation, review.old, review.new
        if operation == "UPDATE":
            # Metadata-only writes (finalizer removal during deletion, labels) must pass even
            # for a JobNet that became invalid through another JobNet's change.
            if (old or {}).get("spec") == (new or {}).get("spec") or (new or {}).get("metadata", {}).get(
                "deletionTimestamp"
            ):
                return None
        jobnets = await self.client.list_jobnets(namespace)
        if operation == "DELETE":
            in_use = schedules_using("JobNet", name, await namespace_schedules(self.client, namespace))
            return _denial(f"deleting JobNet {name!r}", validate_jobnet_deletion(name, jobnets.catalog) + in_use)
        problems = validate_jobnet(name, (new or {}).get("spec"), jobnets.catalog)
        if not problems:
            spec = parse_jobnet((new or {}).get("spec"))
            assert isinstance(spec, JobNetSpec)  # validate_jobnet reported anything else
            too_large = snapshot_size_problem(name, spec, jobnets.catalog)
            problems = [Problem(path="spec", message=too_large)] if too_large else []
        return _denial(f"JobNet {name!r}", problems)

    async def validate_jobrun(self, review: Review) -> str | None:
        name, namespace, operation, old, new = review.name, review.namespace, review.operation, review.old, review.new
        before, after = annotations_of(old), annotations_of(new)
        steered = changed_steering(before, after)
        respecified = operation == "UPDATE" and (old or {}).get("spec") != (new or {}).get("spec")
        if operation == "UPDATE" and not steered and not respecified:
            return None
        spec = (new or {}).get("spec")
        problems: list[Problem] = []
        if respecified:
            problems.append(
                Problem(
                    path="spec",
                    message=(
                        "a JobRun's spec cannot change once it exists (the run executes what it named when it was "
                        "created); create a new JobRun for another JobNet or environment"
                    ),
                )
            )
        if operation == "CREATE":
            jobnets = await self.client.list_jobnets(namespace)
            problems = jobrun_problems(spec, jobnets.catalog, jobnets.broken)
        if steered:
            catalog = await started_catalog(self.client, namespace, new)
            graph = run_graph(spec, catalog, (new or {}).get("metadata", {}).get("uid", ""))
            problems += [
                Problem(path=f"metadata.annotations[{key}]", message=message)
                for key, message in static_steering_problems(before, after, graph)
            ]
            if graph is not None and OVERRIDE_ANNOTATION in steered:
                problems += [
                    Problem(path=f"metadata.annotations[{OVERRIDE_ANNOTATION}]", message=message)
                    for message in stale_preconditions(after[OVERRIDE_ANNOTATION], graph, new)
                ]
        return _denial(f"JobRun {name!r}", problems)

    async def validate_jobschedule(self, review: Review) -> str | None:
        if review.operation == "UPDATE" and (review.old or {}).get("spec") == (review.new or {}).get("spec"):
            return None  # status, labels, finalizers
        jobnets = await self.client.list_jobnets(review.namespace)
        calendars = await self.client.list_objects(JOBCALENDARS, review.namespace)
        problems = validate_jobschedule(
            (review.new or {}).get("spec"),
            set(jobnets.catalog) | set(jobnets.broken),
            {calendar["metadata"]["name"] for calendar in calendars},
        )
        name_issue = name_problem(review.name, "JobSchedule")
        if name_issue:
            problems.insert(0, Problem(path="metadata.name", message=name_issue))
        return _denial(f"JobSchedule {review.name!r}", problems)

    async def validate_jobcalendar(self, review: Review) -> str | None:
        name = review.name
        if review.operation == "DELETE":
            schedules = await namespace_schedules(self.client, review.namespace)
            return _denial(f"deleting JobCalendar {name!r}", schedules_using("JobCalendar", name, schedules))
        if review.operation == "UPDATE" and (review.old or {}).get("spec") == (review.new or {}).get("spec"):
            return None
        return _denial(f"JobCalendar {name!r}", validate_jobcalendar((review.new or {}).get("spec")))

    @staticmethod
    def stamp_jobrun(review: Review) -> list[dict[str, Any]]:
        """The mutating webhook's JSON patch: who steers the run, and each new request's identity;
        a new run gets the operator's finalizer at once (the runtime would add it before driving
        the run: one write, one watch event and one more pass through both webhooks less)."""
        before, after = annotations_of(review.old), annotations_of(review.new)
        stamps: dict[str, str | None] = {
            **requester_stamps(before, after, review.username),
            **identity_stamps(before, after, uuid.uuid4().hex[:16]),
        }
        finalizer = (
            add_finalizer_patch((review.new or {}).get("metadata") or {}) if review.operation == "CREATE" else None
        )
        return annotation_patch(review.new, stamps) + (finalizer or [])

    async def configure(self, name: str, client_config: Mapping[str, Any]) -> None:
        """Create (or update) the Validating- and MutatingWebhookConfiguration ``name`` so the
        API server sends every endpoint's reviews to ``client_config`` (``--webhook-configuration``)."""
        for plural, webhooks in webhook_configurations(client_config).items():
            body = {"apiVersion": ADMISSION_API, "kind": CONFIGURATION_KINDS[plural], "metadata": {"name": name}}
            try:
                await self.client.create_cluster_object(ADMISSION_API, plural, {**body, "webhooks": webhooks})
            except KubeApiError as e:
                if e.status != HTTP_CONFLICT:
                    raise
                await self.client.patch_cluster_object(ADMISSION_API, plural, name, {"webhooks": webhooks})
            logger.info("configured %s %s to call %s", plural, name, client_config.get("url"))


class AdmissionServer(kopf.WebhookServer):
    """kopf's HTTPS server (certificate, reload, URL) answering through :class:`AdmissionWebhooks`
    instead of kopf's admission machinery; ``managed``: the webhook configurations it keeps
    pointed at itself."""

    def __init__(self, webhooks: AdmissionWebhooks, managed: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.webhooks = webhooks
        self.managed = managed

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for client_config in super().__call__(fn):
            if self.managed is not None:
                await self._configure(self.managed, client_config)
            yield client_config

    async def _configure(self, name: str, client_config: kopf.WebhookClientConfig) -> None:
        for attempt in range(1, CONFIGURE_TRIES + 1):
            try:
                await self.webhooks.configure(name, client_config)
                return
            except KubeApiError as e:
                logger.error(
                    "cannot configure the webhook configurations %s (try %d of %d): %s",
                    name,
                    attempt,
                    CONFIGURE_TRIES,
                    e,
                )
                await asyncio.sleep(attempt * CONFIGURE_RETRY_DELAY)

    async def _serve(self, fn: kopf.WebhookFn, request: web.Request) -> web.Response:  # type: ignore[override]
        return await self.webhooks.serve(request)  # fn, kopf's admission machinery, is not used


async def namespace_schedules(client: KubeClient, namespace: str) -> dict[str, JobScheduleSpec]:
    """The namespace's JobSchedules that parse (one that does not uses nothing)."""
    schedules = {}
    for item in await client.list_objects(JOBSCHEDULES, namespace):
        spec, problems = parse_spec(JobScheduleSpec, item.get("spec"))
        if spec is not None and not problems:
            schedules[item["metadata"]["name"]] = spec
    return schedules


def annotations_of(body: Any) -> dict[str, str]:
    """The annotations of an admission request's object (none for an absent object)."""
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


async def started_catalog(client: KubeClient, namespace: str, jobrun: Any) -> Catalog:
    """The JobNets a run executes: those of its snapshot once it has one (the JobNets may have
    been edited since it started), else the namespace's as they are now. An unreadable snapshot
    gives an empty catalog: the paths are then not checked here, and the run says why it cannot
    resume."""
    stored = ((jobrun or {}).get("status") or {}).get("jobNetSnapshot")
    if stored is None:
        return (await client.list_jobnets(namespace)).catalog
    try:
        return await client.read_jobnet_snapshot(namespace, stored)
    except (KubeApiError, ValueError):  # pydantic's ValidationError and SnapshotError are ValueErrors
        return {}


def stale_preconditions(override: str, graph: RunGraph, jobrun: Any) -> list[str]:
    """The override's preconditions (``PATH=STATE@SEEN#ATTEMPT``) that the run's stored status
    already contradicts. A status the webhook cannot read refuses nothing: the operator checks
    every precondition again when it applies the override."""
    try:
        jobs = decoded_status(((jobrun or {}).get("status")) or {}).get("jobs") or {}
        return stale_override_problems(override, graph, jobs if isinstance(jobs, dict) else {})
    except ValueError:
        return []


def run_graph(spec: Any, catalog: Catalog, run_id: str) -> RunGraph | None:
    """The JobRun's graph expanded from the namespace's JobNets; None when it does not expand
    (the JobRun's own validation or the scheduler says why)."""
    reference = spec.get("jobNetRef") if isinstance(spec, dict) else None
    if not isinstance(reference, str):
        return None
    try:
        return expand(reference, catalog, run_id=run_id)
    except (ExpansionError, KeyError):
        return None


def jobrun_problems(spec: Any, catalog: Catalog, broken: Mapping[str, list[Problem]]) -> list[Problem]:
    """``validate_jobrun``, except that a referenced JobNet that does not even parse is reported
    with its own problems rather than as missing."""
    reference = spec.get("jobNetRef") if isinstance(spec, dict) else None
    if isinstance(reference, str) and reference in broken:
        return [Problem(path=f"JobNet/{reference} {p.path}", message=p.message) for p in broken[reference]]
    return validate_jobrun(spec, catalog)
