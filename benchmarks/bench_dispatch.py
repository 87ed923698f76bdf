"""Issue-4 benchmarks, end to end: the real operator against the API emulator, jobs on namespace VMs.

* dispatch latency: a chain of jobs on one VM; from an upstream job's exit to its downstream job
  started on the VM, both times from the agent's journal (the job's finishedAt/startedAt in the
  status); median and p95 (target: median < 20 ms);
* throughput: a fan-out of 1,000 jobs over 4 VMs; job completions per second, end to end from
  the JobRun's creation to its last status write (target >= 200/s), and on the VMs alone;
* API writes per job: JobRun writes seen on a real watch, and Events posted;
* operator peak memory (VmHWM of the operator process).

Needs root, ip netns and OpenSSH (like tests/vm). Run from the repository root:
``python3 benchmarks/bench_dispatch.py [--chain 40] [--fanout 1000] [--vms 4]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from _emulator_process import EmulatorProcess

from jobnet.core.runstatus import decoded_status, from_rfc3339
from tests.support.apiwatch import JobRunWatch
from tests.support.emulator import EmulatorServer
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, missing_requirements

#: The product's default deadlines (the tests' short ones would call a busy agent's slow answers
#: lost): an agent request may wait behind hundreds of queued launches.
PRODUCT_DEADLINES = ("--agent-request-timeout=30", "--dispatch-timeout=60", "--heartbeat-deadline=30")


@contextmanager
def world(stack: ExitStack) -> Iterator[Scenario]:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dispatch-")))
    # A process of its own, as a real API server (see _emulator_process.py).
    emulator = cast(EmulatorServer, stack.enter_context(EmulatorProcess(workdir)))

    def make_vm(**kwargs: Any) -> NamespaceVM:
        vm = NamespaceVM(**kwargs).create()
        stack.callback(vm.destroy)
        return vm

    scenario = Scenario(emulator, workdir, make_vm)
    try:
        yield scenario
    finally:
        scenario.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(
    scenario: Scenario, name: str, host: dict[str, Any], jobs: list[dict[str, Any]], timeout: float
) -> tuple[dict[str, Any], JobRunWatch, float]:
    """Run a JobNet to Succeeded; its decoded status, the watch of its writes, wall seconds."""
    with JobRunWatch(scenario.emulator, f"{name}-1") as watch:
        began = time.time()
        scenario.run_jobnet(name, host, jobs)
        status = scenario.wait_phase(f"{name}-1", "Succeeded", timeout=timeout)
        wall = time.time() - began
    return decoded_status(status), watch, wall


def times(status: dict[str, Any], path: str) -> tuple[float, float]:
    entry = status["jobs"][path]
    return from_rfc3339(entry["startedAt"]) or 0.0, from_rfc3339(entry["finishedAt"]) or 0.0


def writes_line(scenario: Scenario, run_name: str, watch: JobRunWatch, jobs: int) -> str:
    reasons = collections.Counter(event.get("reason") for event in scenario.events(run_name))
    events = sum(reasons.values())
    return (
        f"  API writes: {len(watch.writes)} JobRun writes ({len(watch.writes) / jobs:.2f} per job), "
        f"{events} Events ({events / jobs:.2f} per job: {dict(reasons.most_common(4))}); "
        f"largest JobRun {watch.largest / 1024:.1f} KiB"
    )


def bench_chain(scenario: Scenario, vm: NamespaceVM, length: int) -> None:
    jobs = [
        {"name": f"c{i:03d}", "script": "/bin/true", **({"after": [f"c{i - 1:03d}"]} if i else {})}
        for i in range(length)
    ]
    status, watch, wall = run(scenario, "chain", scenario.host(vm), jobs, timeout=30 + length)
    gaps = []
    for i in range(1, length):
        _, upstream_end = times(status, f"/chain/c{i - 1:03d}")
        downstream_start, _ = times(status, f"/chain/c{i:03d}")
        gaps.append(downstream_start - upstream_end)
    print(f"dispatch latency, chain of {length} jobs on 1 VM (upstream exit -> downstream started, agent clock):")
    print(
        f"  median {statistics.median(gaps) * 1e3:.1f} ms, p95 {percentile(gaps, 0.95) * 1e3:.1f} ms, "
        f"min {min(gaps) * 1e3:.1f} ms, max {max(gaps) * 1e3:.1f} ms (target: median < 20 ms); "
        f"whole run {wall:.2f} s"
    )
    print(writes_line(scenario, "chain-1", watch, length))
    print_chain_breakdown(scenario.operator_log(), scenario.agent_log(vm), [job["name"] for job in jobs])


def _log_times(text: str, pattern: str, time_format: str) -> dict[str, float]:
    """Job name -> time of the first log line matching ``pattern`` (groups: time, job name)."""
    found: dict[str, float] = {}
    for match in re.finditer(pattern, text):
        at = datetime.strptime(match.group(1), time_format).replace(tzinfo=UTC).timestamp()
        found.setdefault(match.group(2), at)
    return found


def print_chain_breakdown(operator_log: str, agent_log: str, names: list[str]) -> None:
    """Where a step of the chain of JobNet ``chain`` (jobs ``names``) goes, from the operator's
    and the agent's log lines of one run of it (same host clock; the operator logs with
    millisecond resolution)."""
    agent_time = "%Y-%m-%dT%H:%M:%S.%fZ"
    launching = _log_times(
        operator_log, r"\[(\S+ \S+)\] jobnet.runtime .*job=/chain/(\w+) .*: launching", "%Y-%m-%d %H:%M:%S,%f"
    )
    accepted = _log_times(agent_log, r"(\S+Z) serve\[\d+\] \S+:/chain/(\w+)#1 accepted", agent_time)
    started = _log_times(agent_log, r"(\S+Z) supervise\[\d+\] \S+:/chain/(\w+)#1 started", agent_time)
    exited = _log_times(agent_log, r"(\S+Z) supervise\[\d+\] \S+:/chain/(\w+)#1 exited", agent_time)
    parts: dict[str, list[float]] = {
        "whole step, upstream exited -> script started": [],
        "upstream exited -> operator sends the launch": [],
        "launch sent -> agent accepted it": [],
        "accepted -> script started": [],
    }
    for upstream, job in itertools.pairwise(names):
        if upstream in exited and all(job in times for times in (launching, accepted, started)):
            parts["whole step, upstream exited -> script started"].append(started[job] - exited[upstream])
            parts["upstream exited -> operator sends the launch"].append(launching[job] - exited[upstream])
            parts["launch sent -> agent accepted it"].append(accepted[job] - launching[job])
            parts["accepted -> script started"].append(started[job] - accepted[job])
    print(
        "  where a step's time goes (medians): "
        + "; ".join(f"{part} {statistics.median(values) * 1e3:.0f} ms" for part, values in parts.items() if values)
    )


def bench_fanout(scenario: Scenario, vms: list[NamespaceVM], width: int) -> int:
    """Prints the fan-out's figures; returns its JobRun writes."""
    fan = [
        {"name": f"f{i:04d}", "script": "/bin/true", "after": ["start"], "host": scenario.host(vms[i % len(vms)])}
        for i in range(width)
    ]
    jobs = [{"name": "start", "script": "/bin/true"}, *fan]
    status, watch, wall = run(scenario, "fan", scenario.host(vms[0]), jobs, timeout=60 + width / 5)
    spans = [times(status, f"/fan/{job['name']}") for job in fan]
    on_vms = max(end for _, end in spans) - min(start for start, _ in spans)
    assert watch.created_at is not None and watch.writes
    end_to_end = watch.writes[-1].at - watch.created_at
    print(f"throughput, fan-out of {width} jobs over {len(vms)} VMs:")
    print(
        f"  end to end (JobRun created -> last status write): {end_to_end:.2f} s = "
        f"{len(jobs) / end_to_end:.0f} job completions/s (target >= 200/s); "
        f"on the VMs (first start -> last exit): {on_vms:.2f} s = {width / on_vms:.0f} jobs/s; "
        f"kubectl-observed {wall:.2f} s"
    )
    print(writes_line(scenario, "fan-1", watch, len(jobs)))
    return len(watch.writes)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_large(scenario: Scenario, vms: list[NamespaceVM], parts_per_vm: int, part_size: int) -> None:
    """A run of ``len(vms) * parts_per_vm * part_size`` jobs built the way a large JobNet is
    written: one JobNet per VM of ``part_size`` jobs, expanded ``parts_per_vm`` times each."""
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobNet",
            "metadata": {"name": f"part{v}"},
            "spec": {
                "host": scenario.host(vm),
                "jobs": [{"name": f"j{i:03d}", "script": "/bin/true"} for i in range(part_size)],
            },
        }
        for v, vm in enumerate(vms)
    ]
    expands = [
        {"name": f"p{v}x{k:02d}", "expand": f"part{v}", "after": ["start"]}
        for k in range(parts_per_vm)
        for v in range(len(vms))
    ]
    manifests.append(
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobNet",
            "metadata": {"name": "large"},
            "spec": {"host": scenario.host(vms[0]), "jobs": [{"name": "start", "script": "/bin/true"}, *expands]},
        }
    )
    manifests.append(
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobRun",
            "metadata": {"name": "large-1"},
            "spec": {"jobNetRef": "large"},
        }
    )
    jobs = len(vms) * parts_per_vm * part_size + 1
    with JobRunWatch(scenario.emulator, "large-1", timeout=3600) as watch:
        scenario.apply(manifests)
        wait_until(
            lambda: scenario.status("large-1").get("phase") in ("Succeeded", "Failed", "Stopped"),
            timeout=120 + jobs / 5,
            what="the large run finishes",
        )
        status = scenario.status("large-1")
    assert watch.created_at is not None and watch.writes
    took = watch.writes[-1].at - watch.created_at
    events = collections.Counter(event.get("reason") for event in scenario.events("large-1"))
    print(
        f"large run: {jobs} jobs over {len(vms)} VMs ({len(expands)} expanded sub-jobnets): {took:.1f} s = "
        f"{jobs / took:.0f} jobs/s; phase {status['phase']}, counts {status.get('counts')}, "
        f"Events {dict(events.most_common(5))}; "
        f"final JobRun {watch.writes[-1].size / 1024:.0f} KiB, largest ever {watch.largest / 1024:.0f} KiB "
        f"(limit 1.5 MiB); {len(watch.writes)} writes ({len(watch.writes) / jobs:.2f} per job)"
    )


def peak_memory_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=int, default=40, help="jobs in the latency chain (default 40)")
    parser.add_argument("--fanout", type=int, default=1000, help="jobs in the fan-out (default 1000)")
    parser.add_argument("--vms", type=int, default=4, help="VMs of the fan-out (default 4)")
    parser.add_argument(
        "--large",
        type=int,
        default=0,
        metavar="N",
        help="also run N x 250-job sub-jobnets per VM (--large 10 with 4 VMs: 10,001 jobs)",
    )
    args = parser.parse_args()
    reason = missing_requirements()
    if reason:
        sys.exit(f"cannot run: {reason}")
    with ExitStack() as stack, world(stack) as scenario:
        vms = [scenario.vm(f"b{i}") for i in range(args.vms)]
        # Logging as in production: kopf's debug log (the tests') costs the operator ~10% CPU.
        operator = scenario.start_operator(*PRODUCT_DEADLINES, verbose=False)
        assert operator.process is not None
        bench_chain(scenario, vms[0], args.chain)
        cpu_before = cpu_seconds(operator.process.pid)
        writes = bench_fanout(scenario, vms, args.fanout)
        cpu = cpu_seconds(operator.process.pid) - cpu_before
        # Most of it is paid per round (one status write each), and a loaded machine makes more,
        # smaller rounds (news trickles in): the cost per write is the steadier figure.
        print(
            f"  operator CPU: {cpu / (args.fanout + 1) * 1e3:.2f} ms per job, {cpu / writes * 1e3:.1f} ms per "
            "status write (the rest of the machine's 2 cores runs the agents, supervisors, sshd and the emulator)"
        )
        if args.large:
            bench_large(scenario, vms, args.large, 250)
        print(f"operator peak memory (VmHWM): {peak_memory_kib(operator.process.pid) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
