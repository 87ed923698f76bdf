"""The snapshot ConfigMap through the real client and the emulator over HTTP: the run's first status
write (its first decision) names its snapshot; a start repeated after
a crash between the two writes replaces the leftover (it was never used: the run had no phase
yet) with the snapshot of now; a snapshot too large for a ConfigMap fails the run at start with
a clear reason (the real operator)."""

from __future__ import annotations

import asyncio
import base64
import random

import kopf
import pytest

from jobnet.core.models import JobNetSpec
from jobnet.core.snapshot import SNAPSHOT_KEY, decode_snapshot, encode_snapshot, snapshot_configmap, snapshot_status
from jobnet.kube.app import store_snapshot
from jobnet.kube.client import KubeClient
from tests.support.apiwatch import JobRunWatch
from tests.support.emulator import EmulatorServer
from tests.support.kube import expand_job, jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess

pytestmark = pytest.mark.emulator

RUN = {
    "apiVersion": "jobnet.dev/v1alpha1",
    "kind": "JobRun",
    "metadata": {"name": "nightly-1", "namespace": "default", "uid": "5e0c8d7a-1111-4222-8333-944455556666"},
}


def spec(script: str) -> dict[str, JobNetSpec]:
    return {
        "nightly": JobNetSpec.model_validate(
            {
                "host": {"address": "vm1", "user": "batch", "credentialsSecret": "s"},
                "jobs": [{"name": "extract", "script": script}],
            }
        )
    }


def test_the_first_status_write_of_a_run_names_its_stored_snapshot(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    # Nothing listens on 127.0.0.1:1: the run's job goes nowhere, which does not matter here.
    closed = {"address": "127.0.0.1", "port": 1, "user": "batch", "credentialsSecret": "none"}
    assert kubectl_apply(emulator, jobnet("quick", script_job("a"), host=closed)).rc == 0
    with JobRunWatch(emulator, "quick-1", timeout=60) as watch:
        assert kubectl_apply(emulator, jobrun("quick", name="quick-1")).rc == 0
        first = wait_until(
            lambda: next((w.status for w in watch.writes if w.status.get("phase")), None),
            timeout=30,
            what="the JobRun's first status write",
        )

    # One write: the run's first decision (its job is being launched) with the snapshot.
    assert first["phase"] == "Running" and first["jobNetSnapshot"]["jobNets"][0]["name"] == "quick", first
    assert first["jobs"]["/quick/a"]["state"] == "Starting", first
    assert emulator.get("v1", "configmaps", "default", first["jobNetSnapshot"]["configMap"]) is not None


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
    configmaps = [
        c
        for c in emulator.list_objects("v1", "configmaps", "default")
        if c["metadata"]["name"].startswith("nightly-1-jobnets-")
    ]
    assert len(configmaps) == 1 and configmaps[0]["immutable"] is True


@pytest.mark.randomized(seed=5)
def test_a_run_whose_snapshot_would_not_fit_a_configmap_fails_at_start_saying_so(
    emulator: EmulatorServer, operator: OperatorProcess, rng: random.Random
) -> None:
    # Two JobNets of ~900 KB of incompressible env each: every object fits, their snapshot (~1.3 MB
    # gzipped) does not. Admission refuses a JobNet whose own snapshot cannot fit, so "huge" is
    # written while its parts are small, and the parts grow afterwards (each one's own snapshot
    # still fits): only a run of "huge" finds out. ``create``/``replace``, not ``apply``: apply's
    # last-applied annotation would not fit.
    small = [jobnet(f"part{i}", script_job("a")) for i in range(2)]
    huge = jobnet("huge", expand_job("p0", "part0"), expand_job("p1", "part1"))
    assert kubectl_apply(emulator, *small, huge, verb="create").rc == 0
    parts = [
        jobnet(f"part{i}", {**script_job("a"), "env": {"NOISE": base64.b64encode(rng.randbytes(675_000)).decode()}})
        for i in range(2)
    ]
    replaced = kubectl_apply(emulator, *parts, verb="replace")
    assert replaced.rc == 0, replaced.stderr
    assert kubectl_apply(emulator, jobrun("huge", name="huge-1"), verb="create").rc == 0

    status = wait_until(
        lambda: (
            (emulator.get("jobnet.dev/v1alpha1", "jobruns", "default", "huge-1") or {}).get("status", {}).get("reason")
            and emulator.get("jobnet.dev/v1alpha1", "jobruns", "default", "huge-1")["status"]
        ),
        timeout=30,
        what="the JobRun's status",
    )

    assert status["phase"] == "Failed" and status["reason"] == "JobNetSnapshotTooLarge", status
    assert "more than a ConfigMap holds" in status["message"] and "JobNets huge, part0, part1" in status["message"]
    assert "jobNetSnapshot" not in status
    wait_until(
        lambda: [e for e in emulator.events_for("default", "huge-1") if e["reason"] == "JobNetSnapshotTooLarge"],
        timeout=15.0,
        what="a JobNetSnapshotTooLarge Event on the JobRun",
    )
    assert not [
        c
        for c in emulator.list_objects("v1", "configmaps", "default")
        if c["metadata"]["name"].startswith("huge-1-jobnets-")
    ]
