"""Prometheus metrics of the operator, in a registry of its own (never the global one).

The runtime reports through :data:`operator_metrics` (an :class:`OperatorMetrics`)::

    from jobnet.metrics import operator_metrics as metrics

    metrics.observe_run(run_uid, phase, job_counts, stuck_reasons)  # after each status write
    metrics.forget_run(run_uid)                                      # JobRun deleted
    metrics.job_transition("Running")
    metrics.observe_dispatch_latency(seconds)   # upstream exit -> downstream started on the VM
    metrics.observe_agent_roundtrip(seconds)    # one agent request answered
    metrics.ssh_reconnect(host)
    metrics.api_write("jobruns")

Gauges of runs, jobs and stuck jobs are not incremented and decremented by callers (a missed
decrement would drift forever): the runtime reports each run's current summary, and the
gauges are summed over the known runs when Prometheus scrapes. ``jobnet operator
--metrics-port 9090`` serves ``/metrics`` (see docs/metrics.md for every metric).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobnet.core.states import JobState, RunPhase, StuckReason

#: Seconds; dense below 20 ms (the dispatch latency target) and up to 10 s (a slow VM).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_PHASES = tuple(str(phase) for phase in RunPhase)
_STATES = tuple(str(state) for state in JobState)
_STUCK_REASONS = tuple(str(reason) for reason in StuckReason)


def _checked(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class RunSummary:
    """What the gauges need of one run."""

    phase: str
    job_counts: Mapping[str, int] = field(default_factory=dict)
    stuck_reasons: Mapping[str, int] = field(default_factory=dict)


class _RunGauges(Collector):
    """jobnet_runs, jobnet_jobs and jobnet_stuck_jobs, summed over the runs at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunSummary] = {}

    def update(self, run_uid: str, summary: RunSummary) -> None:
        with self._lock:
            self._runs[run_uid] = summary

    def forget(self, run_uid: str) -> None:
        with self._lock:
            self._runs.pop(run_uid, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            runs = list(self._runs.values())
        phases = dict.fromkeys(_PHASES, 0)
        states = dict.fromkeys(_STATES, 0)
        stuck = dict.fromkeys(_STUCK_REASONS, 0)
        for run in runs:
            phases[run.phase] += 1
            for state, count in run.job_counts.items():
                states[state] += count
            for reason, count in run.stuck_reasons.items():
                stuck[reason] = stuck.get(reason, 0) + count
        yield _gauge("jobnet_runs", "JobRuns known to this operator, by phase.", "phase", phases)
        yield _gauge("jobnet_jobs", "Jobs of the known JobRuns, by state.", "state", states)
        yield _gauge("jobnet_stuck_jobs", "Stuck jobs of the known JobRuns, by stuck reason.", "reason", stuck)


def _gauge(name: str, documentation: str, label: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


class OperatorMetrics:
    """Every metric of the operator, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._runs = _RunGauges()
        self.registry.register(self._runs)
        self._transitions = Counter(
            "jobnet_job_transitions", "Job state changes, by the state entered.", ["state"], registry=self.registry
        )
        self._dispatch_latency = Histogram(
            "jobnet_dispatch_latency_seconds",
            "From an upstream job's exit to its downstream job started on the VM.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._agent_roundtrip = Histogram(
            "jobnet_agent_roundtrip_seconds",
            "From sending a request to the agent to its answer.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._ssh_reconnects = Counter(
            "jobnet_ssh_reconnects",
            "SSH connections re-established to a host after one was lost.",
            ["host"],
            registry=self.registry,
        )
        self._api_writes = Counter(
            "jobnet_api_writes",
            "Writes to the Kubernetes API (status patches, Events), by resource.",
            ["resource"],
            registry=self.registry,
        )

    def observe_run(
        self,
        run_uid: str,
        phase: str,
        job_counts: Mapping[str, int],
        stuck_reasons: Mapping[str, int] | None = None,
    ) -> None:
        """The current summary of one run (replaces the previous one): its phase, how many of
        its jobs are in each state, and how many Stuck jobs have each reason."""
        _checked(phase, _PHASES, "run phase")
        for state in job_counts:
            _checked(state, _STATES, "job state")
        self._runs.update(run_uid, RunSummary(phase, dict(job_counts), dict(stuck_reasons or {})))

    def forget_run(self, run_uid: str) -> None:
        """The run is gone (deleted): it no longer counts in the gauges."""
        self._runs.forget(run_uid)

    def job_transition(self, state: str) -> None:
        """A job entered ``state``."""
        self._transitions.labels(_checked(state, _STATES, "job state")).inc()

    def observe_dispatch_latency(self, seconds: float) -> None:
        self._dispatch_latency.observe(seconds)

    def observe_agent_roundtrip(self, seconds: float) -> None:
        self._agent_roundtrip.observe(seconds)

    def ssh_reconnect(self, host: str) -> None:
        self._ssh_reconnects.labels(host).inc()

    def api_write(self, resource: str) -> None:
        """One write request to the API server about ``resource`` (``jobruns``, ``events``, ...)."""
        self._api_writes.labels(resource).inc()

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def serve(self, port: int, address: str = "0.0.0.0") -> WSGIServer:
        """Serve ``/metrics`` over HTTP from a daemon thread; ``server.shutdown()`` stops it.

        Port 0 picks a free port (``server.server_port`` tells which)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server


#: The operator's metrics (one operator process, one set of metrics).
operator_metrics = OperatorMetrics()
