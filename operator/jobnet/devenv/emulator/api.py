"""The emulator's request handler: an in-memory Kubernetes API server (tests and ``jobnet dev``).

kmock 0.8 gives us the resource catalogue of a real cluster (its public ``ResourcesArray``);
everything a real kopf operator and real ``kubectl`` need is done here and in the modules it
uses (each behaviour has a test in ``tests/emulator/``):

* objects get ``uid``, ``creationTimestamp``, ``generation`` (bumped on spec changes only) and a
  ``resourceVersion`` that increases on every write; ``generateName`` works;
* merge patches (RFC 7386), JSON patches (RFC 6902, ``test`` ops honoured: a failed test is
  HTTP 422 as kopf expects) and optimistic concurrency (409 on a stale ``resourceVersion``);
* a real ``/status`` subresource: writes to the main resource ignore ``.status``, writes to
  ``/status`` change only ``.status``;
* lists carry ``kind``/``apiVersion``/``metadata.resourceVersion``; watches honour
  ``?resourceVersion=`` (replay from a bounded event log, ``410 Gone`` when too old), subscribe
  atomically with their snapshot (no lost events), honour ``timeoutSeconds`` and are sent as
  ``application/json`` so that ``kubectl get -w`` accepts them;
* every request is served in O(objects of that resource), never O(request history): the
  request-recording DSL of kmock is bypassed entirely;
* CustomResourceDefinitions are real: creating one registers its resource for discovery
  (short names, categories, status subresource), objects are validated against its schema
  (types, required, enums, lengths, bounds) before admission, unknown fields are rejected
  (``fieldValidation=Strict``, as kubectl sends) or pruned like a structural schema does,
  and ``kubectl get`` receives server-side Tables with the CRD's printer columns;
* admission webhooks are real: the stored ``MutatingWebhookConfiguration`` and
  ``ValidatingWebhookConfiguration`` objects are honoured (rules, ``failurePolicy``,
  ``timeoutSeconds``) by POSTing ``admission.k8s.io/v1`` AdmissionReviews, in a real API
  server's order: the mutating webhooks (each one's JSONPatch applied before the next is
  called), the schema again on a mutated object, then the validating webhooks; denials read
  like a real API server's;
* authentication and RBAC authorization (``authorization.py``): a request is made by the
  emulator's admin (its kubeconfig's token, or no credentials at all, as on the loopback-only
  insecure port old API servers had), by the holder of a token issued for a ServiceAccount
  (``kubectl create token``) or a user (:meth:`ApiEmulator.issue_token`), or by whom it
  impersonates (``kubectl --as=alice --as-group=ops``), which needs the ``impersonate`` verb;
  every request is then authorized against the stored Roles, ClusterRoles (aggregated ones
  filled in as the aggregation controller does) and bindings, ``system:masters`` allowed
  everything; a denial is a real API server's 403; ``kubectl auth can-i`` / ``whoami`` work
  (SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview, SelfSubjectReview);
  what non-admins were allowed to do is recorded (:attr:`AccessControl.access_log`);
* deletion as the API server and its garbage collector do it (``deletion.py``): finalizers hold
  a deleted object marked (``deletionTimestamp``; no new finalizers) until the last one goes;
  dependents named by ``ownerReferences`` follow their owner by ``propagationPolicy``
  (Background by default, Foreground waiting for blocking dependents, Orphan);
* the size limits of a real cluster (3 MiB requests, 1.5 MiB objects, 256 KiB annotations),
  server-side dry runs, and enough OpenAPI v3 for kubectl's field validation and ``explain``;
* the API can be made unreachable for a while (:meth:`EmulatorServer.outage`: connections
  refused, open watches ended) or hung (:meth:`EmulatorServer.stall`: requests never answered).

The emulator runs in a background thread with its own event loop so that synchronous tests,
``kubectl`` and operator subprocesses can all talk to it over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import pathlib
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import yaml
from kmock import ResourceInfo, ResourcesArray, resource

from jobnet.devenv.emulator import deletion, discovery, protobuf
from jobnet.devenv.emulator.access import RBAC_RESOURCES, SERVICE_ACCOUNTS, AccessControl
from jobnet.devenv.emulator.admission import Admission, CrdExtras
from jobnet.devenv.emulator.authorization import (
    RBAC_GROUP,
)
from jobnet.devenv.emulator.bootstrap import BOOTSTRAP_OBJECTS
from jobnet.devenv.emulator.kube import (
    APPLY_PATCH,
    GENERATE_NAME_ALPHABET,
    GENERATED_NAME_BASE_MAX,
    OBJECT_NAME_RE,
    ApiError,
    Body,
    ObjectKey,
    ResourceKey,
    clone,
    human_duration,
    json_patch,
    json_path_value,
    kind_label,
    merge_patch,
    now_text,
    parse_api_path,
    request_attributes,
    resource_of,
)
from jobnet.devenv.emulator.store import Store, Watcher

REPO_ROOT = pathlib.Path(__file__).resolve().parents[4]  # a source checkout
#: Our CRDs (also shipped with the chart), as a cluster would have them.
CRD_DIRS = (REPO_ROOT / "crds", REPO_ROOT / "charts" / "jobnet-operator" / "crds")


DEFAULT_WATCH_TIMEOUT = 1800.0
REQUEST_SIZE_LIMIT = 3 * 1024 * 1024  # the API server's limit on a request body

CRDS: ResourceKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
BINDINGS: frozenset[ResourceKey] = frozenset(
    (RBAC_GROUP, "v1", plural) for plural in ("rolebindings", "clusterrolebindings")
)
#: Create-only resources that are answered, never stored.
REVIEWS: frozenset[ResourceKey] = frozenset(
    {
        ("authentication.k8s.io", "v1", "selfsubjectreviews"),
        ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "v1", "selfsubjectrulesreviews"),
        ("authorization.k8s.io", "v1", "subjectaccessreviews"),
        ("authorization.k8s.io", "v1", "localsubjectaccessreviews"),
    }
)

# Server-side Table columns of built-in resources that tests look at with kubectl.
BUILTIN_COLUMNS: dict[ResourceKey, list[dict[str, Any]]] = {
    ("", "v1", "events"): [
        {"name": "Last Seen", "type": "date", "jsonPath": ".lastTimestamp"},
        {"name": "Type", "type": "string", "jsonPath": ".type"},
        {"name": "Reason", "type": "string", "jsonPath": ".reason"},
        {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
        {"name": "Message", "type": "string", "jsonPath": ".message"},
    ],
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _rkey(res: resource) -> ResourceKey:
    return (res.group or "", res.version or "", res.plural or "")


# --- the emulator ----------------------------------------------------------------------------


Interceptor = Callable[[aiohttp.web.BaseRequest], Awaitable[aiohttp.web.StreamResponse | None]]


@attrs.define(kw_only=True)
class ApiEmulator:
    """The request handler: an in-memory Kubernetes API server (see the module docstring)."""

    history_limit: int = 10_000  # watch events kept per resource for ?resourceVersion= replays
    #: the resources served: kmock's bundled catalogue of a real cluster, plus the CRDs created
    resources: ResourcesArray = attrs.field(factory=ResourcesArray, init=False)
    history_bytes: int = 64 * 1024 * 1024  # and at most this many bytes of them
    webhook_timeout_cap: float = 10.0  # tests keep admission timeouts short
    user: str = "kubernetes-admin"
    admin_token: str = "emulator-test-token"  # the bearer token of the admin's kubeconfig
    #: Called in turn with every request before it is served; the first that returns a response
    #: answers the request instead (a maintenance window, a canned reply, a test's injected fault).
    #: Change the list on the emulator's loop (``EmulatorServer.call``).
    interceptors: list[Interceptor] = attrs.field(factory=list)

    _crds: dict[ResourceKey, CrdExtras] = attrs.field(factory=dict, init=False)
    _write_lock: asyncio.Lock | None = attrs.field(default=None, init=False)

    #: the objects, their history for watches, the garbage collector
    store: Store = attrs.field(init=False)
    #: schema validation and pruning, size limits, admission webhooks
    admission: Admission = attrs.field(init=False)
    #: authentication, impersonation, RBAC authorization, access reviews and tokens
    access: AccessControl = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.store = Store(self.history_limit, self.history_bytes, self._on_change)
        self.access = AccessControl(self.store, self.resources, self.user, self.admin_token)
        self.admission = Admission(self.store, self.resources, self._crds, self.webhook_timeout_cap)
        self.resources.load_bundled()
        self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        for obj in BOOTSTRAP_OBJECTS:
            self.put_object(obj)

    # -- the HTTP entry point (replaces kmock's DSL, which scans the whole request history) --

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        for interceptor in list(self.interceptors):
            intercepted = await interceptor(raw)
            if intercepted is not None:
                return intercepted
        try:
            try:
                body = await raw.read()
            except aiohttp.web.HTTPRequestEntityTooLarge:
                raise ApiError(
                    413, "RequestEntityTooLarge", f"Request entity too large: limit is {REQUEST_SIZE_LIMIT}"
                ) from None
            return await self._dispatch(raw, body)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # an emulator bug: say so clearly instead of hanging the client
            return aiohttp.web.json_response(
                ApiError(500, "InternalError", f"emulator error: {e!r}").status(), status=500
            )

    async def _dispatch(self, raw: aiohttp.web.BaseRequest, body: bytes) -> aiohttp.web.StreamResponse:
        path = raw.path
        user = self.access.impersonate(self.access.authenticate(raw.headers, secure=raw.secure), raw.headers)
        target = parse_api_path(path)
        query = dict(raw.query)
        self.access.authorize(user, request_attributes(raw.method.upper(), path, target, query))
        if path in ("/", "/version", "/api", "/apis"):
            return self._serve_plain(path)
        if path.startswith("/openapi/v3"):
            return aiohttp.web.json_response(self._openapi_v3(path.removeprefix("/openapi/v3").strip("/")))
        if target is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if target.plural is None:
            return aiohttp.web.json_response(self._discover(target.group, target.version))
        res = resource_of(target.group, target.version, target.plural)
        if res not in self.resources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        info = self.resources[res]
        rkey = _rkey(res)
        namespace = target.namespace if info.namespaced else None
        if not info.namespaced and target.namespace is not None:
            raise ApiError(404, "NotFound", f"{target.plural} is cluster-scoped: {path}")
        name, subresource = target.name, target.subresource
        token_request = rkey == SERVICE_ACCOUNTS and subresource == "token" and raw.method.upper() == "POST"
        if (
            subresource is not None
            and not token_request
            and (subresource != "status" or "status" not in info.subresources)
        ):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        data: Any = None
        if "protobuf" in raw.content_type and body:  # kubectl create / auth, for built-in kinds
            try:
                data = protobuf.decode_object(body)
            except protobuf.ProtobufError as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from None
        elif "cbor" in raw.content_type:
            raise ApiError(415, "UnsupportedMediaType", f"the emulator speaks JSON only, not {raw.content_type}")
        elif body:
            try:
                data = yaml.safe_load(body) if "yaml" in raw.content_type else json.loads(body)
            except ValueError as e:
                raise ApiError(
                    400, "BadRequest", f"the request body is not valid JSON ({raw.content_type}): {e}"
                ) from None
        method = raw.method.upper()
        requester = user.review()
        if token_request:
            assert namespace is not None and name is not None  # serviceaccounts are namespaced
            return aiohttp.web.json_response(self.access.token_request(namespace, name, data or {}), status=201)
        if rkey in REVIEWS:
            if method != "POST" or name is not None:
                raise ApiError(405, "MethodNotAllowed", f"{rkey[2]} can only be created")
            return aiohttp.web.json_response(self.access.review(rkey, namespace, data or {}, user), status=201)
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._serve_watch_stream(raw, rkey, namespace, name, query)
        if method == "GET" and name is None:
            return self._reply(raw, rkey, self.list_body(rkey, namespace, query), listing=True)
        if method == "GET":
            return self._reply(raw, rkey, self.store.get_or_404(rkey, namespace, name))
        async with self._lock_writes():
            if method == "POST" and name is None:
                return aiohttp.web.json_response(
                    await self._create(rkey, namespace, data, query, requester), status=201
                )
            if method == "PATCH" and name is not None and raw.content_type == APPLY_PATCH:
                # Server-side apply, its minimum: create the object if missing, else merge the
                # applied fields in (no field ownership: fields dropped from the manifest stay).
                info = self.resources[resource_of(*rkey)]
                if (rkey, namespace if info.namespaced else None, name) not in self.store.objects:
                    applied = {**data, "metadata": {**(data.get("metadata") or {}), "name": name}}
                    return aiohttp.web.json_response(
                        await self._create(rkey, namespace, applied, query, requester), status=201
                    )
            if method in ("PUT", "PATCH") and name is not None:
                return aiohttp.web.json_response(
                    await self._update(
                        rkey,
                        namespace,
                        name,
                        data,
                        query,
                        subresource,
                        raw.content_type,
                        requester,
                        replace=method == "PUT",
                    )
                )
            if method == "DELETE" and name is not None:
                return aiohttp.web.json_response(
                    await self._delete(rkey, namespace, name, data or {}, query, requester)
                )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported by the emulator for {path}")

    def _on_change(self, rkey: ResourceKey, obj: Body, deleted: bool) -> None:
        """What follows a stored change: a CRD registers its resource, RBAC changes re-aggregate."""
        if rkey == CRDS and not deleted:
            self._register_crd(obj)
        if rkey in RBAC_RESOURCES:
            self.access.rbac_changed(rkey)

    @contextlib.asynccontextmanager
    async def _lock_writes(self) -> Any:
        # Writes are serialised across admission calls, like etcd's guaranteed updates would be.
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            yield

    # -- discovery --

    def _catalogue(self) -> discovery.Catalogue:
        return {_rkey(res): self.resources[res] for res in self.resources}

    def _serve_plain(self, path: str) -> aiohttp.web.StreamResponse:
        if path == "/version":
            return aiohttp.web.json_response(discovery.SERVER_VERSION)
        if path == "/api":
            return aiohttp.web.json_response(discovery.api_versions())
        if path == "/apis":
            return aiohttp.web.json_response(discovery.api_groups(self._catalogue()))
        return aiohttp.web.json_response(discovery.root(self._catalogue()))

    def _openapi_v3(self, group_version: str) -> Body:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself.

        kubectl then sends ``fieldValidation=Strict`` instead of downloading full schemas."""
        if not group_version:
            gvs = {f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}" for r in self.resources}
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}"} for gv in sorted(gvs)}}
        parts = group_version.split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2] if len(parts) > 2 else "")
        paths = {}
        for res in self.resources:
            if res.group != group or res.version != version:
                continue
            info = self.resources[res]
            scope = "/namespaces/{namespace}" if info.namespaced else ""
            paths[f"/{group_version}{scope}/{res.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": info.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {group_version}")
        schemas = {  # the CRDs' own schemas, for `kubectl explain`
            f"{'.'.join(reversed(group.split('.')))}.{version}.{self.resources[res].kind}": {
                **extras.schema,
                "x-kubernetes-group-version-kind": [
                    {"group": group, "version": version, "kind": self.resources[res].kind}
                ],
            }
            for res in self.resources
            if res.group == group and res.version == version
            for extras in [self._crds.get(_rkey(res))]
            if extras is not None and extras.schema is not None
        }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (emulated)", "version": "unversioned"},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    def _discover(self, group: str, version: str | None) -> Body:
        if version is None:
            return discovery.api_group(self._catalogue(), group)
        return discovery.api_resources(self._catalogue(), group, version)

    # -- direct access for tests (bypasses admission, like writing to etcd) --

    def put_object(self, obj: Body) -> Body:
        """Create or replace an object without admission (test setup)."""
        rkey, namespace, name = self._key_of(obj)
        obj = clone(obj)
        old = self.store.objects.get((rkey, namespace, name))
        meta = obj.setdefault("metadata", {})
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_text())
            meta.setdefault("generation", 1)
        else:
            for keep in ("uid", "creationTimestamp", "generation"):
                meta[keep] = old["metadata"][keep]
        return self.store.commit(rkey, namespace, name, obj, "ADDED" if old is None else "MODIFIED")

    def remove_object(self, api_version: str, kind_plural: str, namespace: str | None, name: str) -> None:
        """Delete an object at once, ignoring finalizers and admission (test setup)."""
        rkey = _rkey(resource(api_version, kind_plural))
        key = (rkey, namespace, name)
        if key not in self.store.objects:
            raise KeyError(key)
        self.store.drop(key, self.store.objects[key])

    def get_object(self, api_version: str, plural: str, namespace: str | None, name: str) -> Body | None:
        obj = self.store.objects.get((_rkey(resource(api_version, plural)), namespace, name))
        return clone(obj) if obj is not None else None

    def list_objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[Body]:
        items: list[Body] = clone(self.list_body(_rkey(resource(api_version, plural)), namespace, {})["items"])
        return items

    def _key_of(self, obj: Body) -> ObjectKey:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for res in self.resources:
            info = self.resources[res]
            if res.group == group and res.version == version and info.kind == kind:
                meta = obj.get("metadata", {})
                return _rkey(res), meta.get("namespace") if info.namespaced else None, meta["name"]
        raise ApiError(404, "NotFound", f"no resource for {api_version} {kind}")

    def list_body(self, rkey: ResourceKey, namespace: str | None, query: Mapping[str, str]) -> Body:
        info = self.resources[resource_of(*rkey)]
        items = [
            obj
            for obj in self.store.objects_of(rkey, namespace)
            if Watcher(rkey, None, None, query.get("labelSelector", ""), query.get("fieldSelector", "")).wants(obj)
        ]
        group, version, _ = rkey
        return {
            "apiVersion": f"{group}/{version}" if group else version,
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self.store.revision), "continue": ""},
            "items": items,
        }

    # -- writes --

    def _has_status(self, rkey: ResourceKey) -> bool:
        return "status" in self.resources[resource_of(*rkey)].subresources

    async def _create(
        self, rkey: ResourceKey, namespace: str | None, data: Any, query: Mapping[str, str], requester: Body
    ) -> Body:
        info = self.resources[resource_of(*rkey)]
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        obj = data  # freshly parsed from the request: ours to change
        group, version, plural = rkey
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        obj.setdefault("kind", info.kind)
        if obj["kind"] != info.kind:
            raise ApiError(400, "BadRequest", f"the kind {obj['kind']!r} does not match the resource {plural}")
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if namespace is None:
                raise ApiError(404, "NotFound", f"{plural} is namespaced: create it in a namespace")
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            if (("", "v1", "namespaces"), None, namespace) not in self.store.objects:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                )
            # As the API server's name generator: the base cut to 58 characters, then 5 random ones.
            base = meta["generateName"][:GENERATED_NAME_BASE_MAX]
            meta["name"] = base + "".join(random.choices(GENERATE_NAME_ALPHABET, k=5))
        name = meta["name"]
        if len(name) > 253 or not OBJECT_NAME_RE.match(name):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
                "subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
                "and end with an alphanumeric character",
            )
        key = (rkey, namespace if info.namespaced else None, name)
        if key in self.store.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind_label(rkey)} "{name}" already exists',
                {"name": name, "group": group, "kind": plural},
            )
        obj = self.admission.check_schema(rkey, obj, query)
        if self._has_status(rkey):
            obj.pop("status", None)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_text(), generation=1)
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        self.admission.check_limits(rkey, obj)
        obj = await self.admission.admit(rkey, "CREATE", obj, None, query, requester)
        if query.get("dryRun") == "All":
            return obj  # validated and admitted, never stored
        return self.store.commit(rkey, key[1], name, obj, "ADDED")

    async def _update(
        self,
        rkey: ResourceKey,
        namespace: str | None,
        name: str | None,
        data: Any,
        query: Mapping[str, str],
        subresource: str | None,
        content_type: str,
        requester: Body,
        *,
        replace: bool,
    ) -> Body:
        info = self.resources[resource_of(*rkey)]
        key = (rkey, namespace if info.namespaced else None, name or "")
        old = self.store.get_or_404(rkey, key[1], name)
        if replace:
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "the request body must be a JSON object")
            wanted_version = (data.get("metadata") or {}).get("resourceVersion")
            if not wanted_version and rkey in self._crds:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                    "must be specified for an update",
                )
            new = data
        else:
            wanted_version = (data.get("metadata") or {}).get("resourceVersion") if isinstance(data, dict) else None
            if content_type == "application/json-patch+json":
                new = json_patch(old, data)
            elif content_type in ("application/merge-patch+json", APPLY_PATCH) or (
                content_type == "application/strategic-merge-patch+json" and rkey not in self._crds
            ):
                new = merge_patch(old, data)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({content_type}) - "
                    "accepted media types include: application/json-patch+json, application/merge-patch+json",
                )
        if wanted_version and wanted_version != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind_label(rkey)} "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": rkey[0], "kind": rkey[2]},
            )
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        if rkey in BINDINGS and new.get("roleRef") != old.get("roleRef"):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind}.{RBAC_GROUP} "{name}" is invalid: roleRef: Invalid value: '
                f"{json.dumps(new.get('roleRef'))}: cannot change roleRef",
            )
        if self._has_status(rkey):
            if subresource == "status":
                # Only .status changes through /status; everything else stays as stored.
                new = (
                    dict(old, status=new.get("status"))
                    if new.get("status") is not None
                    else {k: v for k, v in old.items() if k != "status"}
                )
            elif "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        new = clone(self.admission.check_schema(rkey, new, query, before=old))  # then detached from the stored object
        meta = new.setdefault("metadata", {})
        if old["metadata"].get("deletionTimestamp") and (added := deletion.added_finalizers(old, new)):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added '
                f"if the object is being deleted, found new finalizers {json.dumps(added)}",
            )
        preserved = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
        for keep in (*preserved, "name", "namespace"):
            if keep in old["metadata"]:
                meta[keep] = old["metadata"][keep]
            else:
                meta.pop(keep, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write does not bump the resourceVersion, as on a real server
        self.admission.check_limits(rkey, new)
        new = await self.admission.admit(rkey, "UPDATE", new, old, query, requester, subresource)
        if self._spec_of(new) != self._spec_of(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new == old:
            return old  # a mutating webhook undid the change
        if query.get("dryRun") == "All":
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self.store.drop(key, new)
        return self.store.commit(rkey, key[1], key[2], new, "MODIFIED")

    @staticmethod
    def _spec_of(obj: Body) -> Body:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    async def _delete(
        self,
        rkey: ResourceKey,
        namespace: str | None,
        name: str | None,
        options: Body,
        query: Mapping[str, str],
        requester: Body,
    ) -> Body:
        info = self.resources[resource_of(*rkey)]
        key = (rkey, namespace if info.namespaced else None, name or "")
        old = self.store.get_or_404(rkey, key[1], name)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            if preconditions.get(field_name) and preconditions[field_name] != old["metadata"].get(field_name):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind_label(rkey)} "{name}": Precondition failed: {field_name}',
                )
        try:
            policy = deletion.propagation_policy(options, query)
        except deletion.InvalidPolicy as e:
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: {e}') from None
        if old["metadata"].get("deletionTimestamp"):
            return old
        dry_run = query.get("dryRun") == "All" or "All" in (options.get("dryRun") or [])
        await self.admission.validate(rkey, "DELETE", None, old, {"dryRun": "All"} if dry_run else {}, requester)
        if dry_run:
            return old
        return self.store.delete(key, policy)

    # -- CRDs --

    def _register_crd(self, crd: Body) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            res = resource(spec["group"], version["name"], names["plural"])
            self.resources[res] = ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                subresources={"status"} if "status" in (version.get("subresources") or {}) else set(),
            )
            columns = version.get("additionalPrinterColumns")
            self._crds[_rkey(res)] = CrdExtras(
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                columns=list(columns) if columns is not None else [AGE_COLUMN],
            )

    def load_crds(self, directories: tuple[pathlib.Path, ...] = CRD_DIRS) -> int:
        """Register every CustomResourceDefinition found in ``*.yaml`` of ``directories``."""
        paths = sorted(p for directory in directories for p in directory.glob("*.yaml"))
        return self.load_crd_texts(path.read_text() for path in paths)

    def load_crd_texts(self, texts: Iterable[str]) -> int:
        """Register every CustomResourceDefinition in the YAML ``texts``; returns how many."""
        count = 0
        for text in texts:
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.put_object(doc)
                    count += 1
        return count

    # -- replies: JSON objects or server-side Tables --

    def _reply(
        self, raw: aiohttp.web.BaseRequest, rkey: ResourceKey, body: Body, listing: bool = False
    ) -> aiohttp.web.StreamResponse:
        if "as=Table" in raw.headers.get("Accept", ""):
            items = body["items"] if listing else [body]
            return aiohttp.web.json_response(self._table(rkey, items, body["metadata"].get("resourceVersion", "")))
        return aiohttp.web.json_response(body)

    def _columns(self, rkey: ResourceKey) -> list[dict[str, Any]]:
        extras = self._crds.get(rkey)
        return extras.columns if extras is not None else BUILTIN_COLUMNS.get(rkey, [AGE_COLUMN])

    def _table(self, rkey: ResourceKey, items: list[Body], revision: str) -> Body:
        columns = self._columns(rkey)
        now = datetime.datetime.now(datetime.UTC)
        definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        definitions += [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in columns
        ]
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in columns:
                value = json_path_value(obj, column["jsonPath"])
                if column.get("type") == "date" and isinstance(value, str):
                    when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                    value = human_duration((now - when).total_seconds())
                cells.append(value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": revision},
            "columnDefinitions": definitions,
            "rows": rows,
        }

    # -- watches --

    async def _serve_watch_stream(
        self,
        raw: aiohttp.web.BaseRequest,
        rkey: ResourceKey,
        namespace: str | None,
        name: str | None,
        query: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        as_table = "as=Table" in raw.headers.get("Accept", "")
        watcher = Watcher(rkey, namespace, name, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        backlog = self.store.subscribe(watcher, query.get("resourceVersion", ""))
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
            deadline = asyncio.get_running_loop().time() + timeout
            for replayed in backlog:
                await response.write(self._encode_event(rkey, replayed, as_table))
                if replayed.startswith(b'{"type": "ERROR"'):
                    return response
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    event: bytes | None = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:  # the server is going away
                    break
                await response.write(self._encode_event(rkey, event, as_table))
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self.store.unsubscribe(watcher)
        return response

    def _encode_event(self, rkey: ResourceKey, line: bytes, as_table: bool) -> bytes:
        if not as_table:
            return line
        event = json.loads(line)
        if event["type"] == "ERROR":
            return line
        table = self._table(rkey, [event["object"]], event["object"]["metadata"].get("resourceVersion", ""))
        return json.dumps({"type": event["type"], "object": table}).encode() + b"\n"

    def close_watches(self) -> None:
        self.store.close_watches()

    async def aclose(self) -> None:
        self.close_watches()
        await self.admission.aclose()
