"""While leading, the RunLeader retries a failed list of JobRuns and a failed start of a run with
a backoff that doubles from ``--retry-delay`` up to ``--api-retry-max-delay`` and starts anew
for each call (kube/app.py RunLeader)."""

from __future__ import annotations

import asyncio
from typing import Any

from jobnet.kube.app import OperatorConfig, RunLeader
from jobnet.kube.client import KubeApiError
from jobnet.kube.leadership import ALWAYS_LEADING

CONFIG = OperatorConfig(namespaces=("a", "b"), retry_delay=1.0, api_retry_max_delay=6.0)


class FlakyClient:
    """Fails each namespace's first ``failures[namespace]`` calls, then answers (or, for the
    JobNets a start reads, says the run is gone)."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = dict(failures)
        self.calls: list[str] = []

    def _maybe_fail(self, what: str, namespace: str) -> None:
        self.calls.append(namespace)
        if self.failures.get(namespace, 0) > 0:
            self.failures[namespace] -= 1
            raise KubeApiError(what, 503, "the API server is away")

    async def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        self._maybe_fail(f"list {plural}", namespace or "")
        return []

    async def list_jobnets(self, namespace: str) -> Any:
        self._maybe_fail("list jobnets", namespace)
        raise KubeApiError("list jobnets", 404, "gone")  # the run was deleted meanwhile: stop


def leader(client: FlakyClient) -> tuple[RunLeader, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    runs = RunLeader(CONFIG, client, ALWAYS_LEADING, None, sleep=sleep)  # type: ignore[arg-type]
    runs.active = True
    return runs, slept


def test_a_failing_list_is_retried_with_a_doubling_backoff_that_resets_after_a_success() -> None:
    client = FlakyClient({"a": 5, "b": 2})
    runs, slept = leader(client)
    asyncio.run(runs._list_and_start())
    assert slept == [1, 2, 4, 6, 6] + [1, 2]  # namespace b starts from the shortest delay again
    assert client.calls == ["a"] * 6 + ["b"] * 3


def test_a_failing_start_is_retried_with_the_same_backoff() -> None:
    client = FlakyClient({"batch": 4})
    runs, slept = leader(client)
    body = {"metadata": {"name": "nightly-1", "namespace": "batch", "uid": "u-1"}, "spec": {}}
    asyncio.run(runs._start(body))
    assert slept == [1, 2, 4, 6]
    assert len(client.calls) == 5 and not runs._starting
