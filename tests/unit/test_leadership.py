"""The leader's work (kube/leadership.py, kube/app.py): the gate refuses writes of a replica
that does not lead; becoming leader describes every namespace's JobNets (changed under no
leader) and starts the work in order; losing the lead stops it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from jobnet.core.models import JobNetSpec
from jobnet.core.validation import parse_jobnet
from jobnet.kube.app import JobNetDescriber, OperatorConfig
from jobnet.kube.client import NamespaceJobNets
from jobnet.kube.leadership import LeaderGate, Leadership, NotLeading
from tests.support.kube import jobnet, script_job


class FakeClient:
    """JobNets of two namespaces; records the status patches."""

    def __init__(self) -> None:
        self.items = [jobnet("a", script_job("x"), namespace="batch"), jobnet("b", script_job("y"), namespace="etl")]
        self.patches: list[tuple[str, str]] = []

    async def list_objects(self, plural: str, namespace: str | None, label_selector: str | None = None) -> list[Any]:
        assert plural == "jobnets" and namespace is None
        return self.items

    async def list_jobnets(self, namespace: str) -> NamespaceJobNets:
        mine = [item for item in self.items if item["metadata"]["namespace"] == namespace]
        catalog = {item["metadata"]["name"]: parse_jobnet(item["spec"]) for item in mine}
        assert all(isinstance(spec, JobNetSpec) for spec in catalog.values())
        return NamespaceJobNets(catalog, {}, {name: {} for name in catalog})  # type: ignore[arg-type]

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append((namespace, name))


class Work:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def lead(self) -> None:
        self.log.append(f"lead {self.name}")

    async def follow(self) -> None:
        self.log.append(f"follow {self.name}")


def test_the_gate_refuses_while_not_leading() -> None:
    leading = [False]
    gate = LeaderGate("replica-a", lambda: leading[0])
    with pytest.raises(NotLeading, match="patching x: not done: replica-a is not the leader"):
        gate.check("patching x")
    leading[0] = True
    gate.check("patching x")


def test_becoming_leader_describes_every_namespaces_jobnets_and_a_follower_describes_none() -> None:
    async def scenario() -> None:
        client = FakeClient()
        leading = [False]
        describer = JobNetDescriber(OperatorConfig(), client, LeaderGate("a", lambda: leading[0]))  # type: ignore[arg-type]
        await describer.on_event("ADDED", client.items[0], "batch")
        assert client.patches == []
        leading[0] = True
        await describer.lead()
        assert describer._task is not None
        await describer._task
        assert sorted(client.patches) == [("batch", "a"), ("etl", "b")]
        assert describer.described == {"batch", "etl"}
        await describer.follow()
        assert describer.described == set()

    asyncio.run(scenario())


def test_without_election_the_work_starts_at_once_and_stops_in_order() -> None:
    async def scenario() -> None:
        log: list[str] = []
        leadership = Leadership(None, [Work("runs", log), Work("schedules", log)])
        leadership.start()
        assert leadership._task is not None
        await leadership._task
        await leadership.stop()
        assert log == ["lead runs", "lead schedules", "follow runs", "follow schedules"]

    asyncio.run(scenario())
