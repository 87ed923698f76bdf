"""What one round of a run tells the metrics (docs/metrics.md): called after its status write.

The facts come from the scheduler's runtime before and after the round; the dispatch latency
uses the agents' own times (an upstream job's ``finished_at`` and its downstream job's
``started_at`` are the agent records' ``endedAt``/``startedAt``, one clock per VM).
"""

from __future__ import annotations

from jobnet.core.expansion import RunGraph
from jobnet.core.scheduler import Decision, RunRuntime
from jobnet.core.states import JobState
from jobnet.metrics import OperatorMetrics


def report_round(metrics: OperatorMetrics, graph: RunGraph, before: RunRuntime, decision: Decision) -> None:
    after = decision.runtime
    for path in decision.changed:
        old = before.jobs.get(path)
        new = after.jobs[path]
        if old is None or old.state != new.state:
            metrics.job_transition(str(new.state))
        if new.started_at is not None and (old is None or old.started_at is None):
            latency = _dispatch_latency(graph, after, path, new.started_at)
            if latency is not None:
                metrics.observe_dispatch_latency(latency)
    counts = dict(decision.counts)  # every job of the graph (a decision's runtime holds them all)
    stuck_reasons: dict[str, int] = {}
    if counts.get(str(JobState.STUCK)):
        for job in after.jobs.values():
            if job.state == JobState.STUCK and job.reason is not None:
                stuck_reasons[str(job.reason)] = stuck_reasons.get(str(job.reason), 0) + 1
    metrics.observe_run(after.run_uid, str(after.phase), counts, stuck_reasons)


def _dispatch_latency(graph: RunGraph, runtime: RunRuntime, path: str, started_at: float) -> float | None:
    """From the last of the job's upstream jobs ending to the job starting (None: no upstream
    job, or one is a jobnet or has no end time: nothing to measure)."""
    upstream = graph.nodes[path].after
    ends = []
    for name in upstream:
        job = runtime.jobs.get(name)
        if graph.nodes[name].kind != "job" or job is None or job.finished_at is None:
            return None
        ends.append(job.finished_at)
    if not ends:
        return None
    return max(0.0, started_at - max(ends))
