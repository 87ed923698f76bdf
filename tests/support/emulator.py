"""The Kubernetes API emulator lives in the product (``jobnet dev`` uses it); tests use it from here,
as :class:`EmulatorServer` with test-only fault injection (an outage, a stalled API, 503s on a
path or for the Events of some reasons, answers lost after the request was served, failed or
held annotation patches, one client cut off) built on the emulator's request interceptors, a
record of one client's requests, watch events of one object held back and released later in
order (:class:`HeldWatchEvents`), and with RBAC helpers: :func:`grant` and :func:`bind` give a
user, group or ServiceAccount permissions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp.web
import yaml

from jobnet.devenv import emulator as product
from jobnet.devenv.emulator import (  # noqa: F401 (re-exports)
    CRD_DIRS,
    ApiEmulator,
    ApiError,
    KubectlResult,
    free_port,
)


class EmulatorServer(product.EmulatorServer):
    """The emulator, plus faults a test can inject."""

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Make the API unreachable (connections closed, connects refused) inside the block."""
        self.stop_serving()
        try:
            yield
        finally:
            self.resume_serving()

    @contextlib.contextmanager
    def stall(self) -> Iterator[None]:
        """Accept connections but answer nothing inside the block (clients run into their timeouts)."""
        released = self.call(asyncio.Event)

        async def hold(raw: aiohttp.web.BaseRequest) -> None:
            await released.wait()

        self.call(self.api.interceptors.append, hold)
        try:
            yield
        finally:
            self.call(self.api.interceptors.remove, hold)
            self.call(released.set)

    @contextlib.contextmanager
    def failing_annotation_patches(self, path: str, count: int = 1_000) -> Iterator[list[int]]:
        """Inside the block, the next ``count`` JSON patches of ``metadata.annotations`` of the
        object at ``path`` (the operator's removal of applied steering annotations) are answered
        503; yields [how many were refused so far]. Merge patches (``kubectl annotate``) pass."""
        refused = [0]

        async def unavailable(raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
            if refused[0] >= count or not await _is_annotation_json_patch(raw, path):
                return None
            refused[0] += 1
            busy = ApiError(503, "ServiceUnavailable", f"the server is currently unable to handle the request ({path})")
            return aiohttp.web.json_response(busy.status(), status=busy.code)

        self.call(self.api.interceptors.append, unavailable)
        try:
            yield refused
        finally:
            self.call(self.api.interceptors.remove, unavailable)

    @contextlib.contextmanager
    def holding_annotation_patches(self, path: str) -> Iterator[list[int]]:
        """Inside the block, JSON patches of ``metadata.annotations`` of the object at ``path``
        wait (unanswered); at its end they are served, in order. Yields [how many wait]."""
        released = self.call(asyncio.Event)
        waiting = [0]

        async def hold(raw: aiohttp.web.BaseRequest) -> None:
            if await _is_annotation_json_patch(raw, path):
                waiting[0] += 1
                await released.wait()

        self.call(self.api.interceptors.append, hold)
        try:
            yield waiting
        finally:
            self.call(self.api.interceptors.remove, hold)
            self.call(released.set)

    def hold_watch_events(self, plural: str, name: str) -> HeldWatchEvents:
        """From now on, watch events of the object ``name`` (resource ``plural``) are held back
        (see :class:`HeldWatchEvents`)."""
        held = HeldWatchEvents(self, plural, name)
        self.call(self.api.store.watch_interceptors.append, held.take)
        return held

    @contextlib.contextmanager
    def cut_off(self, token: str) -> Iterator[None]:
        """The holder of ``token`` cannot reach the API inside the block (each of its requests
        finds its connection dropped); every other client can. Watches it had open go on."""

        async def drop(raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
            if raw.headers.get("Authorization") != f"Bearer {token}":
                return None
            if raw.transport is not None:
                raw.transport.abort()
            raise ConnectionResetError("cut off by the test")

        self.call(self.api.interceptors.append, drop)
        try:
            yield
        finally:
            self.call(self.api.interceptors.remove, drop)

    def record_requests(self, token: str) -> list[tuple[str, str]]:
        """From now on, (method, path) of every request the holder of ``token`` makes, in order
        (a list the emulator appends to)."""
        seen: list[tuple[str, str]] = []

        async def record(raw: aiohttp.web.BaseRequest) -> None:
            if raw.headers.get("Authorization") == f"Bearer {token}":
                seen.append((raw.method, raw.path))

        self.call(self.api.interceptors.insert, 0, record)
        return seen

    @contextlib.contextmanager
    def refusing_event_posts(self, *reasons: str) -> Iterator[list[int]]:
        """Inside the block, every post of an Event with one of ``reasons`` is answered 503 (the
        API server cannot take it; nothing is stored); yields [how many were refused so far]."""
        refused = [0]

        async def unavailable(raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
            if raw.method != "POST" or not raw.path.endswith("/events"):
                return None
            if json.loads(await raw.read()).get("reason") not in reasons:
                return None
            refused[0] += 1
            busy = ApiError(
                503, "ServiceUnavailable", f"the server is currently unable to handle the request ({raw.path})"
            )
            return aiohttp.web.json_response(busy.status(), status=busy.code)

        self.call(self.api.interceptors.append, unavailable)
        try:
            yield refused
        finally:
            self.call(self.api.interceptors.remove, unavailable)

    def lose_answers(self, method: str, path: str, count: int) -> list[int]:
        """The next ``count`` ``method`` requests for ``path`` are served (stored) but their
        answer is lost: the connection drops before it is sent. Returns [how many were lost]."""
        lost = [0]

        async def serve_then_drop(raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
            if raw.method != method or raw.path != path or lost[0] >= count:
                return None
            lost[0] += 1
            with contextlib.suppress(ApiError):  # a refusal's answer is lost the same way
                await self.api._dispatch(raw, await raw.read())
            if raw.transport is not None:
                raw.transport.abort()
            raise ConnectionResetError("answer lost (test fault)")

        self.call(self.api.interceptors.append, serve_then_drop)
        return lost

    def fail_next(self, path: str, count: int) -> None:
        """The next ``count`` requests for ``path`` are answered 503 ServiceUnavailable (an overloaded API)."""
        left = [count]

        async def unavailable(raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
            if raw.path != path or left[0] <= 0:
                return None
            left[0] -= 1
            if left[0] == 0:
                self.api.interceptors.remove(unavailable)
            busy = ApiError(503, "ServiceUnavailable", f"the server is currently unable to handle the request ({path})")
            return aiohttp.web.json_response(busy.status(), status=busy.code)

        self.call(self.api.interceptors.append, unavailable)


async def _is_annotation_json_patch(raw: aiohttp.web.BaseRequest, path: str) -> bool:
    """Whether ``raw`` is a JSON patch of ``path`` touching ``metadata.annotations``."""
    if raw.method != "PATCH" or raw.path != path or raw.content_type != "application/json-patch+json":
        return False
    operations = json.loads(await raw.read())  # aiohttp keeps the body for the emulator
    return any(str(op.get("path", "")).startswith("/metadata/annotations") for op in operations)


class HeldWatchEvents:
    """Watch events of one object held back by the emulator: while :attr:`capturing`, each event
    of the object is kept instead of sent; :meth:`stop_capturing` lets new events through again
    (the held ones stay held), :meth:`release` then sends the held ones, in their order, to the
    watchers, late: older versions after newer ones."""

    def __init__(self, server: EmulatorServer, plural: str, name: str) -> None:
        self.server = server
        self.plural = plural
        self.name = name
        self.capturing = True
        self._lock = threading.Lock()
        self._held: list[tuple[Any, dict[str, Any], bytes]] = []

    def take(self, rkey: Any, obj: dict[str, Any], line: bytes) -> bool:
        if not self.capturing or rkey[2] != self.plural or obj.get("metadata", {}).get("name") != self.name:
            return False
        with self._lock:
            self._held.append((rkey, obj, line))
        return True

    @property
    def held(self) -> list[dict[str, Any]]:
        """The objects of the events held so far, oldest first."""
        with self._lock:
            return [obj for _, obj, _ in self._held]

    def stop_capturing(self) -> None:
        self.capturing = False
        self.server.call(self.server.api.store.watch_interceptors.remove, self.take)

    def release(self) -> int:
        """Send the held events in order; how many."""
        if self.capturing:
            self.stop_capturing()
        with self._lock:
            held, self._held = self._held, []

        def deliver() -> None:
            for rkey, obj, line in held:
                self.server.api.store.deliver(rkey, obj, line)

        self.server.call(deliver)
        return len(held)


RBAC_GROUP = "rbac.authorization.k8s.io"


def subjects(
    users: Iterable[str] = (), groups: Iterable[str] = (), service_accounts: Iterable[str] = ()
) -> list[dict[str, str]]:
    """RBAC subjects; a ServiceAccount is ``namespace:name``."""
    found = [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user} for user in users]
    found += [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group} for group in groups]
    for account in service_accounts:
        namespace, _, name = account.partition(":")
        found.append({"kind": "ServiceAccount", "name": name, "namespace": namespace})
    return found


def apply(emulator: EmulatorServer, *manifests: dict[str, Any]) -> None:
    """``kubectl apply`` as the admin, which must succeed."""
    result = emulator.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    assert result.rc == 0, f"kubectl apply failed: {result.stderr}"


def bind(
    emulator: EmulatorServer,
    name: str,
    role: str,
    subjects: list[dict[str, str]],
    *,
    role_kind: str = "ClusterRole",
    namespace: str | None = "default",
) -> None:
    """A RoleBinding ``name`` in ``namespace`` (a ClusterRoleBinding if None) of ``role`` to ``subjects``."""
    apply(
        emulator,
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role},
            "subjects": subjects,
        },
    )


def grant(
    emulator: EmulatorServer,
    name: str,
    rules: Iterable[dict[str, Any]],
    *,
    users: Iterable[str] = (),
    groups: Iterable[str] = (),
    service_accounts: Iterable[str] = (),
    namespace: str | None = "default",
) -> None:
    """A Role ``name`` in ``namespace`` (a ClusterRole if None) with ``rules``, bound to the subjects."""
    role_kind = "Role" if namespace else "ClusterRole"
    scope = {"namespace": namespace} if namespace else {}
    apply(
        emulator,
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": role_kind,
            "metadata": {"name": name, **scope},
            "rules": list(rules),
        },
    )
    bind(emulator, name, name, subjects(users, groups, service_accounts), role_kind=role_kind, namespace=namespace)
