"""The operator's Prometheus metrics, scraped over real HTTP from the metrics server."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from jobnet.metrics import OperatorMetrics
from tests.support.emulator import free_port
from tests.support.netutil import wait_until

EXPECTED_FAMILIES = {
    "jobnet_runs": "gauge",
    "jobnet_jobs": "gauge",
    "jobnet_stuck_jobs": "gauge",
    "jobnet_job_transitions": "counter",
    "jobnet_dispatch_latency_seconds": "histogram",
    "jobnet_agent_roundtrip_seconds": "histogram",
    "jobnet_ssh_reconnects": "counter",
    "jobnet_api_writes": "counter",
}


def scrape(url: str) -> dict[str, list[Sample]]:
    """GET the exposition text and parse it: family name -> samples (family types checked by the caller)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, f"expected one sample {name}{labels}, got {matches}"
    return matches[0]


@pytest.fixture
def served() -> Iterator[tuple[OperatorMetrics, str]]:
    metrics = OperatorMetrics()
    server = metrics.serve(0, "127.0.0.1")
    try:
        yield metrics, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_every_metric_is_exposed_with_its_type(served: tuple[OperatorMetrics, str]) -> None:
    _, url = served
    with urllib.request.urlopen(url, timeout=5) as response:
        families = {f.name: f.type for f in text_string_to_metric_families(response.read().decode())}
    for name, kind in EXPECTED_FAMILIES.items():
        assert families.get(name) == kind, f"{name}: {families.get(name)}"


def test_run_gauges_sum_the_latest_summary_of_each_run(served: tuple[OperatorMetrics, str]) -> None:
    metrics, url = served
    metrics.observe_run("uid-1", "Running", {"Running": 2, "Pending": 3})
    metrics.observe_run("uid-2", "Stuck", {"Stuck": 2, "Succeeded": 1}, {"HeartbeatLost": 1, "HostDown": 1})
    metrics.observe_run("uid-1", "Running", {"Running": 1, "Succeeded": 4})  # replaces, never adds up

    scraped = scrape(url)
    assert value(scraped["jobnet_runs"], "jobnet_runs", phase="Running") == 1
    assert value(scraped["jobnet_runs"], "jobnet_runs", phase="Stuck") == 1
    assert value(scraped["jobnet_runs"], "jobnet_runs", phase="Succeeded") == 0
    assert value(scraped["jobnet_jobs"], "jobnet_jobs", state="Running") == 1
    assert value(scraped["jobnet_jobs"], "jobnet_jobs", state="Pending") == 0
    assert value(scraped["jobnet_jobs"], "jobnet_jobs", state="Succeeded") == 5
    assert value(scraped["jobnet_stuck_jobs"], "jobnet_stuck_jobs", reason="HeartbeatLost") == 1
    assert value(scraped["jobnet_stuck_jobs"], "jobnet_stuck_jobs", reason="LaunchOutcomeUnknown") == 0

    metrics.forget_run("uid-2")
    scraped = scrape(url)
    assert value(scraped["jobnet_runs"], "jobnet_runs", phase="Stuck") == 0
    assert value(scraped["jobnet_stuck_jobs"], "jobnet_stuck_jobs", reason="HeartbeatLost") == 0


def test_counters_and_histograms(served: tuple[OperatorMetrics, str]) -> None:
    metrics, url = served
    for state in ("Starting", "Running", "Running", "Succeeded"):
        metrics.job_transition(state)
    for seconds in (0.004, 0.015, 0.3):
        metrics.observe_dispatch_latency(seconds)
    metrics.observe_agent_roundtrip(0.0008)
    metrics.ssh_reconnect("198.18.0.6")
    metrics.ssh_reconnect("198.18.0.6")
    for resource in ("jobruns", "jobruns", "events"):
        metrics.api_write(resource)

    scraped = scrape(url)
    transitions = scraped["jobnet_job_transitions"]
    assert value(transitions, "jobnet_job_transitions_total", state="Running") == 2
    assert value(transitions, "jobnet_job_transitions_total", state="Succeeded") == 1
    latency = scraped["jobnet_dispatch_latency_seconds"]
    assert value(latency, "jobnet_dispatch_latency_seconds_count") == 3
    assert value(latency, "jobnet_dispatch_latency_seconds_bucket", le="0.005") == 1
    assert value(latency, "jobnet_dispatch_latency_seconds_bucket", le="0.02") == 2
    assert value(latency, "jobnet_dispatch_latency_seconds_bucket", le="+Inf") == 3
    assert value(latency, "jobnet_dispatch_latency_seconds_sum") == pytest.approx(0.319)
    roundtrip = scraped["jobnet_agent_roundtrip_seconds"]
    assert value(roundtrip, "jobnet_agent_roundtrip_seconds_bucket", le="0.001") == 1
    assert value(scraped["jobnet_ssh_reconnects"], "jobnet_ssh_reconnects_total", host="198.18.0.6") == 2
    writes = scraped["jobnet_api_writes"]
    assert value(writes, "jobnet_api_writes_total", resource="jobruns") == 2
    assert value(writes, "jobnet_api_writes_total", resource="events") == 1


def test_registries_are_separate() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.job_transition("Failed")
    assert b'jobnet_job_transitions_total{state="Failed"} 1.0' in first.exposition()
    assert b"jobnet_job_transitions_total{" not in second.exposition()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.job_transition("Runing"), "unknown job state 'Runing'"),
        (lambda m: m.observe_run("u", "Done", {}), "unknown run phase 'Done'"),
        (lambda m: m.observe_run("u", "Running", {"Sleeping": 1}), "unknown job state 'Sleeping'"),
    ],
)
def test_bad_labels_are_refused_clearly(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(OperatorMetrics())  # type: ignore[operator]


def test_operator_command_serves_metrics_before_connecting(tmp_path: object) -> None:
    """``jobnet operator --metrics-port`` serves /metrics even while no API server answers."""
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig.yaml"  # type: ignore[operator]
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobnet.cli",
            "operator",
            "--no-leader-election",
            "--kubeconfig",
            str(kubeconfig),
            "--metrics-port",
            str(port),
            "--metrics-address",
            "127.0.0.1",
            "--liveness-endpoint",
            "",
            "--webhook-port",
            str(free_port()),
            "--webhook-listen-address",
            "127.0.0.1",
            "--webhook-insecure",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"

    def reachable() -> bool:
        try:
            return bool(scrape(url))
        except OSError:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            return False

    try:
        # A loaded machine starts Python slowly: a generous bound, not a wait.
        wait_until(reachable, timeout=60, what="the operator's /metrics endpoint")
        assert set(EXPECTED_FAMILIES) <= set(scrape(url))
    finally:
        process.terminate()
        process.wait(timeout=15)
