"""The plugin's Kubernetes API access: the kubeconfig read like kubectl reads it.

``--kubeconfig`` or ``$KUBECONFIG`` (several files joined with ``:``, merged) or
``~/.kube/config``; ``--context`` or the current context; ``-n`` or the context's namespace or
``default``. Uses the official client (token, client certificates, exec plugins all work) and
turns every failure into a :class:`PluginError` that says which request failed and why, never a
credential.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from jobnet.core.expansion import ExpansionError, RunGraph, expand
from jobnet.core.models import API_GROUP, API_VERSION, JobNetSpec
from jobnet.core.runstatus import decoded_status
from jobnet.core.snapshot import SnapshotError, decode_snapshot
from jobnet.core.status import JobNetSnapshotStatus, JobRunStatus
from jobnet.plugin.view import Body, Connection, JobRunView, PluginError, event_time, jobnet_catalog


class PluginKube:
    """Synchronous, minimal API access for the plugin commands."""

    def __init__(self, connection: Connection) -> None:
        self.timeout = connection.request_timeout
        try:
            contexts, current = config.list_kube_config_contexts(connection.kubeconfig)
            chosen = current
            if connection.context is not None:
                chosen = next((c for c in contexts if c["name"] == connection.context), None)
                if chosen is None:
                    names = ", ".join(sorted(c["name"] for c in contexts)) or "none"
                    raise PluginError(f"context {connection.context!r} not found in the kubeconfig (contexts: {names})")
            self.api_client = config.new_client_from_config(connection.kubeconfig, connection.context)
        except (ConfigException, yaml.YAMLError, OSError) as error:
            where = connection.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise PluginError(f"cannot use the kubeconfig ({where}): {error}") from None
        context_namespace = (chosen or {}).get("context", {}).get("namespace")
        self.namespace = connection.namespace or context_namespace or "default"
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as error:
            raise PluginError(f"{what}: {_api_message(error)}") from None
        except (HTTPError, OSError) as error:
            server = self.api_client.configuration.host
            raise PluginError(f"{what}: the API server at {server} is unreachable ({type(error).__name__})") from None

    def _object(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Body:
        """:meth:`_call` of a method that answers with one object (the client's untyped dict)."""
        answer = self._call(what, function, *args, **kwargs)
        if not isinstance(answer, dict):
            raise PluginError(f"{what}: the API server answered with {type(answer).__name__}, not an object")
        return answer

    def get_jobrun(self, name: str) -> Body:
        return self._object(
            f"getting JobRun {name!r} in namespace {self.namespace!r}",
            self.custom.get_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            self.namespace,
            "jobruns",
            name,
        )

    def jobrun_view(self, name: str, with_graph: bool = True) -> JobRunView:
        """The JobRun, its parsed status and (``with_graph``) its run graph, expanded from the
        JobNets it started with (its snapshot), else from the namespace's JobNets."""
        body = self.get_jobrun(name)
        try:
            # Large runs keep their job entries in compressed chunks (docs/scale.md).
            status = JobRunStatus.model_validate(decoded_status(body.get("status") or {}))
        except ValueError as error:
            raise PluginError(f"JobRun {name!r} has a status this plugin cannot read: {error}") from None
        if not with_graph:
            return JobRunView(body=body, status=status, graph=None, graph_problem=None)
        reference = body.get("spec", {}).get("jobNetRef", "")
        snapshot = (body.get("status") or {}).get("jobNetSnapshot")
        try:
            catalog = self._snapshot_catalog(snapshot) if snapshot is not None else self._current_catalog()
            graph: RunGraph | None = expand(reference, catalog, run_id=body["metadata"].get("uid", ""))
            problem = None
        except (ExpansionError, SnapshotError, ValueError) as error:
            source = "its JobNet snapshot" if snapshot is not None else f"JobNet {reference!r}"
            graph, problem = None, f"the run's graph cannot be rebuilt from {source} now: {error}"
        return JobRunView(body=body, status=status, graph=graph, graph_problem=problem)

    def _current_catalog(self) -> dict[str, JobNetSpec]:
        """The namespace's JobNets as they are now (a run started before snapshots existed)."""
        listing = self._object(
            f"listing JobNets in namespace {self.namespace!r}",
            self.custom.list_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            self.namespace,
            "jobnets",
        )
        return jobnet_catalog(listing.get("items", []))

    def _snapshot_catalog(self, stored: Any) -> dict[str, JobNetSpec]:
        """The JobNets the run started with (edits made since do not apply to it)."""
        snapshot = JobNetSnapshotStatus.model_validate(stored)
        reply = self._call(
            f"reading the run's JobNet snapshot (ConfigMap {snapshot.config_map!r})",
            self.core.read_namespaced_config_map,
            snapshot.config_map,
            self.namespace,
            _preload_content=False,
        )
        binary = json.loads(reply.data).get("binaryData") or {}  # kept base64, as the operator wrote it
        return decode_snapshot(binary.get(snapshot.key, ""), snapshot)

    def get_object(self, plural: str, name: str) -> Body:
        """One of our objects (``jobschedules``, ``jobcalendars``, ``jobnets``...) in the namespace."""
        return dict(
            self._call(
                f"getting {plural}/{name} in namespace {self.namespace!r}",
                self.custom.get_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                self.namespace,
                plural,
                name,
            )
        )

    def exists(self, plural: str, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, plural, name, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise PluginError(f"getting {plural}/{name}: {_api_message(error)}") from None
        except (HTTPError, OSError) as error:
            raise PluginError(
                f"getting {plural}/{name}: the API server is unreachable ({type(error).__name__})"
            ) from None
        return True

    def create_jobrun(self, body: Body) -> Body:
        """Create a JobRun (admission may refuse it: its message is the error)."""
        return dict(
            self._call(
                f"creating a JobRun of {body['spec']['jobNetRef']!r}",
                self.custom.create_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                self.namespace,
                "jobruns",
                body,
            )
        )

    def annotate_jobrun(self, view: JobRunView, annotations: dict[str, str]) -> Body:
        """Merge ``annotations`` into the JobRun, only if it did not change since ``view`` was read
        (a concurrent change, e.g. the operator consuming an annotation, is a 409 conflict)."""
        patch = {"metadata": {"annotations": annotations, "resourceVersion": view.body["metadata"]["resourceVersion"]}}
        return self._object(
            f"annotating JobRun {view.name!r}",
            self.custom.patch_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            self.namespace,
            "jobruns",
            view.name,
            patch,
            _content_type="application/merge-patch+json",
        )

    def jobrun_events(self, view: JobRunView) -> list[Body]:
        """The Events about this JobRun (this very object: same uid), oldest first."""
        selector = f"involvedObject.kind=JobRun,involvedObject.name={view.name}"
        reply = self._call(
            f"listing Events of JobRun {view.name!r}",
            self.core.list_namespaced_event,
            self.namespace,
            field_selector=selector,
            _preload_content=False,
        )
        events = json.loads(reply.data).get("items", [])
        mine = [e for e in events if not view.uid or e.get("involvedObject", {}).get("uid") in (None, view.uid)]
        return sorted(mine, key=event_time)

    def secret_data(self, name: str) -> dict[str, str]:
        """A Secret's decoded data (never printed)."""
        reply = self._call(
            f"reading Secret {name!r} in namespace {self.namespace!r}",
            self.core.read_namespaced_secret,
            name,
            self.namespace,
            _preload_content=False,
        )
        data = json.loads(reply.data).get("data") or {}
        try:
            return {key: base64.b64decode(value).decode() for key, value in data.items()}
        except (ValueError, UnicodeDecodeError):
            raise PluginError(f"Secret {name!r} has data that is not base64-encoded UTF-8 text") from None


def _api_message(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message")
    except ValueError:
        message = None
    hint = " (it changed meanwhile: run the command again)" if error.status == 409 else ""
    return f"HTTP {error.status}: {message or error.reason}{hint}"
