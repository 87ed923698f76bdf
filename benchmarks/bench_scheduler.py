"""Cost of one pure reconcile decision for runs of 1,000 and 10,000 jobs.

Chains: a root JobNet expanding `part` N/100 times; `part` has 100 jobs, 10 chains of 10.
Measured: the first reconcile (launches every chain head), and the median reconcile that
collects ONE finished job and launches its successor — the scheduler's share of dispatch
latency (upstream exit -> downstream launch request) in a run of that size.

Fan-out: `start` then N jobs after it, all N running; the median reconcile that collects ONE
finished job (every running job is checked: records, heartbeat deadline) — the per-round cost
of a large fan-out. CPU time of this process, so a busy machine changes it little.

Run: python3 benchmarks/bench_scheduler.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.expansion import RunGraph, expand
from jobnet.core.models import JobNetSpec
from jobnet.core.scheduler import AgentFacts, Decision, Launch, RunRuntime, SchedulerPolicy, new_runtime, reconcile

HOST = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
HOST_ID = "batch@vm1.batch.example:22"


class FakeJournal:
    """The agents' journal records the scheduler is given, each new state with the next seq."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}
        self.seq = 0

    def __call__(self, key: JobKey, state: str, **fields: object) -> None:
        self.seq += 1
        self.records[key.text()] = JobRecord.model_validate({"key": key, "seq": self.seq, "state": state, **fields})


def build(jobs: int) -> RunGraph:
    part = {
        "jobs": [
            {"name": f"s{i}", "script": "/bin/true", "after": [f"s{i - 10}"] if i >= 10 else []} for i in range(100)
        ]
    }
    root = {"host": HOST, "jobs": [{"name": f"p{i}", "expand": "part"} for i in range(jobs // 100)]}
    catalog = {"root": JobNetSpec.model_validate(root), "part": JobNetSpec.model_validate(part)}
    return expand("root", catalog, run_id="bench")


def measure(jobs: int, repeat: int) -> None:
    graph = build(jobs)
    policy = SchedulerPolicy()
    now = 1000.0
    started = time.process_time()
    decision = reconcile(graph, new_runtime("bench"), AgentFacts(), policy, now)
    first = time.process_time() - started
    launches = [a for a in decision.actions if isinstance(a, Launch)]
    agent = FakeJournal()

    for launch in launches:
        agent(launch.key, "running", pid=agent.seq + 100)
    runtime = reconcile(
        graph, decision.runtime, AgentFacts(records=agent.records, heartbeats={HOST_ID: now}), policy, now
    ).runtime
    samples = []
    for launch in launches[:repeat]:
        agent(launch.key, "exited", exitCode=0)
        facts = AgentFacts(records=agent.records, heartbeats={HOST_ID: now})
        started = time.process_time()
        decision = reconcile(graph, runtime, facts, policy, now)
        samples.append(time.process_time() - started)
        runtime = decision.runtime
        assert any(isinstance(a, Launch) for a in decision.actions)
    print(
        f"{jobs:>6} jobs: first reconcile {first * 1000:7.1f} ms ({len(launches)} launches); "
        f"one completion -> next launch: median {statistics.median(samples) * 1000:6.2f} ms, "
        f"max {max(samples) * 1000:6.2f} ms over {len(samples)}"
    )


def measure_fanout(jobs: int, repeat: int) -> None:
    spec = {
        "host": HOST,
        "jobs": [
            {"name": "start", "script": "/bin/true"},
            *({"name": f"f{i:05d}", "script": "/bin/true", "after": ["start"]} for i in range(jobs)),
        ],
    }
    graph = expand("fan", {"fan": JobNetSpec.model_validate(spec)}, run_id="bench")
    policy = SchedulerPolicy()
    now = 1000.0
    agent = FakeJournal()

    def decide(runtime: RunRuntime) -> Decision:
        return reconcile(graph, runtime, AgentFacts(records=agent.records, heartbeats={HOST_ID: now}), policy, now)

    decision = reconcile(graph, new_runtime("bench"), AgentFacts(), policy, now)
    [start] = [a for a in decision.actions if isinstance(a, Launch)]
    agent(start.key, "exited", exitCode=0, pid=100)
    decision = decide(decision.runtime)
    fan = [a for a in decision.actions if isinstance(a, Launch)]
    for launch in fan:
        agent(launch.key, "running", pid=agent.seq + 100)
    runtime = decide(decision.runtime).runtime
    samples = []
    for launch in fan[:repeat]:
        agent(launch.key, "exited", exitCode=0)
        started = time.process_time()
        runtime = decide(runtime).runtime
        samples.append(time.process_time() - started)
    print(
        f"{jobs:>6} jobs running (fan-out), one completes: median {statistics.median(samples) * 1000:6.2f} ms CPU, "
        f"max {max(samples) * 1000:6.2f} ms over {len(samples)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    for jobs in (100, 1_000, 10_000):
        measure(jobs, args.repeat)
    for jobs in (1_000, 10_000):
        measure_fanout(jobs, args.repeat)


if __name__ == "__main__":
    main()
