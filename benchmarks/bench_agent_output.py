"""Output throughput of the agent on a namespace VM: a job writing 1 GB to stdout.

    python3 benchmarks/bench_agent_output.py [--bytes 1000000000]

Measures launch -> `exited` time for the default output cap (head+tail kept, middle dropped)
and with a cap above the size (everything written to disk), and the supervisor's peak RSS."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _agent_vm import agent_on_vm

from tests.support.netutil import wait_until
from tests.vm.harness import new_key


def run_once(size: int, extra_args: list[str], label: str) -> None:
    with agent_on_vm(extra_args) as agent:
        script = agent.script("write.sh", f"head -c {size} /dev/zero\n")
        key = new_key("/bench/output")
        peak_kib = 0

        def sample() -> bool:
            nonlocal peak_kib
            for pid in agent.vm.agent_processes(("supervise",)):
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
                except FileNotFoundError:
                    pass
            return agent.get(key).terminal

        start = time.perf_counter()
        agent.launch(key, script)
        wait_until(sample, timeout=600, interval=0.05, what="output job finished")
        elapsed = time.perf_counter() - start
        record = agent.get(key)
        kept = record.stdout_bytes - record.stdout_dropped
        print(
            f"{label}: {size / 1e6:.0f} MB in {elapsed:.2f} s = {size / 1e6 / elapsed:.0f} MB/s "
            f"(state {record.state}, kept on disk {kept / 1e6:.0f} MB, dropped {record.stdout_dropped / 1e6:.0f} MB, "
            f"supervisor peak RSS {peak_kib / 1024:.1f} MiB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bytes", type=int, default=1_000_000_000)
    args = parser.parse_args()
    run_once(args.bytes, [], "default cap (64 MiB kept)")
    run_once(args.bytes, ["--max-output-bytes", str(args.bytes + 1)], "uncapped (all to disk)")


if __name__ == "__main__":
    main()
