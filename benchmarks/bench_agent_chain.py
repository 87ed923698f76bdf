"""Agent-level dispatch latency on a namespace VM: a chain of jobs, each launched when the
previous one's `exited` event arrives on the watch stream (the lower bound of the operator's
"upstream exit -> downstream started" latency; the operator adds its own decision time).

    python3 benchmarks/bench_agent_chain.py [--jobs 30]

Reported: exit (agent's endedAt) -> event received, exit -> next job started (startedAt; the VM
shares the host's clock), and the VM's CPU time per job (every VM process: sshd, agent, job)."""

from __future__ import annotations

import argparse
import itertools
import queue
import time

from _agent_vm import agent_on_vm, summary_ms

from jobnet.core.agentproto import JobKey, LaunchRequest, LaunchResult
from tests.vm.harness import AgentHarness, new_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()

    with agent_on_vm() as agent:
        agent.chan.watch(0)
        run = new_key().run
        keys = [JobKey(run=run, path=f"/chain/j{index}", attempt=1) for index in range(args.jobs)]
        with agent.cpu.measure("chain", args.jobs):
            start = time.perf_counter()
            ended_at, started_at, accepted_at, exit_to_event = run_chain(agent, keys)
            elapsed = time.perf_counter() - start
        while True:  # the last running events may still be queued
            try:
                record = agent.events.get_nowait()
            except queue.Empty:
                break
            if record.state == "running" and record.started_at:
                started_at[record.key] = record.started_at
                accepted_at[record.key] = record.accepted_at or record.started_at
        exit_to_next_start = [
            started_at[following] - ended_at[previous]
            for previous, following in itertools.pairwise(keys)
            if following in started_at
        ]
        print(
            f"chain of {args.jobs} /bin/true jobs through one channel: {elapsed:.2f} s "
            f"({elapsed / args.jobs * 1e3:.1f} ms per job)"
        )
        print(f"exit -> exited event at the client: {summary_ms(exit_to_event)}")
        print(f"exit -> next job started on the VM: {summary_ms(exit_to_next_start)}")
        print(
            f"  of which accepted -> started (the agent's part): "
            f"{summary_ms([started_at[key] - accepted_at[key] for key in started_at])}"
        )


Times = dict[JobKey, float]


def run_chain(agent: AgentHarness, keys: list[JobKey]) -> tuple[Times, Times, Times, list[float]]:
    """Launch each job when the previous one's ``exited`` event arrives: (ended at, started at,
    accepted at, exit -> event received) per job."""
    ended_at: Times = {}
    started_at: Times = {}
    accepted_at: Times = {}
    exit_to_event = []
    agent.chan.call(LaunchRequest(key=keys[0], script="/bin/true"), LaunchResult)
    index = 0
    while index < len(keys):
        record = agent.events.get(timeout=30)
        if record.state == "running" and record.started_at:
            started_at[record.key] = record.started_at
            accepted_at[record.key] = record.accepted_at or record.started_at
        if record.key != keys[index] or record.state != "exited":
            continue
        received = time.time()
        ended_at[record.key] = record.ended_at or received
        exit_to_event.append(received - ended_at[record.key])
        index += 1
        if index < len(keys):
            agent.chan.call(LaunchRequest(key=keys[index], script="/bin/true"), LaunchResult)
    return ended_at, started_at, accepted_at, exit_to_event


if __name__ == "__main__":
    main()
