"""The admission webhooks: kopf ``@kopf.on.validate`` handlers for JobNets, JobRuns, JobSchedules
and JobCalendars, and the ``@kopf.on.mutate`` handler that records who steers a JobRun.

The decisions are the pure core's (``jobnet.core.validation``, ``jobnet.core.annotations``);
this module only fetches the namespace's JobNets through the client and turns problems into a
denial that lists every problem with its field path. The handler ids are the URL paths the
API server calls (``/validate-jobnet``, ``/validate-jobrun``, ``/validate-jobschedule``,
``/validate-jobcalendar``, ``/mutate-jobrun``; the Helm
chart's Validating- and MutatingWebhookConfiguration use the same paths).

Deleting a JobNet that a JobSchedule runs, or a JobCalendar that one uses, is refused, naming
the schedules (like deleting a JobNet that another expands).

A JobRun UPDATE is judged only when it adds or changes ``jobnet.dev/override`` or
``jobnet.dev/stop`` (an override whose precondition, ``PATH=STATE@SEEN#ATTEMPT``, the run's
stored status already contradicts is refused too): every other write (the operator removing
applied annotations, its own bookkeeping, finalizers during deletion, a person's labels) passes
untouched. The mutating
handler stamps ``jobnet.dev/override-by``/``jobnet.dev/stop-by`` with the requester the API
server authenticated (``userInfo.username``) and overwrites any value the request brought, so
the audit trail cannot be forged through them. It also gives each new override or stop an
identity (``jobnet.dev/override-id``/``jobnet.dev/stop-id``, a fresh random id): the run's loop
records the identities it applied, so a request is applied at most once (core/steering.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    changed_steering,
    requester_stamps,
    stale_override_problems,
    static_steering_problems,
)
from jobnet.core.expansion import ExpansionError, RunGraph, expand
from jobnet.core.models import API_GROUP, API_VERSION, JobNetSpec, JobScheduleSpec
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
from jobnet.kube.client import JOBCALENDARS, JOBNETS, JOBRUNS, JOBSCHEDULES, KubeApiError, KubeClient

JOBNET_WEBHOOK_ID = "validate-jobnet"
JOBRUN_WEBHOOK_ID = "validate-jobrun"
JOBRUN_MUTATING_WEBHOOK_ID = "mutate-jobrun"
JOBSCHEDULE_WEBHOOK_ID = "validate-jobschedule"
JOBCALENDAR_WEBHOOK_ID = "validate-jobcalendar"

#: HTTP code of a denial, as the API server's own validation uses for invalid objects.
DENIAL_CODE = 422
#: Largest AdmissionReview the webhook reads. An UPDATE carries the object and the old object,
#: each up to the API server's 3 MiB request limit; aiohttp's default (1 MiB) would refuse (413)
#: the review of any change of a large JobNet, and with it the change.
ADMISSION_REVIEW_MAX_BYTES = 8 * 1024 * 1024


class AdmissionServer(kopf.WebhookServer):
    """kopf's admission server, reading reviews up to :data:`ADMISSION_REVIEW_MAX_BYTES`."""

    @staticmethod
    async def _serve(fn: Any, request: Any) -> Any:
        return await kopf.WebhookServer._serve(fn, request.clone(client_max_size=ADMISSION_REVIEW_MAX_BYTES))


def describe_problems(subject: str, problems: Sequence[Problem]) -> str:
    """``JobNet 'x' is invalid (2 problems):`` followed by one ``- path: message`` line each."""
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"{subject} is invalid ({count}):\n" + "\n".join(f"- {problem}" for problem in problems)


def _deny(subject: str, problems: Sequence[Problem]) -> None:
    if problems:
        raise kopf.AdmissionError(describe_problems(subject, problems), code=DENIAL_CODE)


def register(registry: kopf.OperatorRegistry, client: KubeClient) -> None:
    """Register the validating handlers on ``registry``, reading JobNets through ``client``."""

    @kopf.on.validate(
        API_GROUP,
        API_VERSION,
        JOBNETS,
        id=JOBNET_WEBHOOK_ID,
        operations=["CREATE", "UPDATE", "DELETE"],
        registry=registry,
    )
    async def validate_jobnet_change(
        name: str,
        namespace: str | None,
        operation: str | None = None,
        old: Any = None,
        new: Any = None,
        **_: Any,
    ) -> None:
        namespace = namespace or "default"
        if operation == "UPDATE":
            # Metadata-only writes (kopf's own annotations, finalizer removal during deletion)
            # must pass even for a JobNet that became invalid through another JobNet's change.
            if (old or {}).get("spec") == (new or {}).get("spec") or (new or {}).get("metadata", {}).get(
                "deletionTimestamp"
            ):
                return
        jobnets = await client.list_jobnets(namespace)
        if operation == "DELETE":
            in_use = schedules_using("JobNet", name, await namespace_schedules(client, namespace))
            _deny(f"deleting JobNet {name!r}", validate_jobnet_deletion(name, jobnets.catalog) + in_use)
            return
        problems = validate_jobnet(name, (new or {}).get("spec"), jobnets.catalog)
        if not problems:
            spec = parse_jobnet((new or {}).get("spec"))
            assert isinstance(spec, JobNetSpec)  # validate_jobnet reported anything else
            too_large = snapshot_size_problem(name, spec, jobnets.catalog)
            problems = [Problem(path="spec", message=too_large)] if too_large else []
        _deny(f"JobNet {name!r}", problems)

    @kopf.on.validate(
        API_GROUP, API_VERSION, JOBRUNS, id=JOBRUN_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
    )
    async def validate_jobrun_change(
        name: str,
        namespace: str | None,
        operation: str | None = None,
        old: Any = None,
        new: Any = None,
        **_: Any,
    ) -> None:
        before, after = annotations_of(old), annotations_of(new)
        steered = changed_steering(before, after)
        respecified = operation == "UPDATE" and (old or {}).get("spec") != (new or {}).get("spec")
        if operation == "UPDATE" and not steered and not respecified:
            return
        namespace = namespace or "default"
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
            jobnets = await client.list_jobnets(namespace)
            problems = jobrun_problems(spec, jobnets.catalog, jobnets.broken)
        if steered:
            catalog = await started_catalog(client, namespace, new)
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
        _deny(f"JobRun {name!r}", problems)

    @kopf.on.validate(
        API_GROUP,
        API_VERSION,
        JOBSCHEDULES,
        id=JOBSCHEDULE_WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def validate_jobschedule_change(
        name: str, namespace: str | None, operation: str | None = None, old: Any = None, new: Any = None, **_: Any
    ) -> None:
        if operation == "UPDATE" and (old or {}).get("spec") == (new or {}).get("spec"):
            return  # status, labels, finalizers
        namespace = namespace or "default"
        jobnets = await client.list_jobnets(namespace)
        calendars = await client.list_objects(JOBCALENDARS, namespace)
        problems = validate_jobschedule(
            (new or {}).get("spec"),
            set(jobnets.catalog) | set(jobnets.broken),
            {calendar["metadata"]["name"] for calendar in calendars},
        )
        name_issue = name_problem(name, "JobSchedule")
        if name_issue:
            problems.insert(0, Problem(path="metadata.name", message=name_issue))
        _deny(f"JobSchedule {name!r}", problems)

    @kopf.on.validate(
        API_GROUP,
        API_VERSION,
        JOBCALENDARS,
        id=JOBCALENDAR_WEBHOOK_ID,
        operations=["CREATE", "UPDATE", "DELETE"],
        registry=registry,
    )
    async def validate_jobcalendar_change(
        name: str, namespace: str | None, operation: str | None = None, old: Any = None, new: Any = None, **_: Any
    ) -> None:
        if operation == "DELETE":
            schedules = await namespace_schedules(client, namespace or "default")
            _deny(f"deleting JobCalendar {name!r}", schedules_using("JobCalendar", name, schedules))
            return
        if operation == "UPDATE" and (old or {}).get("spec") == (new or {}).get("spec"):
            return
        _deny(f"JobCalendar {name!r}", validate_jobcalendar((new or {}).get("spec")))

    @kopf.on.mutate(
        API_GROUP,
        API_VERSION,
        JOBRUNS,
        id=JOBRUN_MUTATING_WEBHOOK_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def stamp_jobrun_requester(
        userinfo: Any,
        patch: kopf.Patch,
        old: Any = None,
        new: Any = None,
        **_: Any,
    ) -> None:
        before, after = annotations_of(old), annotations_of(new)
        stamps: dict[str, str | None] = {
            **requester_stamps(before, after, (userinfo or {}).get("username")),
            **identity_stamps(before, after, uuid.uuid4().hex[:16]),
        }
        if stamps:
            patch.setdefault("metadata", {}).setdefault("annotations", {}).update(stamps)


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
