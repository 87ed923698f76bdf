"""The emulator's storage: objects by key with increasing resourceVersions, the event log and the
watchers (watch replays from a resourceVersion), and the garbage collector (see deletion.py)."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from jobnet.devenv.emulator import deletion
from jobnet.devenv.emulator.kube import (
    ApiError,
    Body,
    ObjectKey,
    ResourceKey,
    clone,
    field_selector_matches,
    label_selector_matches,
    now_text,
)


@dataclass(eq=False)
class Watcher:
    resource: ResourceKey
    namespace: str | None
    name: str | None
    label_selector: str
    field_selector: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    def wants(self, obj: Body) -> bool:
        meta = obj.get("metadata", {})
        return (
            (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and (not self.label_selector or label_selector_matches(self.label_selector, meta.get("labels") or {}))
            and (not self.field_selector or field_selector_matches(self.field_selector, obj))
        )


#: Called after every stored change with (resource, object, deleted).
ChangeHook = Callable[[ResourceKey, Body, bool], None]
#: Called with each watch event (resource, object, the event's line) before it goes to the watchers;
#: True takes it (a test's fault that delivers it later with :meth:`Store.deliver`).
WatchInterceptor = Callable[[ResourceKey, Body, bytes], bool]


class Store:
    """Objects in memory, as etcd and the API server's watch cache hold them."""

    def __init__(self, history_limit: int, history_bytes: int, on_change: ChangeHook) -> None:
        self.history_limit = history_limit  # watch events kept per resource for ?resourceVersion= replays
        self.history_bytes = history_bytes  # and at most this many bytes of them
        self.on_change = on_change
        self.objects: dict[ObjectKey, Body] = {}
        self.by_resource: dict[ResourceKey, set[ObjectKey]] = collections.defaultdict(set)
        self.revision = 1
        # Watch events as sent (one JSON line each), kept for ?resourceVersion= replays. Serialised
        # once: big objects (a JobRun status near the etcd limit) are neither copied per watcher nor
        # kept alive as dicts, and the log's memory is bounded in bytes as well as in count.
        self._log: dict[ResourceKey, collections.deque[tuple[int, bytes]]] = {}
        self._log_bytes: dict[ResourceKey, int] = collections.defaultdict(int)
        self._log_floor: dict[ResourceKey, int] = {}
        self.watchers: dict[ResourceKey, set[Watcher]] = collections.defaultdict(set)
        self.watch_interceptors: list[WatchInterceptor] = []
        # the garbage collector's graph: uid -> object, owner uid -> dependents
        self._uids: dict[str, ObjectKey] = {}
        self._dependents: dict[str, set[ObjectKey]] = collections.defaultdict(set)

    def bump(self, obj: Body) -> Body:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        return obj

    def commit(self, rkey: ResourceKey, namespace: str | None, name: str, obj: Body, event: str) -> Body:
        self.bump(obj)
        key = (rkey, namespace, name)
        self._index_owners(key, self.objects.get(key), obj)
        self.objects[key] = obj
        self.by_resource[rkey].add(key)
        self.emit(rkey, event, obj)
        self.on_change(rkey, obj, False)
        return obj  # stored as is: callers serialise it, never change it

    def drop(self, key: ObjectKey, obj: Body) -> Body:
        """Remove a stored object; ``obj`` (the stored one or its final version) is sent as DELETED.
        Then the garbage collector: dependents follow (background), a waiting owner may go."""
        rkey = key[0]
        self.by_resource[rkey].discard(key)
        self._index_owners(key, self.objects.pop(key), None)
        self.emit(rkey, "DELETED", self.bump(obj))
        self.on_change(rkey, obj, True)
        for owner in deletion.owner_uids(obj):
            if owner in self._uids:
                self._release_foreground(self._uids[owner])
        for dependent in sorted(self._dependents.pop(obj["metadata"].get("uid", ""), ())):
            self._collect(dependent)
        return obj

    # -- deletion and garbage collection (see deletion.py) --

    def _index_owners(self, key: ObjectKey, old: Body | None, new: Body | None) -> None:
        if old is not None:
            self._uids.pop(old["metadata"].get("uid", ""), None)
            for owner in deletion.owner_uids(old):
                self._dependents[owner].discard(key)
        if new is not None:
            self._uids[new["metadata"]["uid"]] = key
            for owner in deletion.owner_uids(new):
                self._dependents[owner].add(key)

    def delete(self, key: ObjectKey, policy: str) -> Body:
        """Delete a stored object: mark it if finalizers hold it (the garbage collector's own for
        Foreground and Orphan included), else remove it."""
        old = self.objects[key]
        if old["metadata"].get("deletionTimestamp"):
            return old
        finalizers = list(old["metadata"].get("finalizers") or [])
        collector = deletion.GC_FINALIZERS.get(policy)
        if collector is not None and collector not in finalizers:
            finalizers.append(collector)
        if not finalizers:
            return self.drop(key, old)
        marked: Body = clone(old)
        marked["metadata"].update(deletionTimestamp=now_text(), deletionGracePeriodSeconds=0, finalizers=finalizers)
        self.commit(*key, marked, "MODIFIED")
        if policy == deletion.ORPHAN:
            for dependent in sorted(self._dependents.get(marked["metadata"]["uid"], ())):
                self._drop_owner_references(dependent, {marked["metadata"]["uid"]})
            self._remove_finalizer(key, deletion.GC_FINALIZERS[deletion.ORPHAN])
        elif policy == deletion.FOREGROUND:
            for dependent in sorted(self._dependents.get(marked["metadata"]["uid"], ())):
                if dependent in self.objects:
                    self.delete(dependent, deletion.FOREGROUND)
            if key in self.objects:
                self._release_foreground(key)
        return self.objects.get(key, marked)

    def _release_foreground(self, key: ObjectKey) -> None:
        """A foreground deletion ends when no dependent that blocks its owner is left."""
        owner = self.objects.get(key)
        finalizer = deletion.GC_FINALIZERS[deletion.FOREGROUND]
        if owner is None or finalizer not in (owner["metadata"].get("finalizers") or []):
            return
        uid = owner["metadata"]["uid"]
        if not any(deletion.blocks_owner(self.objects[d], uid) for d in self._dependents.get(uid, ())):
            self._remove_finalizer(key, finalizer)

    def _remove_finalizer(self, key: ObjectKey, finalizer: str) -> None:
        updated = clone(self.objects[key])
        updated["metadata"]["finalizers"] = [f for f in updated["metadata"]["finalizers"] if f != finalizer]
        if not updated["metadata"]["finalizers"]:
            del updated["metadata"]["finalizers"]
            self.drop(key, updated)
        else:
            self.commit(*key, updated, "MODIFIED")

    def _drop_owner_references(self, key: ObjectKey, owners: set[str]) -> None:
        updated = clone(self.objects[key])
        references = [r for r in deletion.owner_references(updated) if r.get("uid") not in owners]
        if references:
            updated["metadata"]["ownerReferences"] = references
        else:
            del updated["metadata"]["ownerReferences"]
        self.commit(*key, updated, "MODIFIED")

    def _collect(self, key: ObjectKey) -> None:
        """The garbage collector on a dependent whose owner went: deleted when none of its owners
        is left, else only the references to the missing owners are removed."""
        dependent = self.objects.get(key)
        if dependent is None:
            return
        owners = deletion.owner_uids(dependent)
        missing = {owner for owner in owners if owner not in self._uids}
        if missing == owners:
            self.delete(key, deletion.BACKGROUND)
        elif missing:
            self._drop_owner_references(key, missing)

    def emit(self, rkey: ResourceKey, event_type: str, obj: Body) -> None:
        line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
        log = self._log.setdefault(rkey, collections.deque())
        log.append((self.revision, line))
        self._log_bytes[rkey] += len(line)
        while len(log) > self.history_limit or (len(log) > 1 and self._log_bytes[rkey] > self.history_bytes):
            revision, dropped = log.popleft()
            self._log_floor[rkey] = revision
            self._log_bytes[rkey] -= len(dropped)
        if not any(intercept(rkey, obj, line) for intercept in list(self.watch_interceptors)):
            self.deliver(rkey, obj, line)

    def deliver(self, rkey: ResourceKey, obj: Body, line: bytes) -> None:
        """Send a watch event to the watchers of ``rkey`` that want ``obj``."""
        for watcher in list(self.watchers.get(rkey, ())):
            if watcher.wants(obj):
                watcher.queue.put_nowait(line)

    def objects_of(self, rkey: ResourceKey, namespace: str | None) -> list[Body]:
        keys = sorted(k for k in self.by_resource.get(rkey, ()) if namespace is None or k[1] == namespace)
        return [self.objects[k] for k in keys]

    def get_or_404(self, rkey: ResourceKey, namespace: str | None, name: str | None) -> Body:
        obj = self.objects.get((rkey, namespace, name or ""))
        if obj is None:
            group = f".{rkey[0]}" if rkey[0] else ""
            raise ApiError(
                404,
                "NotFound",
                f'{rkey[2]}{group} "{name}" not found',
                {"name": name, "group": rkey[0], "kind": rkey[2]},
            )
        return obj  # the stored object: read it, never change it

    # -- watches --

    def subscribe(self, watcher: Watcher, since: str) -> list[bytes]:
        """Subscribe ``watcher``; returns the events it must see first: the current objects (no
        ``since``), or the log's events after ``since`` (an ERROR 410 if the log no longer has them).
        No await in between: no lost events."""
        rkey = watcher.resource
        backlog: list[bytes]
        if since in ("", "0"):
            backlog = [
                json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n"
                for obj in self.objects_of(rkey, watcher.namespace)
                if watcher.wants(obj)
            ]
        elif not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")
        elif int(since) < self._log_floor.get(rkey, 0):
            expired = ApiError(410, "Expired", f"too old resource version: {since} ({self._log_floor[rkey]})")
            backlog = [json.dumps({"type": "ERROR", "object": expired.status()}).encode() + b"\n"]
        else:
            backlog = [
                line
                for revision, line in self._log.get(rkey, ())
                if revision > int(since) and watcher.wants(json.loads(line)["object"])
            ]
        self.watchers[rkey].add(watcher)
        return backlog

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers[watcher.resource].discard(watcher)

    def close_watches(self) -> None:
        for watchers in self.watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(None)
