"""Agent channel benchmarks on a namespace VM: request round trip, launches per second, and
completions per second of a fan-out (every launch sent at once, until every `exited` event
has arrived on the watch stream) with the VM's CPU time per job.

    python3 benchmarks/bench_agent_roundtrip.py [--pings 2000] [--launches 300] [--fanout 500]

The machine is shared: `nice -n -15` in front keeps other work from dominating the figures.

Targets (issue 3): warm-channel round trip < 1 ms median."""

from __future__ import annotations

import argparse
import concurrent.futures
import queue
import time

from _agent_vm import agent_on_vm, summary_ms

from jobnet.core.agentproto import JobKey, LaunchRequest, LaunchResult, PingRequest, PingResult
from tests.vm.harness import AgentHarness, new_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument("--spaced", type=int, default=20, help="launches measured one at a time on an idle agent")
    parser.add_argument("--spacing", type=float, default=0.5)
    parser.add_argument("--fanout", type=int, default=500, help="jobs of the fan-out (0: skip it)")
    args = parser.parse_args()

    with agent_on_vm() as agent:
        chan = agent.chan
        for _ in range(50):  # warm up
            chan.call(PingRequest(), PingResult)
        round_trips = []
        for _ in range(args.pings):
            start = time.perf_counter()
            chan.call(PingRequest(), PingResult)
            round_trips.append(time.perf_counter() - start)
        print(f"ping round trip over a warm channel: {summary_ms(round_trips)}")

        run = new_key().run
        launch_times = []
        start_all = time.perf_counter()
        for index in range(args.launches):
            start = time.perf_counter()
            chan.call(
                LaunchRequest(key=JobKey(run=run, path=f"/bench/seq{index}", attempt=1), script="/bin/true"),
                LaunchResult,
            )
            launch_times.append(time.perf_counter() - start)
        elapsed = time.perf_counter() - start_all
        print(
            f"sequential launches (/bin/true, answered with pid): {args.launches / elapsed:.0f} launches/s; "
            f"per launch {summary_ms(launch_times)}"
        )

        spaced = []
        for index in range(args.spaced):
            time.sleep(args.spacing)  # let the agent get ready for the next job (idle VM case)
            start = time.perf_counter()
            chan.call(
                LaunchRequest(key=JobKey(run=run, path=f"/bench/spaced{index}", attempt=1), script="/bin/true"),
                LaunchResult,
            )
            spaced.append(time.perf_counter() - start)
        print(f"launch latency on an idle agent (one launch every {args.spacing}s): {summary_ms(spaced)}")

        start_all = time.perf_counter()
        futures = [
            chan.submit(LaunchRequest(key=new_key(f"/bench/par{index}"), script="/bin/true"))
            for index in range(args.launches)
        ]
        concurrent.futures.wait(futures, timeout=120)
        elapsed = time.perf_counter() - start_all
        failed = sum(1 for f in futures if not f.done() or f.exception())
        print(f"pipelined launches through one channel: {args.launches / elapsed:.0f} launches/s ({failed} failed)")

        if args.fanout:
            fan_out(agent, args.fanout)


def fan_out(agent: AgentHarness, jobs: int) -> None:
    # Only this fan-out's events count (the watch replays the earlier jobs' too).
    replayed_up_to = agent.chan.watch(0).last_seq
    keys = {new_key(f"/bench/fan{index}") for index in range(jobs)}
    with agent.cpu.measure("fan-out", jobs):
        start = time.perf_counter()
        futures = [agent.chan.submit(LaunchRequest(key=key, script="/bin/true")) for key in keys]
        pending = set(keys)
        deadline = start + 120
        while pending and time.perf_counter() < deadline:
            try:
                record = agent.events.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if record.state == "exited" and record.seq > replayed_up_to:
                pending.discard(record.key)
        elapsed = time.perf_counter() - start
    failed = sum(1 for f in futures if not f.done() or f.exception())
    print(
        f"fan-out of {jobs} /bin/true jobs through one channel: {(jobs - len(pending)) / elapsed:.0f} "
        f"completions/s ({elapsed:.2f} s; {len(pending)} not exited, {failed} launches failed)"
    )


if __name__ == "__main__":
    main()
