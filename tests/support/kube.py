"""Manifest builders and kubectl shortcuts for tests that talk to the API emulator."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.emulator import EmulatorServer, KubectlResult

GROUP_VERSION = "jobnet.dev/v1alpha1"
HOST = {"address": "vm1.internal", "user": "batch", "credentialsSecret": "vm1-ssh"}


def script_job(name: str, *after: str) -> dict[str, Any]:
    return {"name": name, "script": f"/opt/batch/{name}.sh", **({"after": list(after)} if after else {})}


def expand_job(name: str, target: str, *after: str) -> dict[str, Any]:
    return {"name": name, "expand": target, **({"after": list(after)} if after else {})}


def jobnet(name: str, *jobs: dict[str, Any], namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "JobNet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"host": HOST, "jobs": list(jobs), **spec},
    }


def jobrun(jobnet_ref: str, name: str | None = None, namespace: str = "default") -> dict[str, Any]:
    metadata = {"name": name} if name else {"generateName": f"{jobnet_ref}-"}
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "JobRun",
        "metadata": {**metadata, "namespace": namespace},
        "spec": {"jobNetRef": jobnet_ref},
    }


def kubectl_apply(emulator: EmulatorServer, *docs: dict[str, Any], verb: str = "apply") -> KubectlResult:
    """``kubectl apply -f -`` (or ``create``) of the given manifests."""
    return emulator.kubectl(verb, "-f", "-", input=yaml.safe_dump_all(docs))
