"""The JobNet snapshot of a run: the definitions a JobRun started with, so that it always runs them.

A JobRun is expanded from the JobNets when it starts; a restarted operator must resume exactly
that graph, even if someone edited or deleted a JobNet meanwhile (edits apply to the next run,
as in JP1/AJS or Senju). Expansion is deterministic given its inputs, so the snapshot holds the
*inputs*: the specs of the root JobNet and of every JobNet it expands, transitively. They are
far smaller than the expanded graph (a JobNet expanded a hundred times is stored once).

Encoding (``gzip-json-v1``): a JSON object JobNet name -> spec (camelCase, defaults left
out), gzipped, with the codec of the status chunks (:func:`jobnet.core.runstatus.encode_chunk`).
The snapshot lives in a ConfigMap owned by the JobRun, not in the JobRun's status: a
10,000-job status already takes up to ~700 KiB of the object limit, and the snapshot of a
10,000-job JobNet whose names do not compress well takes ~300 KiB more (docs/scale.md).
The status names the ConfigMap and carries the snapshot's SHA-256, so a resumed run
refuses a snapshot that is not the one it started with. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from jobnet.core.models import JobNetSpec
from jobnet.core.runstatus import decode_chunk, encode_chunk
from jobnet.core.status import JobNetSnapshotStatus, SnapshotJobNet
from jobnet.core.validation import Catalog, expansion_targets

SNAPSHOT_FORMAT = "gzip-json-v1"
#: Key of the snapshot in the ConfigMap's ``binaryData``.
SNAPSHOT_KEY = "jobnets.json.gz"
#: A ConfigMap holds at most 1 MiB of data; a little is left for its metadata.
SNAPSHOT_MAX_BYTES = 1024 * 1024 - 4096
#: Label of the snapshot ConfigMap: the uid of its JobRun (names may be too long for a label).
RUN_UID_LABEL = "jobnet.dev/jobrun-uid"
#: DNS subdomain names (ConfigMaps, JobRuns) have at most this many characters.
_NAME_MAX_LENGTH = 253


class SnapshotError(ValueError):
    """A snapshot cannot be built or read; the message says which and why."""


def used_jobnets(root: str, catalog: Catalog) -> dict[str, JobNetSpec]:
    """The specs expansion of ``root`` reads: the root and every JobNet it expands, transitively,
    in the order first reached. Raises :class:`SnapshotError` naming a JobNet that is missing."""
    if root not in catalog:
        raise SnapshotError(f"JobNet {root!r} does not exist")
    used = {root: catalog[root]}
    queue = [root]
    for name in queue:
        for target in expansion_targets(used[name]):
            if target in used:
                continue
            if target not in catalog:
                raise SnapshotError(f"JobNet {name!r} expands JobNet {target!r}, which does not exist")
            used[target] = catalog[target]
            queue.append(target)
    return used


def snapshot_size_problem(name: str, spec: JobNetSpec, catalog: Catalog, limit: int = SNAPSHOT_MAX_BYTES) -> str | None:
    """Why no run of JobNet ``name`` (with ``spec``, in ``catalog``) could ever start, when its
    snapshot would not fit the ConfigMap that holds it; None when it fits (admission says so
    before the JobNet is stored, instead of every run failing ``JobNetSnapshotTooLarge``)."""
    try:
        used = used_jobnets(name, {**catalog, name: spec})
    except SnapshotError:
        return None  # a missing expansion is validation's to report
    size = len(base64.b64decode(encode_snapshot(used)))
    if size <= limit:
        return None
    return (
        f"a run stores the definition of the JobNets it uses ({', '.join(sorted(used))}) in a ConfigMap, and "
        f"theirs takes {size} bytes gzipped, more than the {limit} a ConfigMap holds: make it smaller (fewer "
        "jobs, shorter args and env) or split the work into JobNets started by separate JobRuns"
    )


def encode_snapshot(jobnets: Mapping[str, JobNetSpec]) -> str:
    """The snapshot of ``jobnets`` as base64 (the form of a ConfigMap's ``binaryData``)."""
    return encode_chunk(
        {name: spec.model_dump(by_alias=True, mode="json", exclude_defaults=True) for name, spec in jobnets.items()}
    )


def snapshot_sha256(data: str) -> str:
    """SHA-256 (hex) of the snapshot's bytes (``data`` is their base64)."""
    try:
        return hashlib.sha256(base64.b64decode(data, validate=True)).hexdigest()
    except binascii.Error as e:
        raise SnapshotError(f"the JobNet snapshot is not base64: {e}") from None


def decode_snapshot(data: str, snapshot: JobNetSnapshotStatus) -> dict[str, JobNetSpec]:
    """The JobNet specs of snapshot ``data``, after checking that it is the one ``snapshot`` (the
    run's status) describes."""
    if not data:
        raise SnapshotError(f"ConfigMap {snapshot.config_map!r} holds no binaryData {snapshot.key!r}")
    if snapshot.format != SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"the JobNet snapshot has format {snapshot.format!r}; this operator reads {SNAPSHOT_FORMAT!r}"
        )
    actual = snapshot_sha256(data)
    if actual != snapshot.sha256:
        raise SnapshotError(
            f"the JobNet snapshot has SHA-256 {actual}, the run started with {snapshot.sha256}: "
            "it was replaced after the run started"
        )
    try:
        raw = decode_chunk(data)
    except ValueError:
        raise SnapshotError("the JobNet snapshot is not gzipped JSON of JobNet name -> spec") from None
    specs = {}
    for name, spec in raw.items():
        try:
            specs[name] = JobNetSpec.model_validate(spec)
        except ValidationError as e:
            raise SnapshotError(f"JobNet {name!r} of the snapshot is not a valid spec: {e}") from None
    return specs


def snapshot_configmap_name(run_name: str, run_uid: str) -> str:
    """``<run name>-jobnets-<run uid>``: unique per run (a re-created JobRun of the same name gets
    its own), the run's name cut so that the whole stays a valid object name."""
    suffix = f"-jobnets-{run_uid}"
    return run_name[: _NAME_MAX_LENGTH - len(suffix)].rstrip(".-") + suffix


def snapshot_configmap(run: Mapping[str, Any], data: str) -> dict[str, Any]:
    """The ConfigMap holding snapshot ``data`` of JobRun ``run`` (a body with apiVersion, kind
    and metadata): owned by the run, so it is deleted with it, and immutable."""
    meta = run["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": snapshot_configmap_name(meta["name"], meta["uid"]),
            "namespace": meta.get("namespace") or "default",
            "labels": {RUN_UID_LABEL: meta["uid"]},
            "ownerReferences": [
                {
                    "apiVersion": run["apiVersion"],
                    "kind": run["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "immutable": True,
        "binaryData": {SNAPSHOT_KEY: data},
    }


def snapshot_status(
    config_map: str, data: str, versions: Mapping[str, Mapping[str, Any]], jobnets: Mapping[str, JobNetSpec]
) -> JobNetSnapshotStatus:
    """The ``status.jobNetSnapshot`` of a run whose snapshot ``data`` of ``jobnets`` is stored in
    ConfigMap ``config_map``; ``versions``: JobNet name -> its ``metadata`` (resourceVersion, generation)."""
    size = len(base64.b64decode(data))
    if size > SNAPSHOT_MAX_BYTES:
        raise SnapshotError(
            f"the JobNet snapshot takes {size} bytes gzipped, more than a ConfigMap holds "
            f"({SNAPSHOT_MAX_BYTES}); JobNets {', '.join(sorted(jobnets))} are too large together"
        )
    return JobNetSnapshotStatus(
        config_map=config_map,
        key=SNAPSHOT_KEY,
        format=SNAPSHOT_FORMAT,
        sha256=snapshot_sha256(data),
        size_bytes=size,
        job_nets=[
            SnapshotJobNet(
                name=name,
                resource_version=versions.get(name, {}).get("resourceVersion"),
                generation=versions.get(name, {}).get("generation"),
            )
            for name in jobnets
        ],
    )
