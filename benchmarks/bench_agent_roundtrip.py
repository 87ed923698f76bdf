"""Agent channel benchmarks on a namespace VM: request round trip and launches per second.

    python3 benchmarks/bench_agent_roundtrip.py [--pings 2000] [--launches 300]

Targets (issue 3): warm-channel round trip < 1 ms median."""

from __future__ import annotations

import argparse
import concurrent.futures
import time

from _agent_vm import agent_on_vm, summary_ms

from jobnet.core.agentproto import JobKey, LaunchRequest, LaunchResult, PingRequest, PingResult
from tests.vm.harness import new_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--launches", type=int, default=300)
    parser.add_argument("--spaced", type=int, default=20, help="launches measured one at a time on an idle agent")
    parser.add_argument("--spacing", type=float, default=0.5)
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
            chan.call(LaunchRequest(key=JobKey(run=run, path=f"/bench/seq{index}", attempt=1), script="/bin/true"),
                      LaunchResult)
            launch_times.append(time.perf_counter() - start)
        elapsed = time.perf_counter() - start_all
        print(f"sequential launches (/bin/true, answered with pid): {args.launches / elapsed:.0f} launches/s; "
              f"per launch {summary_ms(launch_times)}")

        spaced = []
        for index in range(args.spaced):
            time.sleep(args.spacing)  # let the agent get ready for the next job (idle VM case)
            start = time.perf_counter()
            chan.call(LaunchRequest(key=JobKey(run=run, path=f"/bench/spaced{index}", attempt=1), script="/bin/true"),
                      LaunchResult)
            spaced.append(time.perf_counter() - start)
        print(f"launch latency on an idle agent (one launch every {args.spacing}s): {summary_ms(spaced)}")

        start_all = time.perf_counter()
        futures = [chan.submit(LaunchRequest(key=new_key(f"/bench/par{index}"), script="/bin/true"))
                   for index in range(args.launches)]
        concurrent.futures.wait(futures, timeout=120)
        elapsed = time.perf_counter() - start_all
        failed = sum(1 for f in futures if not f.done() or f.exception())
        print(f"pipelined launches through one channel: {args.launches / elapsed:.0f} launches/s ({failed} failed)")


if __name__ == "__main__":
    main()
