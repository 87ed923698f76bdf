"""The console's Kubernetes API access, always as the person using it.

Two ways to say who that is:

* **kubeconfig** (``jobnet console`` on a workstation): the server, TLS settings and credentials
  of the chosen context, loaded by the official client's loader (tokens, client certificates,
  exec plugins), plus the context user's impersonation (``as``/``as-groups``, sent as
  ``Impersonate-User``/``Impersonate-Group`` like kubectl does);
* **forwarded bearer token** (the chart's in-cluster mode behind an authenticating proxy): every
  request carries the viewer's own ``Authorization: Bearer`` token, so the console never has more
  rights than the viewer; a request without one is refused.

Failures become :class:`ApiFailure` carrying the API server's own message (RBAC denials, admission
refusals), never a credential.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from multidict import CIMultiDict

Body = dict[str, Any]
JOBNET_API = "/apis/jobnet.dev/v1alpha1"


class ApiFailure(Exception):
    """An API request failed; ``str()`` is for people (the server's message when it gave one)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConsoleConfigError(Exception):
    """The kubeconfig cannot be used."""


@dataclass(frozen=True)
class Identity:
    """How requests authenticate: the kubeconfig's credentials, or a viewer's forwarded token."""

    bearer_token: str | None = None
    impersonate_user: str | None = None
    impersonate_groups: tuple[str, ...] = ()

    def cache_key(self) -> str:
        """Tells identities apart in caches without keeping their token (a SHA-256 prefix)."""
        material = f"{self.bearer_token}|{self.impersonate_user}|{','.join(self.impersonate_groups)}"
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def headers(self) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        if self.bearer_token:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        if self.impersonate_user:
            headers["Impersonate-User"] = self.impersonate_user
        for group in self.impersonate_groups:
            headers.add("Impersonate-Group", group)
        return headers


@dataclass
class ApiTarget:
    """Where the API server is and how to reach it."""

    server: str
    namespace: str
    ssl_context: ssl.SSLContext | bool = True
    identity: Identity = field(default_factory=Identity)


def _kubeconfig_paths(kubeconfig: str | None) -> list[str]:
    if kubeconfig:
        return [kubeconfig]
    joined = os.environ.get("KUBECONFIG")
    if joined:
        return [path for path in joined.split(os.pathsep) if path]
    return [os.path.expanduser("~/.kube/config")]


def _impersonation(paths: list[str], context_name: str | None) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The chosen context's namespace and its user's ``as``/``as-groups`` (first file wins, as kubectl merges)."""
    documents = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                documents.append(yaml.safe_load(handle) or {})
        except FileNotFoundError:
            continue
    current = context_name or next((d.get("current-context") for d in documents if d.get("current-context")), None)
    context = next(
        (c.get("context") or {} for d in documents for c in d.get("contexts") or [] if c["name"] == current), {}
    )
    user_name = context.get("user")
    user = next((u.get("user") or {} for d in documents for u in d.get("users") or [] if u["name"] == user_name), {})
    return context.get("namespace"), user.get("as"), tuple(user.get("as-groups") or ())


def target_from_kubeconfig(kubeconfig: str | None, context: str | None, namespace: str | None) -> ApiTarget:
    """The API target of a kubeconfig context (as kubectl would use it)."""
    paths = _kubeconfig_paths(kubeconfig)
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=os.pathsep.join(paths) if len(paths) > 1 else paths[0],
            context=context,
            client_configuration=configuration,
        )
        context_namespace, user, groups = _impersonation(paths, context)
    except (ConfigException, yaml.YAMLError, OSError, KeyError, TypeError) as error:
        raise ConsoleConfigError(f"cannot use the kubeconfig ({':'.join(paths)}): {error}") from None
    ssl_context: ssl.SSLContext | bool = True
    if configuration.host.startswith("https:"):
        ssl_context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            ssl_context.load_cert_chain(configuration.cert_file, configuration.key_file)
    authorization = (configuration.api_key or {}).get("authorization", "")
    token = authorization.removeprefix("Bearer ").strip() or None
    return ApiTarget(
        server=configuration.host.rstrip("/"),
        namespace=namespace or context_namespace or "default",
        ssl_context=ssl_context,
        identity=Identity(bearer_token=token, impersonate_user=user, impersonate_groups=groups),
    )


def _message(status: int, text: str) -> str:
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {status}: {message or text.strip()[:300] or 'no message'}"


class KubeApi:
    """Async API calls for one identity (one per forwarded token; shared in kubeconfig mode)."""

    def __init__(self, session: aiohttp.ClientSession, target: ApiTarget, identity: Identity | None = None) -> None:
        self.session = session
        self.target = target
        self.identity = identity or target.identity

    def as_viewer(self, token: str) -> KubeApi:
        """The same server, authenticated with a viewer's forwarded bearer token."""
        return KubeApi(self.session, self.target, Identity(bearer_token=token))

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Body | None = None,
        content_type: str = "application/json",
    ) -> Body:
        headers = self.identity.headers()
        headers["Accept"] = "application/json"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            async with self.session.request(
                method, self.target.server + path, params=query, data=data, headers=headers, ssl=self.target.ssl_context
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ApiFailure(response.status, _message(response.status, text))
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiFailure(
                503, f"the API server at {self.target.server} is unreachable ({type(error).__name__})"
            ) from None

    async def watch(self, path: str, resource_version: str, timeout_seconds: int) -> AsyncIterator[Body]:
        """The watch events of a collection from ``resource_version`` (ends after ``timeout_seconds``)."""
        headers = self.identity.headers()
        query = {"watch": "true", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_seconds)}
        try:
            async with self.session.get(
                self.target.server + path, params=query, headers=headers, ssl=self.target.ssl_context
            ) as response:
                if response.status >= 400:
                    raise ApiFailure(response.status, _message(response.status, await response.text()))
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiFailure(503, f"the watch of {path} ended ({type(error).__name__})") from None


def jobruns_path(namespace: str | None, name: str | None = None) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{JOBNET_API}{where}/jobruns" + (f"/{name}" if name else "")


def jobnets_path(namespace: str, name: str | None = None) -> str:
    return f"{JOBNET_API}/namespaces/{namespace}/jobnets" + (f"/{name}" if name else "")


def jobschedules_path(namespace: str | None) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{JOBNET_API}{where}/jobschedules"


def events_path(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{namespace}/events" if namespace else "/api/v1/events"
