"""The snapshot ConfigMap through the real client and the emulator over HTTP: stored before the run
is Pending, and a start repeated after a crash between the two writes replaces the leftover
(it was never used: the run was not Pending yet) with the snapshot of now."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from jobnet.core.models import JobNetSpec
from jobnet.core.snapshot import SNAPSHOT_KEY, decode_snapshot, encode_snapshot, snapshot_configmap, snapshot_status
from jobnet.kube.app import store_snapshot
from jobnet.kube.client import KubeClient

from tests.support.emulator import EmulatorServer

pytestmark = pytest.mark.emulator

RUN = {"apiVersion": "jobnet.dev/v1alpha1", "kind": "JobRun",
       "metadata": {"name": "nightly-1", "namespace": "default", "uid": "5e0c8d7a-1111-4222-8333-944455556666"}}


def spec(script: str) -> dict[str, JobNetSpec]:
    return {"nightly": JobNetSpec.model_validate({
        "host": {"address": "vm1", "user": "batch", "credentialsSecret": "s"},
        "jobs": [{"name": "extract", "script": script}]})}


def test_a_repeated_start_replaces_the_unused_snapshot_and_the_stored_one_reads_back(emulator: EmulatorServer) -> None:
    before, now = encode_snapshot(spec("/opt/old.sh")), encode_snapshot(spec("/opt/new.sh"))

    async def store_twice_and_read() -> dict[str, JobNetSpec]:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        try:
            await store_snapshot(snapshot_configmap(RUN, before), client)  # the crashed attempt
            configmap = snapshot_configmap(RUN, now)
            await store_snapshot(configmap, client)
            stored = await client.get_configmap("default", configmap["metadata"]["name"])
        finally:
            await client.close()
        status = snapshot_status(configmap["metadata"]["name"], now, {}, spec("/opt/new.sh"))
        return decode_snapshot(stored["binaryData"][SNAPSHOT_KEY], status)

    restored = asyncio.run(store_twice_and_read())

    assert restored["nightly"].jobs[0].script == "/opt/new.sh"
    configmaps = [c for c in emulator.list_objects("v1", "configmaps", "default")
                  if c["metadata"]["name"].startswith("nightly-1-jobnets-")]
    assert len(configmaps) == 1 and configmaps[0]["immutable"] is True
