"""All of the operator's own Kubernetes API I/O, in one place (like kopf's ``_cogs/clients``).

kopf does the watching (but of JobSchedules and JobCalendars: ``jobnet.kube.objectwatch``), the
handler bookkeeping and the Events it posts itself; everything else the operator reads or writes
goes through :class:`KubeClient`: the namespace's JobNets
(for validation and expansion), status patches of JobRuns and JobNets, and Events.

Credentials come from the same kopf login as the rest of the operator (a service account
in-cluster, a kubeconfig outside), and are never logged: error messages name the request,
never a token.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import aiohttp
import kopf

from jobnet.core.models import API_GROUP, API_VERSION, JobNetSpec
from jobnet.core.snapshot import decode_snapshot
from jobnet.core.status import JobNetSnapshotStatus
from jobnet.core.validation import Problem, parse_jobnet
from jobnet.metrics import operator_metrics

JOBNETS = "jobnets"
JOBRUNS = "jobruns"
JOBSCHEDULES = "jobschedules"
JOBCALENDARS = "jobcalendars"
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
#: a JSON patch whose ``test`` failed (the object changed since it was read)
HTTP_UNPROCESSABLE = 422
Body = dict[str, Any]


#: Posts of an Event whose generated name was taken, before giving up.
_GENERATED_NAME_TRIES = 3


REPORTING_COMPONENT = "jobnet-operator"


def reporting_instance() -> str:
    """This replica's name in Events: its pod name (``POD_ID``, set by the chart), else the host name."""
    return os.environ.get("POD_ID") or socket.gethostname()


class Gate(Protocol):
    """Asked right before every write on the leader's behalf (``jobnet.kube.leadership.LeaderGate``)."""

    def check(self, what: str) -> None:
        """Raise a :class:`KubeApiError` when this replica may not write now."""


class _Open:
    """The gate of a client that never acts for the leader (a test's, a CLI's): every write allowed."""

    def check(self, what: str) -> None:
        pass


class KubeApiError(Exception):
    """The API server refused a request (or could not be reached); says which request."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        super().__init__(f"{what}: {f'HTTP {status}: ' if status else ''}{detail}")
        self.status = status


@dataclass(frozen=True)
class Timeouts:
    """Deadlines of the operator's own API requests, in seconds."""

    connect: float = 10.0
    request: float = 30.0


@dataclass(frozen=True)
class NamespaceJobNets:
    """The JobNets of one namespace: those that parse, the problems of those that do not, the
    status each has now, and the version of each (``resourceVersion`` and ``generation``)."""

    catalog: dict[str, JobNetSpec]
    broken: dict[str, list[Problem]]
    statuses: dict[str, dict[str, Any]]
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)


#: A path as kopf's ConnectionInfo and ssl take it.
FilePath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if not info.server.startswith("https://"):
        return False
    context = ssl.create_default_context(
        cafile=info.ca_path,
        cadata=base64.b64decode(info.ca_data).decode() if info.ca_data else None,
    )
    # ssl wants files for client certificates; data from a kubeconfig goes to private temp files.
    with tempfile.NamedTemporaryFile("wb") as cert, tempfile.NamedTemporaryFile("wb") as key:
        cert_path = _file_of(info.certificate_data, info.certificate_path, cert)
        if cert_path is not None:
            context.load_cert_chain(cert_path, _file_of(info.private_key_data, info.private_key_path, key))
    return context


def _file_of(data: str | bytes | None, path: FilePath | None, spill: IO[bytes]) -> FilePath | None:
    """Where ssl reads a kubeconfig's ``*-data`` (base64; written to ``spill``) or ``*-path``."""
    if not data:
        return path
    spill.write(base64.b64decode(data))
    spill.flush()
    return spill.name


class KubeClient:
    """A small async client for the operator's own requests (see the module docstring)."""

    def __init__(self, timeouts: Timeouts = Timeouts(), instance: str | None = None) -> None:
        #: the ``reportingInstance`` of our Events: which replica (pod) said it
        self.instance = instance or reporting_instance()
        #: asked before every write except the Lease's and the webhook certificate's, which
        #: every replica makes (see ``jobnet.kube.leadership``)
        self.gate: Gate = _Open()
        self._timeout = aiohttp.ClientTimeout(total=timeouts.request, sock_connect=timeouts.connect)
        self._server = ""
        self._headers: dict[str, str] = {}
        self._ssl: ssl.SSLContext | bool = False
        self._session: aiohttp.ClientSession | None = None
        #: each namespace's JobNets as last listed, parsed: name -> ((uid, resourceVersion), spec or problems)
        self._parsed: dict[str, dict[str, tuple[tuple[Any, Any], JobNetSpec | list[Problem]]]] = {}
        self._connected = asyncio.Event()

    async def connect(self, info: kopf.ConnectionInfo) -> None:
        """Use these credentials from now on (called at every kopf login, also re-logins)."""
        await self.close()
        self._server = info.server.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if info.token:
            self._headers["Authorization"] = f"Bearer {info.token}"
        elif info.username and info.password:
            basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._ssl = _ssl_context(info)
        self._connected.set()

    async def logged_in(self) -> None:
        """Return once :meth:`connect` was called (kopf has logged in)."""
        await self._connected.wait()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any = None,
        content_type: str = "application/json",
        answer: bool = True,
        leader_only: bool = True,
    ) -> Body:
        """The answer's body (``answer=False``: {} on success; a write's answer is the whole
        object, which for a large run is costly to decode and nobody reads). A write is made
        only while :attr:`gate` allows it (``leader_only=False``: by any replica)."""
        if not self._server:
            raise KubeApiError(what, None, "not logged in to the API server yet")
        if method != "GET" and leader_only:
            self.gate.check(what)
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        try:
            async with self._session.request(
                method,
                f"{self._server}{path}",
                json=json,
                ssl=self._ssl,
                headers={"Content-Type": content_type} if json is not None else None,
            ) as response:
                if not answer and response.status < 400:
                    await response.read()  # consumed, so the connection goes back to the pool
                    return {}
                payload = await response.json(content_type=None)
                if response.status >= 400:
                    message = payload.get("message") if isinstance(payload, dict) else None
                    raise KubeApiError(what, response.status, message or response.reason or "request failed")
                return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as e:
            raise KubeApiError(what, None, f"the API server is unreachable ({type(e).__name__}: {e})") from None

    @staticmethod
    def _path(plural: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{plural}"
        return path + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")

    async def list_jobnets(self, namespace: str) -> NamespaceJobNets:
        """The namespace's JobNets, parsed; a JobNet whose spec does not parse is in ``broken``.
        Always read from the API server; a JobNet listed at the same uid and resourceVersion as
        at the namespace's last list is not parsed again (the same version is the same spec)."""
        reply = await self._request("GET", self._path(JOBNETS, namespace), f"listing JobNets in {namespace!r}")
        catalog: dict[str, JobNetSpec] = {}
        broken: dict[str, list[Problem]] = {}
        statuses: dict[str, dict[str, Any]] = {}
        versions: dict[str, dict[str, Any]] = {}
        known, parsed_now = self._parsed.get(namespace, {}), {}
        for item in reply.get("items", []):
            meta = item.get("metadata", {})
            name = meta.get("name", "")
            statuses[name] = item.get("status") or {}
            versions[name] = {"resourceVersion": meta.get("resourceVersion"), "generation": meta.get("generation")}
            version = (meta.get("uid"), meta.get("resourceVersion"))
            cached = known.get(name)
            same = cached is not None and cached[0] == version and all(version)
            parsed = cached[1] if cached is not None and same else parse_jobnet(item.get("spec"))
            parsed_now[name] = (version, parsed)
            if isinstance(parsed, JobNetSpec):
                catalog[name] = parsed
            else:
                broken[name] = parsed
        self._parsed[namespace] = parsed_now
        return NamespaceJobNets(catalog, broken, statuses, versions)

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
        answer: bool = False,
    ) -> Body:
        """Merge-patch the status subresource of a JobNet or JobRun; with ``resource_version``
        only if the object is still at that version (HTTP 409 Conflict otherwise). ``answer``:
        return the object as stored (else {})."""
        operator_metrics.api_write(plural)
        body: Body = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._request(
            "PATCH",
            self._path(plural, namespace, name, "status"),
            f"patching the status of {plural}/{name}",
            json=body,
            content_type="application/merge-patch+json",
            answer=answer,
        )

    async def get_object(self, plural: str, namespace: str, name: str) -> Body:
        """One of our objects as stored now."""
        return await self._request("GET", self._path(plural, namespace, name), f"reading {plural}/{name}")

    async def json_patch(self, plural: str, namespace: str, name: str, operations: list[Body], what: str) -> Body:
        """Apply a JSON patch (RFC 6902) to the object; a failed ``test`` is HTTP 422
        (:data:`HTTP_UNPROCESSABLE`). The object as stored."""
        operator_metrics.api_write(plural)
        return await self._request(
            "PATCH",
            self._path(plural, namespace, name),
            f"{what} of {plural}/{name}",
            json=operations,
            content_type="application/json-patch+json",
        )

    async def list_objects(self, plural: str, namespace: str | None, label_selector: str | None = None) -> list[Body]:
        """The namespace's objects of one of our kinds (None: of every namespace;
        ``label_selector``: only those matching)."""
        return (await self.list_versioned(plural, namespace, label_selector))[0]

    async def list_versioned(
        self, plural: str, namespace: str | None, label_selector: str | None = None
    ) -> tuple[list[Body], str]:
        """:meth:`list_objects` and the list's resourceVersion (where a watch of them starts)."""
        query = f"?labelSelector={label_selector}" if label_selector else ""
        where = f"in {namespace!r}" if namespace else "in all namespaces"
        reply = await self._request("GET", self._collection(plural, namespace) + query, f"listing {plural} {where}")
        return list(reply.get("items", [])), str((reply.get("metadata") or {}).get("resourceVersion", ""))

    async def watch_objects(
        self, plural: str, namespace: str | None, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[Body]:
        """The watch events (``{"type": ..., "object": ...}``, bookmarks included) of one of our
        kinds after ``resource_version``, until the API server ends the watch (after
        ``timeout_seconds``); KubeApiError when it cannot be opened or breaks off."""
        if not self._server:
            raise KubeApiError(f"watching {plural}", None, "not logged in to the API server yet")
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        query = (
            f"?watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds={timeout_seconds}"
        )
        # No deadline for the whole stream; a silent one ends after the server's timeout and a margin.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.sock_connect, sock_read=timeout_seconds + 15
        )
        what = f"watching {plural}"
        try:
            async with self._session.get(
                f"{self._server}{self._collection(plural, namespace)}{query}", ssl=self._ssl, timeout=timeout
            ) as response:
                if response.status >= 400:
                    raise KubeApiError(what, response.status, response.reason or "watch refused")
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise KubeApiError(what, None, f"the watch broke off ({type(e).__name__}: {e})") from None

    @staticmethod
    def _collection(plural: str, namespace: str | None) -> str:
        """The path of one of our kinds in ``namespace`` (None: in every namespace)."""
        return KubeClient._path(plural, namespace) if namespace else f"/apis/{API_GROUP}/{API_VERSION}/{plural}"

    async def create_object(self, plural: str, body: Mapping[str, Any]) -> None:
        """Create one of our objects (its namespace is in ``body``); HTTP 409 when it exists."""
        meta = body["metadata"]
        operator_metrics.api_write(plural)
        await self._request(
            "POST",
            self._path(plural, meta["namespace"]),
            f"creating {plural}/{meta.get('name') or meta.get('generateName')}",
            json=dict(body),
            answer=False,
        )

    async def delete_object(self, plural: str, namespace: str, name: str) -> None:
        operator_metrics.api_write(plural)
        await self._request("DELETE", self._path(plural, namespace, name), f"deleting {plural}/{name}", answer=False)

    async def set_annotations(self, plural: str, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        """Merge-patch these annotations onto the object."""
        operator_metrics.api_write(plural)
        await self._request(
            "PATCH",
            self._path(plural, namespace, name),
            f"annotating {plural}/{name}",
            json={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
            answer=False,
        )

    async def create_configmap(self, body: Mapping[str, Any]) -> Body:
        """Create a ConfigMap (its namespace is in ``body``); HTTP 409 when it exists."""
        meta = body["metadata"]
        operator_metrics.api_write("configmaps")
        return await self._request(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/configmaps",
            f"creating ConfigMap {meta['namespace']}/{meta['name']}",
            json=dict(body),
        )

    async def get_configmap(self, namespace: str, name: str) -> Body:
        return await self._request(
            "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}", f"reading ConfigMap {namespace}/{name}"
        )

    async def read_jobnet_snapshot(self, namespace: str, stored: Mapping[str, Any]) -> dict[str, JobNetSpec]:
        """The JobNets a run started with, from the ConfigMap its ``status.jobNetSnapshot``
        (``stored``) names. Raises KubeApiError (404: it is gone), and pydantic's
        ValidationError or SnapshotError when the status or the ConfigMap is unusable."""
        snapshot = JobNetSnapshotStatus.model_validate(stored)
        configmap = await self.get_configmap(namespace, snapshot.config_map)
        return decode_snapshot((configmap.get("binaryData") or {}).get(snapshot.key, ""), snapshot)

    async def delete_configmap(self, namespace: str, name: str) -> None:
        operator_metrics.api_write("configmaps")
        await self._request(
            "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/{name}", f"deleting ConfigMap {namespace}/{name}"
        )

    async def get_secret(self, namespace: str, name: str) -> tuple[str, dict[str, bytes]]:
        """A Secret's ``resourceVersion`` and base64-decoded ``data``, as bytes (whether a value
        is text is for its reader to say, naming the key); never logged."""
        reply = await self._request(
            "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", f"reading Secret {namespace}/{name}"
        )
        data = {key: base64.b64decode(value) for key, value in (reply.get("data") or {}).items()}
        return str(reply.get("metadata", {}).get("resourceVersion", "")), data

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        """The base64-decoded ``data`` of a Secret (see :meth:`get_secret`)."""
        return (await self.get_secret(namespace, name))[1]

    async def update_secret_data(
        self, namespace: str, name: str, resource_version: str, data: Mapping[str, bytes]
    ) -> None:
        """Set these keys of a Secret, if it is still at ``resource_version`` (HTTP 409 if not)."""
        operator_metrics.api_write("secrets")
        await self._request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/secrets/{name}",
            f"updating Secret {namespace}/{name}",
            json={
                "metadata": {"resourceVersion": resource_version},
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
            },
            content_type="application/merge-patch+json",
            answer=False,
            leader_only=False,
        )

    async def get_cluster_object(self, api_version: str, plural: str, name: str) -> Body:
        """A cluster-scoped object, e.g. a ValidatingWebhookConfiguration."""
        return await self._request("GET", f"/apis/{api_version}/{plural}/{name}", f"reading {plural}/{name}")

    async def create_cluster_object(self, api_version: str, plural: str, body: Mapping[str, Any]) -> None:
        """Create a cluster-scoped object; HTTP 409 when it exists."""
        name = body["metadata"]["name"]
        await self._cluster_write("POST", api_version, plural, "", f"creating {plural}/{name}", body)

    async def patch_cluster_object(self, api_version: str, plural: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch a cluster-scoped object (a ``metadata.resourceVersion`` in ``patch`` makes it
        conditional: HTTP 409 when the object changed meanwhile)."""
        what = f"patching {plural}/{name}"
        await self._cluster_write("PATCH", api_version, plural, f"/{name}", what, patch, "application/merge-patch+json")

    async def _cluster_write(
        self,
        method: str,
        api_version: str,
        plural: str,
        suffix: str,
        what: str,
        body: Mapping[str, Any],
        content_type: str = "application/json",
    ) -> None:
        """A write of a cluster-scoped object (by any replica: webhook configurations are every replica's)."""
        operator_metrics.api_write(plural)
        path = f"/apis/{api_version}/{plural}{suffix}"
        await self._request(
            method, path, what, json=dict(body), content_type=content_type, answer=False, leader_only=False
        )

    @staticmethod
    def _lease_path(namespace: str, name: str | None = None) -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return path + (f"/{name}" if name else "")

    async def get_lease(self, namespace: str, name: str) -> Body | None:
        """The Lease, or None when there is none yet."""
        try:
            return await self._request("GET", self._lease_path(namespace, name), f"reading Lease {namespace}/{name}")
        except KubeApiError as e:
            if e.status == HTTP_NOT_FOUND:
                return None
            raise

    async def write_lease(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> str | None:
        """Create the Lease (``resource_version`` None) or replace it only if it is still at
        ``resource_version`` (HTTP 409 otherwise); the written version."""
        body: Body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        if resource_version is None:
            reply = await self._request(
                "POST", self._lease_path(namespace), f"creating Lease {namespace}/{name}", json=body, leader_only=False
            )
        else:
            body["metadata"]["resourceVersion"] = resource_version
            reply = await self._request(
                "PUT",
                self._lease_path(namespace, name),
                f"renewing Lease {namespace}/{name}",
                json=body,
                leader_only=False,
            )
        version = (reply.get("metadata") or {}).get("resourceVersion")
        return version if isinstance(version, str) else None

    async def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        at: str | None = None,
    ) -> bool:
        """Post a core v1 Event about ``involved`` (a JobNet, JobRun or JobSchedule body): True
        when stored, False when an Event of that ``name`` exists already (posted before: a
        deterministic name, see jobnet.core.events, makes a repeated post a 409). Without a
        name, the API server generates one. ``at``: when it happened (RFC 3339; default now)."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace", "default")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        when = (at or now)[:19] + "Z"  # Event timestamps are whole seconds
        identity = {"name": name} if name else {"generateName": f"{meta.get('name', 'jobnet')}."}
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {**identity, "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": when,
            "lastTimestamp": when,
            "count": 1,
        }
        # A generated name can collide (5 random characters: likely once among a few thousand
        # Events of one run); API servers before Kubernetes 1.32 answer 409 instead of retrying.
        tries = 1
        while True:
            operator_metrics.api_write("events")
            try:
                await self._request(
                    "POST",
                    f"/api/v1/namespaces/{namespace}/events",
                    f"posting Event {reason}",
                    json=event,
                    answer=False,
                )
                return True
            except KubeApiError as e:
                if e.status != HTTP_CONFLICT:
                    raise
                if name:
                    return False
                if tries == _GENERATED_NAME_TRIES:
                    raise
                tries += 1
