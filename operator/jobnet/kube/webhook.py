"""The admission webhook: kopf ``@kopf.on.validate`` handlers for JobNets and JobRuns.

The decisions are the pure core's (``jobnet.core.validation``); this module only fetches the
namespace's JobNets through the client and turns problems into a denial that lists every
problem with its field path. The handler ids are the URL paths the API server calls
(``/validate-jobnet``, ``/validate-jobrun``; the Helm chart's ValidatingWebhookConfiguration
uses the same paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from jobnet.core.models import API_GROUP, API_VERSION
from jobnet.core.validation import Catalog, Problem, validate_jobnet, validate_jobnet_deletion, validate_jobrun
from jobnet.kube.client import JOBNETS, JOBRUNS, KubeClient

JOBNET_WEBHOOK_ID = "validate-jobnet"
JOBRUN_WEBHOOK_ID = "validate-jobrun"

#: HTTP code of a denial, as the API server's own validation uses for invalid objects.
DENIAL_CODE = 422


def describe_problems(subject: str, problems: Sequence[Problem]) -> str:
    """``JobNet 'x' is invalid (2 problems):`` followed by one ``- path: message`` line each."""
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"{subject} is invalid ({count}):\n" + "\n".join(f"- {problem}" for problem in problems)


def _deny(subject: str, problems: Sequence[Problem]) -> None:
    if problems:
        raise kopf.AdmissionError(describe_problems(subject, problems), code=DENIAL_CODE)


def register(registry: kopf.OperatorRegistry, client: KubeClient) -> None:
    """Register the validating handlers on ``registry``, reading JobNets through ``client``."""

    @kopf.on.validate(API_GROUP, API_VERSION, JOBNETS, id=JOBNET_WEBHOOK_ID,
                      operations=["CREATE", "UPDATE", "DELETE"], registry=registry)
    async def validate_jobnet_change(
            name: str, namespace: str | None, operation: str | None = None,
            old: Any = None, new: Any = None, **_: Any,
    ) -> None:
        namespace = namespace or "default"
        if operation == "UPDATE":
            # Metadata-only writes (kopf's own annotations, finalizer removal during deletion)
            # must pass even for a JobNet that became invalid through another JobNet's change.
            if (old or {}).get("spec") == (new or {}).get("spec") or (new or {}).get("metadata", {}).get("deletionTimestamp"):
                return
        jobnets = await client.list_jobnets(namespace)
        if operation == "DELETE":
            _deny(f"deleting JobNet {name!r}", validate_jobnet_deletion(name, jobnets.catalog))
            return
        _deny(f"JobNet {name!r}", validate_jobnet(name, (new or {}).get("spec"), jobnets.catalog))

    @kopf.on.validate(API_GROUP, API_VERSION, JOBRUNS, id=JOBRUN_WEBHOOK_ID,
                      operations=["CREATE"], registry=registry)
    async def validate_jobrun_creation(name: str, namespace: str | None, new: Any = None, **_: Any) -> None:
        jobnets = await client.list_jobnets(namespace or "default")
        _deny(f"JobRun {name!r}", jobrun_problems((new or {}).get("spec"), jobnets.catalog, jobnets.broken))


def jobrun_problems(spec: Any, catalog: Catalog, broken: Mapping[str, list[Problem]]) -> list[Problem]:
    """``validate_jobrun``, except that a referenced JobNet that does not even parse is reported
    with its own problems rather than as missing."""
    reference = spec.get("jobNetRef") if isinstance(spec, dict) else None
    if isinstance(reference, str) and reference in broken:
        return [Problem(path=f"JobNet/{reference} {p.path}", message=p.message) for p in broken[reference]]
    return validate_jobrun(spec, catalog)
