"""The edge of a JobRun's deletion (see :mod:`jobnet.core.deletion`): the finalizer on every run
the operator drives, the release once the run's loop has stopped its jobs, and the force
annotation.

A deleted run with a loop asks the loop to stop the whole run (``RunLoop.request_deletion``);
the loop ends once every job has ended, its kills answered and its records acknowledged, and
then :meth:`RunDeletions.release` removes the finalizer. A finished run is released at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobnet.core.deletion import (
    FINALIZER,
    add_finalizer_patch,
    forced_message,
    is_deleting,
    is_forced,
    job_places,
    remove_finalizer_patch,
    stored_job_places,
)
from jobnet.core.events import event_name
from jobnet.core.runstatus import decoded_status
from jobnet.core.states import RunPhase
from jobnet.kube.client import HTTP_NOT_FOUND, JOBRUNS, KubeApiError

if TYPE_CHECKING:
    from jobnet.kube.runtime import JobRunRuntime, RunLoop

logger = logging.getLogger("jobnet.deletion")

#: Tries of one finalizer removal (``api_retry_delay`` apart); then the next watch event tries again.
RELEASE_TRIES = 10
_ACTIVE = (RunPhase.PENDING, RunPhase.RUNNING, RunPhase.STUCK)


class RunDeletions:
    """Finalizers and deletions of the runtime's JobRuns."""

    def __init__(self, runtime: JobRunRuntime) -> None:
        self.runtime = runtime
        #: the latest body seen of each run being deleted (its finalizers, for the release)
        self.latest: dict[str, Mapping[str, Any]] = {}
        #: runs whose release is under way (one Event, one removal)
        self.releasing: dict[str, asyncio.Task[None]] = {}

    async def ensure_finalizer(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Put the finalizer on a run about to be driven: the run as stored then (the loop
        decides from that version), or None when the API failed (try again)."""
        meta = body["metadata"]
        ops = add_finalizer_patch(meta)
        if ops is None:
            return body
        try:
            return await self.runtime.client.json_patch(
                JOBRUNS, meta.get("namespace") or "default", meta["name"], ops, f"adding finalizer {FINALIZER}"
            )
        except KubeApiError as e:
            if e.status == HTTP_NOT_FOUND:
                return body  # gone already: its DELETED event ends everything
            logger.warning("run=%s/%s cannot add finalizer %s: %s", meta.get("namespace"), meta["name"], FINALIZER, e)
            return None

    async def observe(self, body: Mapping[str, Any], loop: RunLoop | None) -> bool:
        """A watch event of a run: True when it is being deleted and that is taken care of here
        (released, or forced: the caller does nothing else); False otherwise (a deleted run's
        loop is asked to stop the run; one without a loop that has jobs to stop gets one from
        the caller, and the loop stops them)."""
        meta = body["metadata"]
        if not is_deleting(meta):
            return False
        uid = meta["uid"]
        self.latest[uid] = body
        if uid in self.releasing:
            return True
        if is_forced(meta):
            stored = decoded_status(body.get("status") or {})
            places = job_places(loop.state) if loop is not None else stored_job_places(stored)
            if loop is not None and loop.task is not None:
                loop.task.cancel()
            self.release(body, "Warning", "DeletionForced", forced_message(places))
            return True
        if loop is not None:
            loop.request_deletion()
            return False
        status = body.get("status") or {}
        if status.get("phase") in _ACTIVE and status.get("reason") != "InvalidJobNet":
            return False
        self.release(body, "Normal", "Deleted", "the run has no job left running: the JobRun is released")
        return True

    def release(self, body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Post the Event and remove the finalizer (in the background, retried)."""
        uid = body["metadata"]["uid"]
        if uid not in self.releasing:
            task = asyncio.create_task(self._release(body, event_type, reason, message), name=f"release jobrun {uid}")
            self.releasing[uid] = task

    async def _release(self, body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        namespace, name, uid = meta.get("namespace") or "default", meta["name"], meta["uid"]
        log = logger.warning if event_type == "Warning" else logger.info
        log("run=%s/%s %s: %s", namespace, name, reason, message)
        # A run is released once: a second release (its finalizer removal failed) finds the Event posted.
        self.runtime.events.post(body, event_type, reason, message, name=event_name(name, uid, "released", reason))
        try:
            for _ in range(RELEASE_TRIES):
                ops = remove_finalizer_patch(self.latest.get(uid, body)["metadata"])
                if ops is None:
                    return
                try:
                    await self.runtime.client.json_patch(
                        JOBRUNS, namespace, name, ops, f"removing finalizer {FINALIZER}"
                    )
                except KubeApiError as e:
                    if e.status == HTTP_NOT_FOUND:
                        return
                    logger.warning("run=%s/%s cannot remove finalizer %s yet: %s", namespace, name, FINALIZER, e)
                    await asyncio.sleep(self.runtime.config.api_retry_delay)
                else:
                    logger.info("run=%s/%s finalizer %s removed: the JobRun goes", namespace, name, FINALIZER)
                    return
            logger.error(
                "run=%s/%s finalizer %s not removed; tried again at its next event", namespace, name, FINALIZER
            )
        finally:
            self.releasing.pop(uid, None)

    def released(self, uid: str) -> None:
        """The run is gone (its DELETED event)."""
        self.latest.pop(uid, None)

    def close(self) -> None:
        for task in list(self.releasing.values()):
            task.cancel()
