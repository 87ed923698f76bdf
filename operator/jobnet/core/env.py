"""The environment a job's script gets: its own variables plus the ``MM_*`` variables that
scripts migrated from Tengine read, and jobnet's own ``JOBNET_*`` variables.

Precedence (later wins): the job's env (already merged from its JobNets, see
``jobnet.core.expansion``) < the JobRun's env < ``MM_*`` and ``JOBNET_*`` (set by jobnet,
cannot be overridden; validation rejects user variables with those prefixes).

A run started for a schedule slot (``spec.slot``, see ``jobnet.core.schedule``) adds
``JOBNET_SCHEDULE``, ``JOBNET_SCHEDULED_TIME`` and ``JOBNET_BUSINESS_DATE`` to the run's env
(:func:`run_environment`).

ID lists are separated by ``;``, root first, parent last, never including the job itself.
IDs are the node IDs of ``jobnet.core.expansion`` (actual ``<run uid>:<path>``, template
``<JobNet>/<job>`` or ``<JobNet>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobnet.core.expansion import RunGraph, RunNode

ID_SEPARATOR = ";"


def _ids(nodes: list[RunNode], template: bool = False) -> str:
    return ID_SEPARATOR.join(node.template_id if template else node.actual_id for node in nodes)


def nearest_expansion_ancestors(ancestors: list[RunNode]) -> list[RunNode]:
    """``ancestors`` (root first) cut so they start at the nearest jobnet that came from an
    expansion (that one included); all of them when none did (a job of the root JobNet)."""
    for index in range(len(ancestors) - 1, -1, -1):
        if ancestors[index].parent is not None:
            return ancestors[index:]
    return ancestors


def ancestry_variables(graph: RunGraph, path: str, run_uid: str, server_name: str) -> dict[str, str]:
    """The Tengine-compatible ``MM_*`` variables of job ``path``."""
    node = graph.node(path)
    ancestors = graph.ancestors(path)
    nearest = nearest_expansion_ancestors(ancestors)
    return {
        "MM_ACTUAL_JOB_ID": node.actual_id,
        "MM_ACTUAL_JOB_NAME_PATH": node.path,
        "MM_ACTUAL_JOB_ANCESTOR_IDS": _ids(nearest),
        "MM_FULL_ACTUAL_JOB_ANCESTOR_IDS": _ids(ancestors),
        "MM_TEMPLATE_JOB_ID": node.template_id,
        "MM_TEMPLATE_JOB_ANCESTOR_IDS": _ids(nearest, template=True),
        "MM_ROOT_JOBNET_ID": graph.nodes[graph.root].actual_id,
        "MM_TARGET_JOBNET_ID": ancestors[-1].actual_id if ancestors else "",
        "MM_SCHEDULE_ID": run_uid,
        "MM_SERVER_NAME": server_name,
    }


def run_environment(spec: Mapping[str, Any] | None) -> dict[str, str]:
    """The environment every job of a run gets from the JobRun ``spec`` (a raw mapping, as
    admitted): its ``env``, plus the ``JOBNET_SCHEDULE*`` variables of its schedule slot."""
    spec = spec or {}
    environment = {str(key): str(value) for key, value in (spec.get("env") or {}).items()}
    slot = spec.get("slot")
    if isinstance(slot, Mapping):
        environment.update(
            {
                "JOBNET_SCHEDULE": str(slot.get("schedule", "")),
                "JOBNET_SCHEDULED_TIME": str(slot.get("scheduledTime", "")),
                "JOBNET_BUSINESS_DATE": str(slot.get("businessDate", "")),
            }
        )
    return environment


def job_environment(
    graph: RunGraph,
    path: str,
    *,
    run_uid: str,
    run_name: str,
    namespace: str,
    run_env: Mapping[str, str],
    attempt: int,
    server_name: str,
) -> dict[str, str]:
    """The full environment of job ``path`` for one launch attempt (see module doc)."""
    node = graph.node(path)
    if node.kind != "job":
        raise ValueError(f"{path!r} is a {node.kind}, not a job: only jobs get an environment")
    environment = {**node.env, **run_env}
    environment.update(ancestry_variables(graph, path, run_uid, server_name))
    environment.update(
        {
            "JOBNET_RUN": run_name,
            "JOBNET_RUN_UID": run_uid,
            "JOBNET_JOB_PATH": node.path,
            "JOBNET_ATTEMPT": str(attempt),
            "JOBNET_NAMESPACE": namespace,
        }
    )
    return environment
