"""Whole runs of two common shapes, the way a user sees them: a JobRun created, then its phase
Succeeded (issue 12's table; the same shapes measured for Airflow in shared/reference.md).

* a chain of 20 ``/bin/true`` jobs;
* a fan-out of 50 ``/bin/true`` jobs and a join.

Each on one namespace VM, through the parts ``jobnet dev`` runs (the API emulator, the real
operator process, the VM's own sshd and the agent), in three conditions:

* **warm**: runs back to back, the agent channel open;
* **after idle**: the host idle for ``--idle`` seconds before the run (the operator may have
  closed its channel meanwhile);
* **cold**: the operator restarted just before the run, so no channel, no agent ``serve`` and no
  supervising process exist yet (the agent is installed on the VM already, as in any later run).

The time is from the JobRun being stored by the API server (its ADDED watch event) to the status
write that says Succeeded (its MODIFIED event), both seen on a real watch; ``kubectl create``'s
own start-up (~0.1 s) is not in it. Medians with min–max over ``--runs`` runs after one warm-up.

The rest of issue 12's table, from the same world: the VM's CPU per job over the warm runs (every
process of the VM: sshd, agent serve, its supervising process, wrappers, scripts; a cgroup v1 cpuacct
group, as in bench_agent_chain), where a chain step goes (the last warm chain run's operator and
agent log lines, as in bench_dispatch) and, with ``--fanout-vms``, bench_dispatch's fan-out of
``--fanout-jobs`` jobs over that many VMs (completions/s). The load average before and after is
printed: other work on the machine shows in every figure. For the cold runs it prints where the
channel's opening and the first launch went (the operator's channel-open line times its SSH
connect, serve's start until hello, and the watch; the agent log, serve's first line and the
first job's accepted and started lines).

Needs root, ip netns and OpenSSH (like tests/vm). From the repository root:
``python3 benchmarks/bench_shapes.py [--runs 5] [--idle 2] [--fanout-vms 4] [--fanout-jobs 1000]``
(``--shapes chain --warm-only --fanout-vms 0``: the warm chain alone, for A/B comparisons;
``--cold-only --fanout-vms 0``: the cold runs and their breakdown alone).

The API emulator runs in a process of its own, as a real API server (``_emulator_process.py``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _agent_vm import CpuMeter, VmCpu
from _emulator_process import EmulatorProcess
from bench_dispatch import PRODUCT_DEADLINES, bench_fanout, print_chain_breakdown
from bench_dispatch import world as dispatch_world

from tests.support.apiwatch import JobRunWatch
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, missing_requirements

CHAIN = 20
FANOUT = 50
#: issue 12's targets (seconds); Airflow's figures from shared/reference.md for comparison.
TARGETS = {"chain": 0.15, "fanout": 0.30}
AIRFLOW = {"chain": 26.3, "fanout": 16.1}


def chain_jobs() -> list[dict[str, Any]]:
    return [
        {"name": f"c{i:02d}", "script": "/bin/true", **({"after": [f"c{i - 1:02d}"]} if i else {})}
        for i in range(CHAIN)
    ]


def fanout_jobs() -> list[dict[str, Any]]:
    fan = [{"name": f"f{i:02d}", "script": "/bin/true"} for i in range(FANOUT)]
    return [*fan, {"name": "join", "script": "/bin/true", "after": [job["name"] for job in fan]}]


SHAPES: dict[str, Callable[[], list[dict[str, Any]]]] = {"chain": chain_jobs, "fanout": fanout_jobs}


@contextmanager
def world(stack: ExitStack, vm_count: int) -> Iterator[tuple[Scenario, list[NamespaceVM], VmCpu]]:
    """bench_dispatch's world with ``vm_count`` VMs, the operator with the product's deadlines and
    log level: nothing here measures a test setting. The first VM's CPU is counted."""
    vm_cpu = VmCpu()
    stack.callback(vm_cpu.release)  # after the VMs are gone (callbacks run last in, first out)
    with dispatch_world(stack) as scenario:
        vms = [scenario.vm(f"s{i}") for i in range(vm_count)]
        vm_cpu.adopt(vms[0].pids())  # its sshd alone so far: every login and job descends from it
        scenario.start_operator(*PRODUCT_DEADLINES, verbose=False)
        yield scenario, vms, vm_cpu


class Runner:
    """Creates runs of the shapes' JobNets (applied once) and times each."""

    def __init__(self, scenario: Scenario, vm: NamespaceVM) -> None:
        self.scenario = scenario
        self.vm = vm
        self.count = 0
        #: when the last run's JobRun was stored (wall clock, the logs' clock)
        self.stored_at = 0.0
        manifests = [
            {
                "apiVersion": "jobnet.dev/v1alpha1",
                "kind": "JobNet",
                "metadata": {"name": shape},
                "spec": {"host": scenario.host(vm), "jobs": jobs()},
            }
            for shape, jobs in SHAPES.items()
        ]
        scenario.apply(manifests)

    def run(self, shape: str) -> float:
        self.count += 1
        name = f"{shape}-{self.count}"
        with JobRunWatch(self.scenario.emulator, name) as watch:
            self.scenario.apply(
                [
                    {
                        "apiVersion": "jobnet.dev/v1alpha1",
                        "kind": "JobRun",
                        "metadata": {"name": name},
                        "spec": {"jobNetRef": shape},
                    }
                ]
            )
            wait_until(
                lambda: any(write.status.get("phase") == "Succeeded" for write in watch.writes),
                timeout=120,
                what=f"{name} Succeeded",
                describe=lambda: self.scenario.describe(name),
            )
        assert watch.created_at is not None
        done = next(write.at for write in watch.writes if write.status.get("phase") == "Succeeded")
        self.stored_at = watch.created_at
        return done - watch.created_at

    def warm(self, shape: str, runs: int, vm_cpu: VmCpu) -> list[float]:
        """``runs`` warm runs; prints the VM's CPU per job over them and, for the chain, where
        the last run's steps went."""
        walls = []
        jobs = len(SHAPES[shape]()) * runs
        operator = self.scenario.operator
        assert operator is not None and operator.process is not None
        emulator = cast(EmulatorProcess, self.scenario.emulator)
        pids = {"operator": operator.process.pid, "API emulator": emulator.pid}
        cpu = {what: process_cpu_seconds(pid) for what, pid in pids.items()}
        with CpuMeter(vm_cpu).measure(f"  {shape}, warm runs", jobs):
            for _ in range(runs):
                logs = (len(self.scenario.operator_log()), len(self.scenario.agent_log(self.vm)))
                walls.append(self.run(shape))
        spent = {what: (process_cpu_seconds(pid) - cpu[what]) / jobs * 1e3 for what, pid in pids.items()}
        print(f"  {shape}, warm runs: CPU per job " + ", ".join(f"{what} {ms:.2f} ms" for what, ms in spent.items()))
        if shape == "chain":
            print_chain_breakdown(
                self.scenario.operator_log()[logs[0] :],
                self.scenario.agent_log(self.vm)[logs[1] :],
                [job["name"] for job in chain_jobs()],
            )
        return walls


_OPERATOR_TIME = r"\[(\S+ \S+)\]"
_AGENT_TIME = r"(\S+Z)"
#: a cold run's phases: (label, operator or agent log, regex whose first group is the time)
_COLD_MARKS = (
    ("channel open", "operator", _OPERATOR_TIME + r" jobnet\.\S+ .*agent channel to \S+ open"),
    ("first launch sent", "operator", _OPERATOR_TIME + r" jobnet\.runtime .*: launching"),
    ("accepted", "agent", _AGENT_TIME + r" serve\[\d+\] \S+ accepted"),
    ("script started", "agent", _AGENT_TIME + r" supervise\[\d+\] \S+ started"),
)


def print_cold_breakdown(logs: list[tuple[float, str, str]]) -> None:
    """Where the cold runs' channel opening and first launch went (medians), from the operator's
    channel-open line (its own timings) and the first launch's log lines (same host clock)."""
    parts: dict[str, list[float]] = {}

    def add(part: str, seconds: float) -> None:
        parts.setdefault(part, []).append(seconds)

    for stored_at, operator_log, agent_log in logs:
        marks = {}
        for label, source, pattern in _COLD_MARKS:
            found = re.search(pattern, operator_log if source == "operator" else agent_log)
            if found:
                text = found.group(1)
                time_format = "%Y-%m-%d %H:%M:%S,%f" if source == "operator" else "%Y-%m-%dT%H:%M:%S.%fZ"
                marks[label] = datetime.strptime(text, time_format).replace(tzinfo=UTC).timestamp()
        opened = re.search(
            r"ssh ([\d.]+) s, serve started and answered hello ([\d.]+) s, watch ([\d.]+) s", operator_log
        )
        if opened:
            if "channel open" in marks:
                began = marks["channel open"] - sum(float(opened.group(part)) for part in (1, 2, 3))
                add("JobRun stored -> channel opening began", began - stored_at)
            add("SSH connect", float(opened.group(1)))
            add("serve started -> hello answered (incl. any install)", float(opened.group(2)))
            serve_ran = re.search(_AGENT_TIME + r" serve\[\d+\] serve started", agent_log)
            if serve_ran and "channel open" in marks:
                ran = datetime.strptime(serve_ran.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                hello_at = marks["channel open"] - float(opened.group(3))
                add(
                    "of which: serve's command sent -> serve's first log line",
                    ran - (hello_at - float(opened.group(2))),
                )
                add("serve's first log line -> hello answered", hello_at - ran)
            add("watch", float(opened.group(3)))
        for (before, _, _), (after, _, _) in itertools.pairwise(_COLD_MARKS):
            if before in marks and after in marks:
                add(f"{before} -> {after}", marks[after] - marks[before])
    print(
        "  cold, where the opening and the first launch went (medians): "
        + "; ".join(f"{part} {statistics.median(values) * 1e3:.0f} ms" for part, values in parts.items())
    )


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per shape and condition (default: 5)")
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds before an 'after idle' run")
    parser.add_argument("--fanout-vms", type=int, default=4, help="VMs of the large fan-out (0: skip it; default 4)")
    parser.add_argument("--fanout-jobs", type=int, default=1000, help="jobs of the large fan-out (default 1000)")
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"the shapes measured, comma-separated (default {','.join(SHAPES)})"
    )
    parser.add_argument("--warm-only", action="store_true", help="only the warm runs (no after-idle or cold runs)")
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="only the cold runs (after one warm-up run; no warm or after-idle runs)",
    )
    args = parser.parse_args()
    if missing := missing_requirements():
        print(f"skipped: {missing}")
        return 0
    print(f"whole runs through the jobnet dev parts, 1 namespace VM; load average before: {load_average()}")
    with ExitStack() as stack, world(stack, max(1, args.fanout_vms)) as (scenario, vms, vm_cpu):
        runner = Runner(scenario, vms[0])
        operator = scenario.operator
        assert operator is not None
        for shape in args.shapes.split(","):
            label = f"chain of {CHAIN}" if shape == "chain" else f"fan-out of {FANOUT} + join"
            print(f"{label} (target <= {TARGETS[shape]:.2f} s; Airflow 3.3.2 + SSHOperator: {AIRFLOW[shape]} s):")
            runner.run(shape)  # warm-up: the agent is installed on the VM
            if not args.cold_only:
                warm = runner.warm(shape, args.runs, vm_cpu)
                print(f"  warm:       {summary(warm)}")
            if args.warm_only:
                continue
            idle = []
            for _ in range(0 if args.cold_only else args.runs):
                time.sleep(args.idle)  # the condition measured, not a synchronisation
                idle.append(runner.run(shape))
            cold = []
            cold_logs = []
            cpu_before = vm_cpu.seconds()
            for _ in range(args.runs):
                operator.stop()
                operator.start()
                logs = (len(scenario.operator_log()), len(scenario.agent_log(vms[0])))
                cold.append(runner.run(shape))
                cold_logs.append(
                    (runner.stored_at, scenario.operator_log()[logs[0] :], scenario.agent_log(vms[0])[logs[1] :])
                )
            if idle:
                print(f"  after idle: {summary(idle)} ({args.idle:g} s idle before each)")
            cpu_after = vm_cpu.seconds()
            print(f"  cold:       {summary(cold)} (operator restarted before each)")
            if vm_cpu.available:
                user, system = (
                    (after - before) / args.runs * 1e3 for before, after in zip(cpu_before, cpu_after, strict=True)
                )
                print(
                    f"  cold runs: VM CPU per run {user + system:.0f} ms (user {user:.0f}, system {system:.0f}; "
                    f"the channel's opening and the run's {len(SHAPES[shape]())} jobs)"
                )
            print_cold_breakdown(cold_logs)
        if args.fanout_vms:
            bench_fanout(scenario, vms, args.fanout_jobs)
    print(f"load average after: {load_average()}")
    return 0


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
