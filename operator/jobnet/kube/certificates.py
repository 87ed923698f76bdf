"""The operator manages the admission webhook's serving certificate itself (as Knative's and
Tekton's webhooks do), so the Helm chart renders identically every time (GitOps-stable).

* The chart renders an empty Secret; the first replica to start fills it with a CA and a
  serving certificate for the webhook Service (``jobnet.core.servingcert``), every replica
  serves what the Secret holds.
* Every ``check_interval`` each replica reads the Secret again: a certificate due for renewal
  (``renew_before`` its expiry), unreadable or not covering the Service is replaced. The new
  CA bundle keeps the previous CA while it is valid, so replicas that still serve the previous
  certificate stay trusted until they reload. Two replicas rotating at once cannot both win:
  the Secret is written only at the ``resourceVersion`` read (the loser uses the winner's).
* The ``caBundle`` of every webhook of the Validating- and MutatingWebhookConfiguration named
  ``configuration`` is kept equal to the Secret's bundle (a sync that reset it is healed at the
  next check).

The certificate and its key go into one PEM file in a private directory, replaced atomically;
kopf's webhook server re-reads it and restarts serving with the new certificate when it changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobnet.core.servingcert import ServingMaterial, certificate_problem, issue, rotated_bundle
from jobnet.kube.client import HTTP_CONFLICT, HTTP_NOT_FOUND, KubeApiError, KubeClient
from jobnet.kube.webhook import AdmissionServer

logger = logging.getLogger(__name__)

ADMISSION_API = "admissionregistration.k8s.io/v1"
WEBHOOK_CONFIGURATION_PLURALS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
#: Tries of one check when another replica writes the Secret at the same time.
_WRITE_TRIES = 3
#: How often kopf's server looks at the certificate file (reading one small file).
FILE_CHECK_INTERVAL = 5.0


@dataclass(frozen=True)
class CertificateConfig:
    """Where the certificate is kept, what it covers, and when it is renewed."""

    secret_namespace: str
    secret_name: str
    names: tuple[str, ...]  # DNS names (or IP addresses) the certificate covers
    configuration: str | None = None  # the webhook configurations whose caBundle is kept in sync
    validity: datetime.timedelta = datetime.timedelta(days=365)
    renew_before: datetime.timedelta = datetime.timedelta(days=30)
    check_interval: float = 3600.0
    start_attempts: int = 12  # first check: tries (retry_delay apart) before the operator gives up
    retry_delay: float = 5.0

    @property
    def secret(self) -> str:
        return f"{self.secret_namespace}/{self.secret_name}"


class CertificateManager:
    """Keeps the Secret, the served certificate file and the webhooks' caBundle in step."""

    def __init__(self, config: CertificateConfig, client: KubeClient) -> None:
        self.config = config
        self.client = client
        self.directory = Path(tempfile.mkdtemp(prefix="jobnet-webhook-tls-"))  # mode 0700
        #: the certificate and its key, one file (kopf reloads it; never half of a rotation)
        self.pem_file = self.directory / "tls.pem"
        self._served: ServingMaterial | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first check: the certificate file exists when this returns. A failing API is
        retried ``start_attempts`` times, then the error is raised (the operator stops, saying why)."""
        for attempt in range(1, self.config.start_attempts + 1):
            try:
                await self.check()
                break
            except KubeApiError as e:
                if attempt == self.config.start_attempts:
                    raise
                logger.warning(
                    "cannot set up the webhook certificate in Secret %s (%s); retrying in %.1fs",
                    self.config.secret,
                    e,
                    self.config.retry_delay,
                )
                await asyncio.sleep(self.config.retry_delay)
        self._task = asyncio.create_task(self._keep_checking(), name="webhook certificate")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _keep_checking(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                await self.check()
            except KubeApiError as e:
                logger.warning("cannot check the webhook certificate in Secret %s: %s", self.config.secret, e)

    async def check(self, now: datetime.datetime | None = None) -> None:
        """Read the Secret; renew what it holds if needed; serve it; sync the caBundle."""
        material = await self._current_material(now or datetime.datetime.now(datetime.UTC))
        if material != self._served:
            _write_private(self.pem_file, material.certificate + material.private_key)
            self._served = material
        if self.config.configuration:
            await self._sync_ca_bundle(material.ca_bundle)

    async def _current_material(self, now: datetime.datetime) -> ServingMaterial:
        config = self.config
        for attempt in range(1, _WRITE_TRIES + 1):
            try:
                version, data = await self.client.get_secret(config.secret_namespace, config.secret_name)
            except KubeApiError as e:
                if e.status == HTTP_NOT_FOUND:
                    raise KubeApiError(
                        f"reading Secret {config.secret}", e.status, "not found (the Helm chart creates it, empty)"
                    ) from None
                raise
            stored = ServingMaterial.from_secret_data(data)
            problem = certificate_problem(stored, config.names, now, config.renew_before)
            if problem is None:
                assert stored is not None
                return stored
            renewed = rotated_bundle(
                issue(config.names, now, config.validity), stored.ca_bundle if stored else None, now
            )
            try:
                await self.client.update_secret_data(
                    config.secret_namespace, config.secret_name, version, renewed.secret_data()
                )
            except KubeApiError as e:
                if e.status != HTTP_CONFLICT or attempt == _WRITE_TRIES:
                    raise
                continue  # another replica wrote it first: read theirs
            logger.info(
                "issued a new webhook certificate for %s into Secret %s: %s",
                ", ".join(config.names),
                config.secret,
                problem,
            )
            return renewed
        raise AssertionError("unreachable: the last try returns or raises")

    async def _sync_ca_bundle(self, bundle: bytes) -> None:
        name = self.config.configuration
        assert name is not None
        wanted = base64.b64encode(bundle).decode()
        for plural in WEBHOOK_CONFIGURATION_PLURALS:
            try:
                current = await self.client.get_cluster_object(ADMISSION_API, plural, name)
            except KubeApiError as e:
                if e.status != HTTP_NOT_FOUND:
                    raise
                logger.warning("%s %s not found: its caBundle cannot be set", plural, name)
                continue
            webhooks: list[dict[str, Any]] = current.get("webhooks") or []
            if all((w.get("clientConfig") or {}).get("caBundle") == wanted for w in webhooks):
                continue
            for webhook in webhooks:
                webhook.setdefault("clientConfig", {})["caBundle"] = wanted
            version = current.get("metadata", {}).get("resourceVersion")
            # Conditional on the version read: a concurrent edit (409) is met at the next check.
            await self.client.patch_cluster_object(
                ADMISSION_API, plural, name, {"metadata": {"resourceVersion": version}, "webhooks": webhooks}
            )
            logger.info("set the caBundle of %s %s from Secret %s", plural, name, self.config.secret)


def _write_private(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically with a file only the operator's user can read."""
    temporary = path.with_suffix(".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    os.replace(temporary, path)


class ManagedCertificateServer(AdmissionServer):
    """kopf's HTTPS admission server, serving the certificate :class:`CertificateManager` keeps."""

    def __init__(self, manager: CertificateManager, **kwargs: Any) -> None:
        super().__init__(
            certfile=manager.pem_file,
            pkeyfile=manager.pem_file,
            file_check_interval=FILE_CHECK_INTERVAL,
            **kwargs,
        )
        self.manager = manager

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        # kopf starts its admission server once logged in and the resources are discovered.
        await self.manager.start()
        try:
            async for client_config in super().__call__(fn):
                yield client_config
        finally:
            await self.manager.stop()
