"""The Kubernetes API emulator lives in the product (``jobnet dev`` uses it); tests use it from here,
as :class:`EmulatorServer` with test-only fault injection (an outage, a stalled API, 503s on a
path, one client cut off) and a record of one client's requests, built on the emulator's request
interceptors, and with RBAC helpers: :func:`grant` and :func:`bind` give a user, group or
ServiceAccount permissions."""

from __future__ import annotations

import asyncio
import contextlib
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
