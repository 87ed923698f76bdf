"""Deletion as a real API server and its garbage collector do it: finalizers, ownerReferences and
the three propagation policies, seen through real kubectl, HTTP and watches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulator.test_emulator import call, watch
from tests.support.emulator import EmulatorServer, apply

pytestmark = pytest.mark.emulator

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def configmap(
    emulator: EmulatorServer,
    name: str,
    *owners: dict[str, Any],
    finalizers: tuple[str, ...] = (),
    block: bool = False,
) -> dict[str, Any]:
    """Create a ConfigMap owned by ``owners`` (stored objects); return it as stored."""
    meta: dict[str, Any] = {"name": name}
    if owners:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                **({"blockOwnerDeletion": True} if block else {}),
            }
            for owner in owners
        ]
    if finalizers:
        meta["finalizers"] = list(finalizers)
    apply(emulator, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}})
    stored = emulator.get("v1", "configmaps", "default", name)
    assert stored is not None
    return stored


def exists(emulator: EmulatorServer, name: str) -> bool:
    return emulator.get("v1", "configmaps", "default", name) is not None


def remove_finalizers(emulator: EmulatorServer, name: str) -> None:
    patch = json.dumps({"metadata": {"finalizers": None}})
    result = emulator.kubectl("patch", "configmap", name, "--type=merge", "-p", patch)
    assert result.rc == 0, result.stderr


def test_a_finalizer_holds_the_object_marked_until_it_is_removed(emulator: EmulatorServer) -> None:
    held = configmap(emulator, "held", finalizers=("example.dev/a", "example.dev/b"))
    version = held["metadata"]["resourceVersion"]

    deleted = emulator.kubectl("delete", "configmap", "held", "--wait=false")
    assert deleted.rc == 0, deleted.stderr
    marked = emulator.get("v1", "configmaps", "default", "held")
    assert marked is not None and marked["metadata"]["deletionTimestamp"].endswith("Z")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 0

    added = emulator.kubectl(
        "patch",
        "configmap",
        "held",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/finalizers/-","value":"x/c"}]',
    )
    assert added.rc == 1
    assert (
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, "
        'found new finalizers ["x/c"]' in added.stderr
    ), added.stderr
    assert emulator.kubectl("label", "configmap", "held", "still=works").rc == 0  # other updates do
    one_left = json.dumps({"metadata": {"finalizers": ["example.dev/b"]}})
    assert emulator.kubectl("patch", "configmap", "held", "--type=merge", "-p", one_left).rc == 0
    assert exists(emulator, "held")
    remove_finalizers(emulator, "held")
    assert not exists(emulator, "held")

    # what a watch from before the delete sees (replayed from the API's event log)
    _, events = watch(emulator, f"{CONFIGMAPS}?fieldSelector=metadata.name=held&resourceVersion={version}", 4)
    assert [event["type"] for event in events] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    assert all(event["object"]["metadata"].get("deletionTimestamp") for event in events)


def test_background_deletion_collects_the_dependents_after_the_owner(emulator: EmulatorServer) -> None:
    owner = configmap(emulator, "owner")
    other_owner = configmap(emulator, "other-owner")
    configmap(emulator, "child", owner)
    configmap(emulator, "grandchild", emulator.get("v1", "configmaps", "default", "child") or {})
    configmap(emulator, "shared", owner, other_owner)
    configmap(emulator, "finalized-child", owner, finalizers=("example.dev/keep",))
    since = emulator.get("v1", "configmaps", "default", "finalized-child")["metadata"]["resourceVersion"]  # type: ignore[index]

    assert emulator.kubectl("delete", "configmap", "owner").rc == 0

    assert not exists(emulator, "owner") and not exists(emulator, "child") and not exists(emulator, "grandchild")
    shared = emulator.get("v1", "configmaps", "default", "shared")
    assert shared is not None and [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["other-owner"]
    finalized = emulator.get("v1", "configmaps", "default", "finalized-child")
    assert finalized is not None and finalized["metadata"].get("deletionTimestamp")
    _, events = watch(emulator, f"{CONFIGMAPS}?resourceVersion={since}", 5, timeout=2)
    order = [(event["type"], event["object"]["metadata"]["name"]) for event in events]
    assert order[0] == ("DELETED", "owner")  # the owner first, then the collector's work
    assert {("DELETED", "child"), ("DELETED", "grandchild"), ("MODIFIED", "shared")} <= set(order)


def test_foreground_deletion_waits_for_blocking_dependents(emulator: EmulatorServer) -> None:
    owner = configmap(emulator, "owner")
    configmap(emulator, "quick", owner, block=True)
    configmap(emulator, "slow", owner, finalizers=("example.dev/cleanup",), block=True)

    assert emulator.kubectl("delete", "configmap", "owner", "--cascade=foreground", "--wait=false").rc == 0

    waiting = emulator.get("v1", "configmaps", "default", "owner")
    assert waiting is not None and waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert waiting["metadata"]["deletionTimestamp"]
    assert not exists(emulator, "quick")
    slow = emulator.get("v1", "configmaps", "default", "slow")
    assert slow is not None and slow["metadata"]["deletionTimestamp"]
    remove_finalizers(emulator, "slow")
    assert not exists(emulator, "slow") and not exists(emulator, "owner")


def test_a_foreground_deletion_does_not_wait_for_non_blocking_dependents(emulator: EmulatorServer) -> None:
    owner = configmap(emulator, "owner")
    configmap(emulator, "lingering", owner, finalizers=("example.dev/cleanup",))
    assert emulator.kubectl("delete", "configmap", "owner", "--cascade=foreground").rc == 0
    assert not exists(emulator, "owner")
    assert emulator.get("v1", "configmaps", "default", "lingering")["metadata"]["deletionTimestamp"]  # type: ignore[index]


def test_orphan_deletion_keeps_the_dependents_without_their_reference(emulator: EmulatorServer) -> None:
    owner = configmap(emulator, "owner")
    configmap(emulator, "child", owner)
    assert emulator.kubectl("delete", "configmap", "owner", "--cascade=orphan").rc == 0
    assert not exists(emulator, "owner")
    child = emulator.get("v1", "configmaps", "default", "child")
    assert child is not None and "ownerReferences" not in child["metadata"]


def test_propagation_from_the_query_and_a_bad_policy(emulator: EmulatorServer) -> None:
    owner = configmap(emulator, "owner")
    configmap(emulator, "child", owner)
    status, body = call(emulator, "DELETE", f"{CONFIGMAPS}/owner?propagationPolicy=Sideways")
    assert status == 422 and 'propagationPolicy: Unsupported value: "Sideways"' in body["message"]
    assert exists(emulator, "owner")
    status, _ = call(emulator, "DELETE", f"{CONFIGMAPS}/owner?propagationPolicy=Orphan")
    assert status == 200 and not exists(emulator, "owner") and exists(emulator, "child")
