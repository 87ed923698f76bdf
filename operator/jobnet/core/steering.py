"""Steering identity: each override and stop is applied at most once, whatever fails around it.

A person's ``jobnet.dev/override`` or ``jobnet.dev/stop`` is a one-time request. The operator's
mutating admission webhook stamps each one it sees added or changed with a fresh identity
(``jobnet.dev/override-id`` / ``jobnet.dev/stop-id``, :func:`identity_stamps`), next to who set it.
The run's loop records the identity of every request it applies in ``status.appliedSteering``, in
the same versioned status write that applies it; only then does it remove the annotations, with a
JSON patch whose ``test`` operations make the removal fail if a newer request was written
meanwhile (:func:`removal_patch`). So after any failure (the removal refused, the operator killed
between the two writes) an annotation whose identity is already recorded is only removed, never
applied again (:func:`plan_steering`), and a newer request is never dropped.

An annotation without an identity (set while the webhook was not called, e.g. with
``failurePolicy: Ignore``) is identified by a digest of its text: the same text written again
after it was applied counts as the same request until the annotation is removed.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    OVERRIDE_BY_ANNOTATION,
    OVERRIDE_MESSAGE_ANNOTATION,
    STOP_ANNOTATION,
    STOP_BY_ANNOTATION,
    steering_stamps,
)

OVERRIDE_ID_ANNOTATION = "jobnet.dev/override-id"
STOP_ID_ANNOTATION = "jobnet.dev/stop-id"
#: Each steering annotation and the annotation holding its identity.
IDENTITY_ANNOTATIONS = {OVERRIDE_ANNOTATION: OVERRIDE_ID_ANNOTATION, STOP_ANNOTATION: STOP_ID_ANNOTATION}
#: Each steering annotation and its name in ``status.appliedSteering``.
STEERING_KINDS = {OVERRIDE_ANNOTATION: "override", STOP_ANNOTATION: "stop"}
#: Each steering annotation and what goes with it (read with it, removed with it).
COMPANIONS = {
    OVERRIDE_ANNOTATION: (OVERRIDE_MESSAGE_ANNOTATION, OVERRIDE_BY_ANNOTATION, OVERRIDE_ID_ANNOTATION),
    STOP_ANNOTATION: (STOP_BY_ANNOTATION, STOP_ID_ANNOTATION),
}
#: Every annotation the run's loop reads.
RUN_ANNOTATIONS = tuple(key for steering, companions in COMPANIONS.items() for key in (steering, *companions))


def identity_of(annotations: Mapping[str, str], key: str) -> str | None:
    """The identity of the request in steering annotation ``key`` (None when there is none)."""
    if key not in annotations:
        return None
    stamped = annotations.get(IDENTITY_ANNOTATIONS[key])
    if stamped:
        return stamped
    return "text-" + hashlib.sha256(annotations[key].encode()).hexdigest()[:16]


def identity_stamps(old: Mapping[str, str], new: Mapping[str, str], fresh: str) -> dict[str, str | None]:
    """The changes that make ``new``'s identity annotations true (key -> value, None = remove).

    A steering annotation the update adds or changes gets the identity ``fresh`` (a new request);
    an unchanged one keeps the identity it had (nobody rewrites it); without the steering
    annotation there is no identity. As :func:`jobnet.core.annotations.requester_stamps`, only
    the differences from ``new`` are returned."""
    return steering_stamps(old, new, IDENTITY_ANNOTATIONS, fresh)


def recorded_steering(status: Mapping[str, Any] | None) -> dict[str, str]:
    """``status.appliedSteering`` as steering annotation -> identity of the last request applied."""
    applied = (status or {}).get("appliedSteering") or {}
    return {key: applied[kind] for key, kind in STEERING_KINDS.items() if isinstance(applied.get(kind), str)}


def applied_status(recorded: Mapping[str, str]) -> dict[str, str]:
    """The ``status.appliedSteering`` that records ``recorded`` (annotation -> identity)."""
    return {kind: recorded[key] for key, kind in STEERING_KINDS.items() if key in recorded}


@dataclass(frozen=True)
class SteeringPlan:
    """What one round does with the run's steering annotations."""

    #: the annotations of requests not applied yet (each with its companions), for the scheduler
    fresh: dict[str, str]
    #: the steering annotations whose request is already applied: only to be removed
    done: tuple[str, ...]

    def recorded_after(self, recorded: Mapping[str, str], consumed: tuple[str, ...]) -> dict[str, str]:
        """The record once the scheduler consumed (applied or refused) ``consumed`` of :attr:`fresh`."""
        after = dict(recorded)
        for key in STEERING_KINDS:
            if key in consumed:
                identity = identity_of(self.fresh, key)
                assert identity is not None  # consumed keys come from fresh
                after[key] = identity
        return after


def plan_steering(annotations: Mapping[str, str], recorded: Mapping[str, str]) -> SteeringPlan:
    """Split the run's annotations into requests to apply and applied ones to remove."""
    fresh: dict[str, str] = {}
    done: list[str] = []
    for key, companions in COMPANIONS.items():
        identity = identity_of(annotations, key)
        if identity is None:
            continue
        if recorded.get(key) == identity:
            done.append(key)
            continue
        for name in (key, *companions):
            if name in annotations:
                fresh[name] = annotations[name]
    return SteeringPlan(fresh=fresh, done=tuple(done))


def _pointer(key: str) -> str:
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def removal_patch(annotations: Mapping[str, str], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) removing the steering annotations ``keys`` and their companions,
    each only if it still has the value in ``annotations`` (a ``test`` first): an API server
    refuses the whole patch (HTTP 422) when a newer request was written meanwhile."""
    names = [name for key in keys for name in (key, *COMPANIONS[key]) if name in annotations]
    tests = [{"op": "test", "path": _pointer(name), "value": annotations[name]} for name in names]
    return tests + [{"op": "remove", "path": _pointer(name)} for name in names]
