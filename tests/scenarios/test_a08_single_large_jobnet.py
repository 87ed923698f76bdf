"""A08 (one JobNet): a single JobNet of 10,000 jobs is created with ``kubectl create`` and
``kubectl apply --server-side``, admitted, described and run. Nothing the operator stores in its
annotations grows with the spec (kopf keeps no diffbase of JobNets), so it never meets the
256 KiB annotation limit; only client-side ``kubectl apply`` does (its last-applied annotation
holds the whole object), with the API server's message."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from jobnet.core.models import GROUP_VERSION
from tests.support.emulator import EmulatorServer, KubectlResult
from tests.support.kube import jobrun, kubectl_apply
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

JOBS = 10_000
NAME = "wide"


def wide_jobnet(description: str) -> dict[str, Any]:
    """One first job, then 9,999 jobs after it (its Secret does not exist: the first job Fails
    without any network traffic and the others are Skipped)."""
    jobs = [{"name": "j0", "script": "/bin/true"}] + [
        {"name": f"j{index}", "script": "/bin/true", "after": ["j0"]} for index in range(1, JOBS)
    ]
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "JobNet",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "description": description,
            "host": {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "missing"},
            "jobs": jobs,
        },
    }


def big_request(emulator: EmulatorServer, verb: str, manifest: dict[str, Any], *options: str) -> KubectlResult:
    """kubectl with a request deadline for a large object (the emulator and webhook parse all of
    it in Python, on a machine the parallel tests share)."""
    text = yaml.safe_dump(manifest)
    return emulator.kubectl(verb, *options, "--request-timeout=120s", "-f", "-", input=text, timeout=150)


def stored(emulator: EmulatorServer) -> dict[str, Any]:
    body = emulator.get(GROUP_VERSION, "jobnets", "default", NAME)
    assert body is not None
    return body


def described(emulator: EmulatorServer) -> dict[str, Any] | None:
    body = stored(emulator)
    status = body.get("status") or {}
    return body if status.get("observedGeneration") == body["metadata"]["generation"] else None


def annotation_bytes(body: dict[str, Any]) -> int:
    return sum(len(k) + len(v) for k, v in (body["metadata"].get("annotations") or {}).items())


def test_A08_one_10000_job_jobnet_is_created_applied_server_side_described_and_run(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    manifest = wide_jobnet("first")
    assert len(json.dumps(manifest)) > 256 * 1024  # larger than all annotations may be together

    created = big_request(emulator, "create", manifest)
    assert created.rc == 0, created.stderr
    body = wait_until(lambda: described(emulator), timeout=60, what="the JobNet described")
    assert body["status"]["jobCount"] == JOBS and body["status"]["valid"] is True
    assert annotation_bytes(body) < 1024, body["metadata"].get("annotations")

    changed = big_request(emulator, "apply", wide_jobnet("second"), "--server-side", "--field-manager=tester")
    assert changed.rc == 0, changed.stderr
    body = wait_until(lambda: described(emulator), timeout=60, what="the changed JobNet described")
    assert body["metadata"]["generation"] == 2 and body["spec"]["description"] == "second"
    assert annotation_bytes(body) < 1024, body["metadata"].get("annotations")

    # Client-side apply keeps the whole object in an annotation: the API server refuses it.
    client_side = big_request(emulator, "apply", wide_jobnet("third"))
    assert client_side.rc != 0
    assert "metadata.annotations: Too long: must have at most 262144 bytes" in client_side.stderr

    assert kubectl_apply(emulator, jobrun(NAME, name="wide-1"), verb="create").rc == 0

    def ended() -> dict[str, Any] | None:
        run = emulator.get(GROUP_VERSION, "jobruns", "default", "wide-1") or {}
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Stopped", "Stuck") else None

    run = wait_until(ended, timeout=240, what="the 10,000-job run ends")
    assert run["status"]["phase"] == "Failed"
    assert run["status"]["counts"] == {"Failed": 1, "Skipped": JOBS - 1}, run["status"]["counts"]
    assert annotation_bytes(run) < 4096, run["metadata"].get("annotations")
