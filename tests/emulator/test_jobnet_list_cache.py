"""KubeClient.list_jobnets reads the JobNets from the API server every time, and parses a JobNet
again only when its version changed: the same uid and resourceVersion give the parse of the
last list (admission of each JobRun and each run's start list the namespace's JobNets)."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from jobnet.kube.client import KubeClient
from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, script_job

pytestmark = pytest.mark.emulator


def test_each_list_reads_the_api_and_reparses_only_new_versions(emulator: EmulatorServer) -> None:
    emulator.put(jobnet("a", script_job("one")))
    emulator.put(jobnet("b", script_job("one")))

    async def scenario() -> None:
        client = KubeClient()
        await client.connect(kopf.ConnectionInfo(server=emulator.url))
        try:
            first = await client.list_jobnets("default")
            second = await client.list_jobnets("default")
            assert first.catalog["a"] is second.catalog["a"] and first.catalog["b"] is second.catalog["b"]

            emulator.put(jobnet("a", script_job("two")))  # a new version of a
            emulator.remove("jobnet.dev/v1alpha1", "jobnets", "default", "b")
            emulator.put(jobnet("b", script_job("one")))  # the same spec, a new object (uid)
            third = await client.list_jobnets("default")
            assert [job.name for job in third.catalog["a"].jobs] == ["two"]
            assert third.catalog["b"] is not second.catalog["b"]
            assert third.catalog["b"] == second.catalog["b"]

            emulator.remove("jobnet.dev/v1alpha1", "jobnets", "default", "a")
            assert sorted((await client.list_jobnets("default")).catalog) == ["b"]  # read, never remembered
        finally:
            await client.close()

    asyncio.run(scenario())
