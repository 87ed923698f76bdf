"""Issue-13 benchmark: what JobSchedules cost the operator.

The real operator (production log level, default ``--schedule-check-interval``) runs against the
API emulator on a clock the benchmark controls (libfaketime, as in the H0x scenario tests), with
``--schedules`` JobSchedules in one namespace, all due at 03:00 UTC:

* **idle**: the operator's CPU (user + system, from /proc) over ``--idle-seconds`` while no slot is
  due, as a share of one core (target: under 1 %);
* **burst**: the clock is set just past 03:00, so every schedule is due in the same minute; the
  benchmark waits until every slot's run exists (the wall time to create them all), then until
  every run has ended and every schedule's status says so; it checks that each
  schedule created exactly one JobRun (named after the slot) and prints the operator's CPU per
  run over all of that: creating the run from its schedule (the schedule controller, the
  create's admission: issue 13's "CPU per created run", target under 5 ms), then starting it
  (its JobNet snapshot, status, the runtime) and recording its end, which is what any run costs
  however it was created, and grows with its JobNet (so no target is set for the whole). The
  runs' JobNet names a credentials Secret that does not exist, so no job connects anywhere: the
  runs end at the credentials check, without network traffic.

The operator runs under ``benchmarks/taskcpu.py``, which charges the CPU of every asyncio step to
its task (a task made by another, e.g. aiohttp's writer of a request's body, to its creator's):
the CPU per run is split into **creating** it from its schedule (the schedule controller's loop,
the admission of the JobRun's create, the processing of the JobSchedules' watch events and
their watch stream: what issue 13 adds to a run) and **running** it (what a run created by
kubectl costs as well: its start, its loop, its writes and Events, kopf's processing of its
watch events). What no task did (transport callbacks: reading sockets, parsing HTTP; the event
loop itself) is shared between the two in proportion to their tasks' CPU. The operator's API
writes per run (its ``jobnet_api_writes_total`` metric) are printed by resource.
``--profile FILE`` records the burst with py-spy (``pip install py-spy``) for a closer look.

Run from the repository root: ``python3 benchmarks/bench_schedules.py [--schedules 1000]`` (with
``PYTHONPATH=operator:agent:.`` to measure this tree rather than an installed copy).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import taskcpu

from tests.support.emulator import EmulatorServer, free_port
from tests.support.fakeclock import FakeClock, missing_faketime
from tests.support.operator_proc import OperatorProcess, register_webhooks
from tests.support.schedules import API_VERSION, schedule

UTC = datetime.UTC
TICKS = os.sysconf("SC_CLK_TCK")
#: The phases a run ends in (the credentials check fails every run here).
FINISHED = ("Succeeded", "Failed", "Stopped")
#: Manifests per kubectl apply (one apply of all of them outlasts kubectl's request timeout).
BATCH = 50
#: A line of the operator's API-write counter: its resource and value.
API_WRITES = re.compile(r'^jobnet_api_writes_total\{resource="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_schedules: {what} did not happen within {timeout:g}s")
        time.sleep(0.5)


class TimedOperator(OperatorProcess):
    """The operator under ``benchmarks/taskcpu.py``: its CPU per asyncio task group on SIGUSR1."""

    def __init__(self, *args: Any, report: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report = report

    def command(self) -> list[str]:
        python, _, _, *arguments = super().command()  # python -c "...main()" ARGS
        return [python, str(Path(__file__).with_name("taskcpu.py")), str(self.report), "--", *arguments]

    def task_cpu(self) -> dict[str, float]:
        """CPU seconds per task group so far."""
        self.report.unlink(missing_ok=True)
        os.kill(self.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
        wait(self.report.exists, 10, "the operator's task CPU report")
        groups: dict[str, float] = taskcpu.read(self.report)["groups"]
        return groups


def api_writes(metrics_port: int) -> dict[str, float]:
    """The operator's API writes so far, by resource (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {resource: float(value) for resource, value in API_WRITES.findall(text)}


def print_costs(whole: float, tasks: dict[str, float], writes: dict[str, float], runs: int) -> None:
    """The CPU per run, created and run, with its parts (see the module docstring); the API
    writes per run by resource."""
    sides = {side: {g: s for g, s in tasks.items() if taskcpu.SIDES.get(g) == side} for side in ("creating", "running")}
    neither = {g: s for g, s in tasks.items() if g not in taskcpu.SIDES and g != "callbacks"}
    timed = {side: sum(groups.values()) for side, groups in sides.items()}
    shared = whole - sum(timed.values()) - sum(neither.values())  # callbacks and the event loop itself
    print(f"operator CPU per run, the whole operator: {1000 * whole / runs:.2f} ms, of which")
    titles = {
        "creating": "creating it from its schedule (issue 13's 'CPU per created run', target < 5 ms)",
        "running": "running it (what a run created by kubectl costs too; depends on its JobNet, no target)",
    }
    for side, groups in sides.items():
        share = shared * timed[side] / max(sum(timed.values()), 1e-9)
        print(f"  {titles[side]}: {1000 * (timed[side] + share) / runs:.2f} ms")
        for group, seconds in sorted(groups.items(), key=lambda item: -item[1]):
            print(f"    {group:<30} {1000 * seconds / runs:6.2f} ms")
        print(f"    {'transport, event loop (share)':<30} {1000 * share / runs:6.2f} ms")
    for group, seconds in sorted(neither.items(), key=lambda item: -item[1]):
        print(f"  neither: {group:<23} {1000 * seconds / runs:6.2f} ms")
    callbacks = tasks.get("callbacks", 0.0)
    print(
        f"  (shared: transport callbacks {1000 * callbacks / runs:.2f} ms, "
        f"outside any callback {1000 * (shared - callbacks) / runs:.2f} ms)"
    )
    listed = ", ".join(f"{resource} {count / runs:.2f}" for resource, count in sorted(writes.items()) if count)
    print(f"operator API writes per run: {sum(writes.values()) / runs:.2f} ({listed})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000, help="JobSchedules in the namespace (default 1000)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle measurement (default 30)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting after this long (default 900)")
    parser.add_argument(
        "--profile", metavar="FILE", help="record the burst with py-spy into FILE: .svg a flame graph, .txt raw stacks"
    )
    args = parser.parse_args()
    # The operator runs in a temporary directory: a relative PYTHONPATH would not find this tree.
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(path).resolve()) for path in paths if path)
    if reason := missing_faketime():
        raise SystemExit(f"bench_schedules: {reason}")

    now = datetime.datetime.now(UTC)
    slot = (now + datetime.timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp, EmulatorServer(Path(tmp)) as emulator:
        clock = FakeClock(Path(tmp) / "clock", now)
        metrics_port = free_port()
        operator = TimedOperator(
            emulator,
            Path(tmp),
            verbose=False,
            environment=clock.environment,
            extra_args=("--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}"),
            report=Path(tmp) / "taskcpu.json",
        )
        register_webhooks(emulator, operator.webhook_url)
        operator.start()
        try:
            host = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "absent"}
            manifests = [
                {
                    "apiVersion": API_VERSION,
                    "kind": "JobNet",
                    "metadata": {"name": "tick"},
                    "spec": {"host": host, "jobs": [{"name": "work", "script": "/opt/batch/work.sh"}]},
                }
            ]
            manifests += [schedule(f"nightly-{n:04d}", "tick", "0 3 * * *") for n in range(args.schedules)]
            for first in range(0, len(manifests), BATCH):  # kubectl apply, through admission, in batches
                batch = manifests[first : first + BATCH]
                result = emulator.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(batch))
                assert result.rc == 0, result.stderr

            def statuses() -> list[dict]:  # type: ignore[type-arg]
                return [s.get("status") or {} for s in emulator.list_objects(API_VERSION, "jobschedules")]

            def phases() -> dict[str, str | None]:
                runs = emulator.list_objects(API_VERSION, "jobruns")
                return {run["metadata"]["name"]: (run.get("status") or {}).get("phase") for run in runs}

            expected_next = slot.strftime("%Y-%m-%dT%H:%M:%SZ")
            wait(
                lambda: sum(s.get("nextScheduleTime") == expected_next for s in statuses()) == args.schedules,
                args.timeout,
                "every schedule reporting its next slot",
            )
            pid = operator.process.pid  # type: ignore[union-attr]
            time.sleep(2)  # the last status writes' watch events
            before, started = cpu_seconds(pid), time.monotonic()
            time.sleep(args.idle_seconds)
            idle_cpu, idle_wall = cpu_seconds(pid) - before, time.monotonic() - started
            print(f"{args.schedules} JobSchedules, real operator against the API emulator")
            print(f"idle: {100 * idle_cpu / idle_wall:.2f} % of one core over {idle_wall:.0f} s (target < 1 %)")

            tasks_before, writes_before = operator.task_cpu(), api_writes(metrics_port)
            before, started = cpu_seconds(pid), time.monotonic()
            profiler = (
                subprocess.Popen(
                    ["py-spy", "record", "--gil", "--pid", str(pid), "--rate", "100", "--output", args.profile]
                    + (["--format", "raw"] if args.profile.endswith(".txt") else [])
                )
                if args.profile
                else None
            )
            clock.set(slot + datetime.timedelta(seconds=1))
            wait(lambda: len(phases()) == args.schedules, args.timeout, "every slot's run being created")
            created_wall = time.monotonic() - started
            wait(
                lambda: sum(s.get("lastScheduleTime") == expected_next for s in statuses()) == args.schedules,
                args.timeout,
                "every schedule recording its slot",
            )

            def settled() -> bool:  # every run ended, and every schedule's status says so
                ended = phases()
                return (
                    len(ended) == args.schedules
                    and all(phase in FINISHED for phase in ended.values())
                    and all(s.get("lastRunPhase") in FINISHED and not s.get("active") for s in statuses())
                )

            wait(settled, args.timeout, "every run ending and every schedule's status saying so")
            wall = time.monotonic() - started
            burst_cpu = cpu_seconds(pid) - before
            tasks = {group: seconds - tasks_before.get(group, 0.0) for group, seconds in operator.task_cpu().items()}
            writes = {key: count - writes_before.get(key, 0.0) for key, count in api_writes(metrics_port).items()}
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
            ended = phases()
            wanted = {f"nightly-{n:04d}-{slot:%Y%m%d%H%M}" for n in range(args.schedules)}
            exact = sorted(ended) == sorted(wanted)
            runs = max(1, len(ended))
            print(
                f"burst: {len(ended)} runs for {args.schedules} slots due in the same minute "
                f"({'each exactly once' if exact else 'MISMATCH'}), all created in {created_wall:.1f} s, "
                f"all ended ({', '.join(sorted(set(map(str, ended.values()))))}) and recorded in {wall:.1f} s"
            )
            print_costs(burst_cpu, tasks, writes, runs)
            return 0 if exact else 1
        finally:
            operator.stop()


if __name__ == "__main__":
    sys.exit(main())
