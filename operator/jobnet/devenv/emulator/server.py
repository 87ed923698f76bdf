"""The emulator served over real HTTP and HTTPS on 127.0.0.1 from a background thread."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import pathlib
import socket
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import yaml

from jobnet.devenv.emulator.api import REQUEST_SIZE_LIMIT, ApiEmulator
from jobnet.devenv.emulator.authorization import AUTHENTICATED_GROUP, Request, UserInfo
from jobnet.devenv.emulator.kube import Body
from jobnet.devenv.emulator.tls import loopback_certificate

#: Environment variable naming the first port of a block this process hands out in turn (see
#: :func:`free_port`); parallel test workers each get their own block.
PORT_BASE_VARIABLE = "JOBNET_PORT_BASE"
PORT_BLOCK_SIZE = 500
_next_port_offset = itertools.count()


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, for a server that binds it a moment later.

    A port the kernel picks (bind to 0, close) can be handed to another process before ours
    binds it, and kopf's webhook server binds with SO_REUSEPORT, so two servers could silently
    share a port. With ``JOBNET_PORT_BASE`` set (a block below the kernel's ephemeral range, one
    per parallel worker), ports are handed out in turn from that block instead, so no other
    process of ours can be given the same one.
    """
    base = os.environ.get(PORT_BASE_VARIABLE)
    if not base:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(PORT_BLOCK_SIZE):
        port = int(base) + next(_next_port_offset) % PORT_BLOCK_SIZE
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}..{int(base) + PORT_BLOCK_SIZE - 1} ({PORT_BASE_VARIABLE})")


@dataclass
class KubectlResult:
    rc: int
    stdout: str
    stderr: str


class EmulatorServer:
    """The emulator served over real HTTP on 127.0.0.1 from a background thread.

    Use as a context manager. Python helpers run their work on the emulator's loop,
    so tests never race with requests being served.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        load_crds: bool = True,
        history_limit: int = 10_000,
        kubeconfig: pathlib.Path | None = None,
    ) -> None:
        self.workdir = workdir
        #: written on start: the emulator's address, for kubectl and the operator.
        self.kubeconfig = kubeconfig or workdir / "kubeconfig.yaml"
        self.port = 0  # plain HTTP: no credentials needed, you are the admin
        self.secure_port = 0  # HTTPS: a bearer token says who you are, none makes you system:anonymous
        self.certificate = loopback_certificate()
        self.api = ApiEmulator(history_limit=history_limit)
        self._load_crds = load_crds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="k8s-emulator", daemon=True)
        self._http_server: aiohttp.web.Server | None = None
        self._listeners: list[asyncio.AbstractServer] = []

    # -- lifecycle --

    def __enter__(self) -> EmulatorServer:
        self._thread.start()
        if self._load_crds:
            self.call(self.api.load_crds)
        self._run(self._listen())
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_dict()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop_listening())
        self._run(self.api.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _listen(self) -> None:
        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
            # A real API server reads request bodies of up to 3 MiB (aiohttp's default is 1 MiB).
            return aiohttp.web.BaseRequest(
                message, payload, protocol, writer, task, self._loop, client_max_size=REQUEST_SIZE_LIMIT
            )

        self._http_server = aiohttp.web.Server(self.api, request_factory=make_request)
        plain = await self._loop.create_server(self._http_server, "127.0.0.1", self.port or 0, reuse_address=True)
        secure = await self._loop.create_server(
            self._http_server,
            "127.0.0.1",
            self.secure_port or 0,
            reuse_address=True,
            ssl=self.certificate.server_context(),
        )
        self._listeners = [plain, secure]
        self.port = plain.sockets[0].getsockname()[1]
        self.secure_port = secure.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._listeners:
            for listener in self._listeners:
                listener.close()
            self.api.close_watches()
            assert self._http_server is not None
            await self._http_server.shutdown(timeout=0.5)
            for connection in list(self._http_server.connections):
                connection.force_close()
            for listener in self._listeners:
                await listener.wait_closed()
            self._listeners = []

    def stop_serving(self) -> None:
        """Close the listeners and every connection (open watches end); the stored objects stay."""
        self._run(self._stop_listening())

    def resume_serving(self) -> None:
        """Listen again, on the same ports."""
        self._run(self._listen())

    def _run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a synchronous emulator method on the emulator's loop."""

        async def _call() -> Any:
            return fn(*args, **kwargs)

        return self._run(_call())

    # -- access --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secure_url(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    def kubeconfig_dict(self, namespace: str = "default", token: str | None = None) -> Body:
        """A kubeconfig for the emulator: the admin's (plain HTTP), or that of the holder of
        ``token`` (HTTPS: clients send tokens only over TLS)."""
        cluster: Body = {"server": self.url}
        if token is not None:
            authority = base64.b64encode(self.certificate.authority_pem).decode()
            cluster = {"server": self.secure_url, "certificate-authority-data": authority}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "preferences": {},
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "tester", "user": {"token": token or self.api.admin_token}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
            ],
        }

    def write_kubeconfig(self, path: pathlib.Path, token: str, namespace: str = "default") -> pathlib.Path:
        """Write a kubeconfig that authenticates with ``token`` (see :meth:`issue_token`)."""
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(namespace, token)))
        path.chmod(0o600)
        return path

    def issue_token(self, username: str, groups: Iterable[str] = ()) -> str:
        """A bearer token of the user ``username`` in ``groups`` (and ``system:authenticated``)."""
        user = UserInfo(username, (*groups, AUTHENTICATED_GROUP))
        token: str = self.call(self.api.access.issue_token, user)
        return token

    def access_log(self) -> set[tuple[str, Request]]:
        """What identities other than ``system:masters`` were allowed to do so far."""
        log: set[tuple[str, Request]] = self.call(lambda: set(self.api.access.access_log))
        return log

    def denial_log(self) -> set[tuple[str, Request]]:
        """What identities were refused so far."""
        log: set[tuple[str, Request]] = self.call(lambda: set(self.api.access.denial_log))
        return log

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 30.0, kubeconfig: pathlib.Path | None = None
    ) -> KubectlResult:
        """Run the real kubectl against the emulator (as the admin, or with another ``kubeconfig``)."""
        completed = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", "--request-timeout=20s", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(self.workdir)},
        )
        return KubectlResult(completed.returncode, completed.stdout, completed.stderr)

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Body | None:
        found: Body | None = self.call(self.api.get_object, api_version, plural, namespace, name)
        return found

    def list_objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[Body]:
        found: list[Body] = self.call(self.api.list_objects, api_version, plural, namespace)
        return found

    def put(self, obj: Body) -> Body:
        """Create or replace an object directly in storage (no admission)."""
        stored: Body = self.call(self.api.put_object, obj)
        return stored

    def remove(self, api_version: str, plural: str, namespace: str | None, name: str) -> None:
        """Delete an object directly in storage (no admission, no finalizers)."""
        self.call(self.api.remove_object, api_version, plural, namespace, name)

    def create_namespace(self, name: str) -> Body:
        return self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def events_for(self, namespace: str, name: str) -> list[Body]:
        return [
            e for e in self.list_objects("v1", "events", namespace) if e.get("involvedObject", {}).get("name") == name
        ]
