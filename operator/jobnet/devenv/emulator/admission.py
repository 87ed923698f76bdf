"""Admission as a real API server does it: a custom resource's structural schema (unknown fields
refused or pruned, validation), the size limits of a cluster, and the admission webhooks stored in
Mutating- and ValidatingWebhookConfigurations (called in order, patches applied, denials worded
like the API server's)."""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kmock import ResourcesArray

from jobnet.devenv.emulator.kube import ApiError, Body, ResourceKey, json_patch, kind_label, resource_of
from jobnet.devenv.emulator.schema import prune, schema_errors, unknown_fields
from jobnet.devenv.emulator.store import Store

OBJECT_SIZE_LIMIT = 1_572_864  # etcd's default request limit (1.5 MiB)
ANNOTATIONS_LIMIT = 262_144  # total size of an object's annotations (256 KiB)
WEBHOOK_TIMEOUT_DEFAULT = 10.0


@dataclass
class CrdExtras:
    """What a CRD adds beyond discovery: its schema and printer columns."""

    schema: Mapping[str, Any] | None
    columns: list[dict[str, Any]]


class Admission:
    """Checks and admits what is written (the resource catalogue and CRD schemas are shared with
    the request handler, which registers CRDs)."""

    def __init__(
        self,
        store: Store,
        resources: ResourcesArray,
        crds: dict[ResourceKey, CrdExtras],
        webhook_timeout_cap: float,
    ) -> None:
        self.store = store
        self.resources = resources
        self.crds = crds
        self.webhook_timeout_cap = webhook_timeout_cap  # tests keep admission timeouts short
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def check_limits(self, rkey: ResourceKey, obj: Body) -> None:
        """The size limits of a real cluster: 256 KiB of annotations, 1.5 MiB per object in etcd."""
        annotations = obj.get("metadata", {}).get("annotations") or {}
        annotation_bytes = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
        if annotation_bytes > ANNOTATIONS_LIMIT:
            raise ApiError(
                422,
                "Invalid",
                f'{kind_label(rkey)} "{obj["metadata"].get("name")}" is invalid: '
                f"metadata.annotations: Too long: must have at most {ANNOTATIONS_LIMIT} bytes",
            )
        if len(json.dumps(obj, separators=(",", ":"))) > OBJECT_SIZE_LIMIT:
            raise ApiError(500, "InternalError", "etcdserver: request is too large")

    def check_schema(self, rkey: ResourceKey, obj: Body, query: Mapping[str, str], before: Body | None = None) -> Body:
        extras = self.crds.get(rkey)
        if extras is None or extras.schema is None:
            return obj
        unknown = unknown_fields(obj, extras.schema, before=before)
        if unknown and query.get("fieldValidation") == "Strict":
            info = self.resources[resource_of(*rkey)]
            details = ", ".join(f'unknown field "{p.lstrip(".")}"' for p in unknown)
            raise ApiError(
                400,
                "BadRequest",
                f'{info.kind} in version "{rkey[1]}" cannot be handled as a {info.kind}: '
                f"strict decoding error: {details}",
            )
        obj = prune(obj, extras.schema, before=before)
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        required = [key for key in extras.schema.get("required", []) if key not in ("apiVersion", "kind", "metadata")]
        errors = schema_errors(body, {**extras.schema, "required": required}, before=before)
        if errors:
            info = self.resources[resource_of(*rkey)]
            listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise ApiError(
                422, "Invalid", f'{info.kind}.{rkey[0]} "{obj["metadata"].get("name", "")}" is invalid: {listed}'
            )
        return obj

    async def admit(
        self,
        rkey: ResourceKey,
        operation: str,
        new: Body,
        old: Body | None,
        query: Mapping[str, str],
        requester: Body,
        subresource: str | None = None,
    ) -> Body:
        """Admit a create or update as a real API server does; returns the object to store."""
        admitted = new
        for webhook in self._webhooks("mutatingwebhookconfigurations", rkey, operation, subresource):
            result = await self._call_webhook(webhook, rkey, operation, admitted, old, query, subresource, requester)
            if result.get("patch"):
                admitted = self._apply_admission_patch(webhook, result, admitted)
        if admitted != new:
            admitted = self.check_schema(rkey, admitted, query, before=old)
            self.check_limits(rkey, admitted)
        await self.validate(rkey, operation, admitted, old, query, requester, subresource)
        return admitted

    async def validate(
        self,
        rkey: ResourceKey,
        operation: str,
        new: Body | None,
        old: Body | None,
        query: Mapping[str, str],
        requester: Body,
        subresource: str | None = None,
    ) -> None:
        for webhook in self._webhooks("validatingwebhookconfigurations", rkey, operation, subresource):
            await self._call_webhook(webhook, rkey, operation, new, old, query, subresource, requester)

    def _webhooks(self, kind_plural: str, rkey: ResourceKey, operation: str, subresource: str | None) -> Iterator[Body]:
        for config in self.store.objects_of(("admissionregistration.k8s.io", "v1", kind_plural), None):
            for webhook in config.get("webhooks") or []:
                if self._webhook_applies(webhook, rkey, operation, subresource):
                    yield webhook

    @staticmethod
    def _apply_admission_patch(webhook: Body, result: Body, obj: Body) -> Body:
        name = webhook.get("name", "")
        try:
            if result.get("patchType") != "JSONPatch":
                raise ValueError(f"unsupported patchType {result.get('patchType')!r}")
            patched: Body = json_patch(obj, json.loads(base64.b64decode(result["patch"])))
            return patched
        except (ApiError, ValueError) as e:
            detail = e.message if isinstance(e, ApiError) else str(e)
            raise ApiError(
                500,
                "InternalError",
                f'Internal error occurred: admission webhook "{name}" returned an invalid patch: {detail}',
            ) from None

    @staticmethod
    def _webhook_applies(webhook: Body, rkey: ResourceKey, operation: str, subresource: str | None) -> bool:
        group, version, plural = rkey
        wanted = f"{plural}/{subresource}" if subresource else plural
        for rule in webhook.get("rules") or []:
            if (
                (set(rule.get("apiGroups", [])) & {group, "*"})
                and (set(rule.get("apiVersions", [])) & {version, "*"})
                and (set(rule.get("operations", [])) & {operation, "*"})
                and (set(rule.get("resources", [])) & {wanted, "*", f"*/{subresource}" if subresource else "*"})
            ):
                return True
        return False

    async def _call_webhook(
        self,
        webhook: Body,
        rkey: ResourceKey,
        operation: str,
        new: Body | None,
        old: Body | None,
        query: Mapping[str, str],
        subresource: str | None,
        requester: Body,
    ) -> Body:
        """The webhook's AdmissionReview response (a denial or a failed call raises)."""
        name = webhook.get("name", "")
        url = (webhook.get("clientConfig") or {}).get("url")
        info = self.resources[resource_of(*rkey)]
        subject = new if new is not None else old
        assert subject is not None
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": rkey[0], "version": rkey[1], "kind": info.kind},
                "resource": {"group": rkey[0], "version": rkey[1], "resource": rkey[2]},
                "requestKind": {"group": rkey[0], "version": rkey[1], "kind": info.kind},
                "requestResource": {"group": rkey[0], "version": rkey[1], "resource": rkey[2]},
                **({"subResource": subresource} if subresource else {}),
                "name": subject["metadata"].get("name", ""),
                **({"namespace": subject["metadata"]["namespace"]} if subject["metadata"].get("namespace") else {}),
                "operation": operation,
                "userInfo": requester,
                "object": new,
                "oldObject": old,
                "dryRun": query.get("dryRun") == "All",
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.capitalize()}Options"},
            },
        }
        timeout = min(float(webhook.get("timeoutSeconds") or WEBHOOK_TIMEOUT_DEFAULT), self.webhook_timeout_cap)
        ssl_context: ssl.SSLContext | bool = False
        ca_bundle = (webhook.get("clientConfig") or {}).get("caBundle")
        if url and url.startswith("https://"):
            ssl_context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode() if ca_bundle else None)
        try:
            if not url:
                raise ValueError("the webhook has no clientConfig.url (services are not emulated)")
            if self._http is None:
                self._http = aiohttp.ClientSession()
            async with self._http.post(
                url, json=review, ssl=ssl_context, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as reply:
                if reply.status != 200:
                    raise ValueError(f"the server responded with HTTP {reply.status}")
                result = (await reply.json()).get("response") or {}
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as e:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return {"allowed": True}
            reason = "context deadline exceeded" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
            raise ApiError(
                500,
                "InternalError",
                f'Internal error occurred: failed calling webhook "{name}": failed to call webhook: '
                f'Post "{url}": {reason}',
            ) from None
        if result.get("allowed"):
            return result
        status = result.get("status") or {}
        code = int(status.get("code") or 0)
        code = code if code >= 400 else 400
        explanation = status.get("message") or status.get("reason") or ""
        message = (
            f'admission webhook "{name}" denied the request: {explanation}'
            if explanation
            else f'admission webhook "{name}" denied the request without explanation'
        )
        raise ApiError(code, status.get("reason") or "", message)
