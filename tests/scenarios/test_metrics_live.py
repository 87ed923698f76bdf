"""The operator's /metrics, scraped while it runs a real two-job chain on a namespace VM."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.emulator import free_port
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_follow_a_two_job_chain(scenario: Scenario) -> None:
    vm = scenario.vm()
    port = free_port()
    scenario.start_operator("--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    first, second = (scenario.marker_script(vm, name) for name in ("first", "second"))
    run = scenario.run_jobnet("chain", scenario.host(vm), [
        {"name": "first", "script": first},
        {"name": "second", "script": second, "after": ["first"]},
    ])  # fmt: skip
    scenario.wait_phase(run, "Succeeded", timeout=60)

    def scraped_after_the_run() -> dict | None:
        current = scrape(url)
        return current if current.get(("jobnet_runs", (("phase", "Succeeded"),))) == 1 else None

    # The gauges are reported just after the status write the test saw: poll for them.
    samples = wait_until(scraped_after_the_run, timeout=10, what="the succeeded run in jobnet_runs")

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("jobnet_jobs", state="Succeeded") == 2
    assert value("jobnet_jobs", state="Running") == 0 and value("jobnet_jobs", state="Stuck") == 0
    # (Running may be skipped: a short job's exit can arrive with its launch's answer.)
    for state in ("Starting", "Succeeded"):
        assert value("jobnet_job_transitions_total", state=state) == 2, state
    # Only the second job has an upstream job: one latency, from the agent's own times.
    assert value("jobnet_dispatch_latency_seconds_count") == 1
    assert 0 <= value("jobnet_dispatch_latency_seconds_sum") < 30
    assert value("jobnet_agent_roundtrip_seconds_count") >= 2  # at least the two launches
    assert value("jobnet_api_writes_total", resource="jobruns") > 0
    assert value("jobnet_api_writes_total", resource="events") > 0
