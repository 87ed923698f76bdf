"""A run's state lives in the API, versioned: what a run's loop knows of its JobRun there.

The loop decides from one known version of the JobRun (its ``resourceVersion``, the annotations
and the status stored at that version) and writes the status only if the JobRun is still at that
version (:meth:`VersionedRun.write_status`, a conflict is HTTP 409). After a conflict it reads the
JobRun again (:meth:`VersionedRun.refresh`) and decides again, never acting on the old decision:
if only the metadata changed (a person's annotation, the operator's own removal of one) it
carries on from the new version; if the status changed under it (another writer), the loop
cannot trust its memory and resumes from the stored status (:class:`StatusChanged`).

A watch event moves the loop to the event's version only when the event's status is the one the
loop stored last: then the event is no older than the loop's last write, and its annotations go
with its version (:meth:`VersionedRun.observe`). An older event is ignored.

Applied steering requests are recorded in ``status.appliedSteering`` by the same write, and their
annotations removed afterwards only while unchanged (:mod:`jobnet.core.steering`).

:class:`FinishedRuns` remembers the runs whose loop finished, so that a late watch event of an
older version (the run still Running) starts no new loop: a finished run starts again only for a
steering request it has not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobnet.core.steering import RUN_ANNOTATIONS, STEERING_KINDS, plan_steering, recorded_steering, removal_patch
from jobnet.kube.client import JOBRUNS, Body, KubeClient

logger = logging.getLogger("jobnet.runtime")


class StatusChanged(Exception):
    """The JobRun's status changed under the loop (another writer): resume from ``body``."""

    def __init__(self, body: Body) -> None:
        super().__init__("the JobRun's status changed under its loop")
        self.body = body


def run_annotations(body: Mapping[str, Any]) -> dict[str, str]:
    """The annotations a run's loop reads, from a JobRun body."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {key: annotations[key] for key in RUN_ANNOTATIONS if key in annotations}


@dataclass
class VersionedRun:
    """The version of its JobRun a run's loop decides from (see the module docstring)."""

    client: KubeClient
    namespace: str
    name: str
    #: the version the next status write is conditional on
    resource_version: str | None
    #: the status stored at that version
    stored_status: Any
    #: the run's annotations at that version (those the loop reads)
    annotations: dict[str, str]

    @classmethod
    def of(cls, client: KubeClient, body: Mapping[str, Any]) -> VersionedRun:
        meta = body.get("metadata") or {}
        return cls(
            client,
            meta.get("namespace") or "default",
            meta["name"],
            meta.get("resourceVersion"),
            body.get("status"),
            run_annotations(body),
        )

    @property
    def recorded(self) -> dict[str, str]:
        """The steering requests applied so far (annotation -> identity), as stored."""
        return recorded_steering(self.stored_status)

    def _adopt(self, body: Mapping[str, Any]) -> bool:
        """Move to ``body``'s version; whether the annotations changed."""
        annotations = run_annotations(body)
        changed = annotations != self.annotations
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion")
        self.stored_status = body.get("status")
        self.annotations = annotations
        return changed

    def observe(self, body: Mapping[str, Any]) -> bool:
        """A watch event of the run: adopted when its status is the one stored last (so it is no
        older than the loop's last write). Whether the annotations changed."""
        if body.get("status") != self.stored_status:
            return False
        return self._adopt(body)

    async def refresh(self) -> None:
        """Read the JobRun again (after a conflict). Raises :class:`StatusChanged` when its status
        is no longer the one this loop stored, KubeApiError when it cannot be read."""
        body = await self.client.get_object(JOBRUNS, self.namespace, self.name)
        if body.get("status") != self.stored_status:
            raise StatusChanged(body)
        self._adopt(body)

    async def write_status(self, status: Mapping[str, Any]) -> None:
        """Merge-patch the status if the JobRun is still at :attr:`resource_version` (KubeApiError
        409 if not); the stored object's version and status become the known ones."""
        stored = await self.client.patch_status(
            JOBRUNS, self.namespace, self.name, status, resource_version=self.resource_version, answer=True
        )
        self._adopt(stored)

    def to_remove(self) -> tuple[str, ...]:
        """The steering annotations whose request is applied (recorded), still to be removed."""
        return plan_steering(self.annotations, self.recorded).done

    async def remove_applied(self, keys: tuple[str, ...]) -> None:
        """Remove the applied steering annotations ``keys`` (and their companions) if unchanged:
        KubeApiError 422 when a newer request was written meanwhile."""
        stored = await self.client.json_patch(
            JOBRUNS,
            self.namespace,
            self.name,
            removal_patch(self.annotations, keys),
            f"removing the applied {', '.join(keys)}",
        )
        if stored.get("status") == self.stored_status:
            self._adopt(stored)


@dataclass
class FinishedRun:
    resource_version: str | None
    #: the steering requests applied when the loop finished (annotation -> identity)
    recorded: dict[str, str]


@dataclass
class FinishedRuns:
    """The runs whose loop finished (by uid), so late watch events start no loop again."""

    runs: dict[str, FinishedRun] = field(default_factory=dict)

    def add(self, uid: str, version: VersionedRun) -> None:
        self.runs[uid] = FinishedRun(version.resource_version, version.recorded)

    def forget(self, uid: str) -> None:
        self.runs.pop(uid, None)

    def stale(self, uid: str, body: Mapping[str, Any]) -> bool:
        """Whether a watch event of a run without a loop is to be ignored: the run's loop finished
        and the event carries no steering request that loop had not applied. Logs why."""
        finished = self.runs.get(uid)
        if finished is None:
            return False
        recorded = {**recorded_steering(body.get("status")), **finished.recorded}
        if any(key in plan_steering(run_annotations(body), recorded).fresh for key in STEERING_KINDS):
            self.forget(uid)
            return False
        meta = body.get("metadata") or {}
        if meta.get("resourceVersion") != finished.resource_version:
            logger.info(
                "run=%s/%s ignoring a watch event of version %s (phase %s): the run finished at version %s "
                "and the event carries no new steering request",
                meta.get("namespace") or "default",
                meta.get("name"),
                meta.get("resourceVersion"),
                (body.get("status") or {}).get("phase"),
                finished.resource_version,
            )
        return True
