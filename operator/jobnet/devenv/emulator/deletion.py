"""Deletion rules of a real API server and its garbage collector (pure: no storage).

An object with finalizers is only marked on delete (``deletionTimestamp``); it goes when its last
finalizer is removed. Dependents (objects whose ``metadata.ownerReferences`` name an owner's uid)
follow their owner as the DeleteOptions' ``propagationPolicy`` says: ``Background`` (the default:
the owner goes at once, the garbage collector deletes the dependents after it), ``Foreground``
(the owner waits, with the ``foregroundDeletion`` finalizer, until its dependents that block
owner deletion are gone) or ``Orphan`` (the ``orphan`` finalizer: the dependents lose their
reference to the owner and stay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BACKGROUND, FOREGROUND, ORPHAN = "Background", "Foreground", "Orphan"
#: The finalizers the garbage collector itself handles, by the policy that adds them.
GC_FINALIZERS = {FOREGROUND: "foregroundDeletion", ORPHAN: "orphan"}


class InvalidPolicy(ValueError):
    pass


def propagation_policy(options: Mapping[str, Any], query: Mapping[str, str]) -> str:
    """The propagation a delete asks for (DeleteOptions body, else the query; ``orphanDependents``
    is the deprecated spelling of Orphan)."""
    policy = options.get("propagationPolicy") or query.get("propagationPolicy")
    orphan = options.get("orphanDependents")
    if orphan is None and "orphanDependents" in query:
        orphan = query["orphanDependents"] == "true"
    if policy is not None and orphan is not None:
        raise InvalidPolicy(
            "orphanDependents: Invalid value: ...: orphanDependents and propagationPolicy cannot both be set"
        )
    if policy is None:
        return ORPHAN if orphan else BACKGROUND
    if policy not in (BACKGROUND, FOREGROUND, ORPHAN):
        raise InvalidPolicy(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"'
        )
    return str(policy)


def owner_references(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {str(ref["uid"]) for ref in owner_references(obj) if ref.get("uid")}


def blocks_owner(dependent: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether a foreground deletion of the owner waits for this dependent."""
    return any(ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion") for ref in owner_references(dependent))


def added_finalizers(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    before = set((old.get("metadata") or {}).get("finalizers") or [])
    return [name for name in (new.get("metadata") or {}).get("finalizers") or [] if name not in before]
