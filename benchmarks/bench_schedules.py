"""Issue-13 benchmark: what JobSchedules cost the operator.

The real operator (production log level, default ``--schedule-check-interval``) runs against the
API emulator on a clock the benchmark controls (libfaketime, as in the H0x scenario tests), with
``--schedules`` JobSchedules in one namespace, all due at 03:00 UTC:

* **idle**: the operator's CPU (user + system, from /proc) over ``--idle-seconds`` while no slot is
  due, as a share of one core (target: under 1 %);
* **burst**: the clock is set just past 03:00, so every schedule is due in the same minute; the
  benchmark waits until every schedule has recorded its slot, checks that each created exactly
  one JobRun (named after the slot), and prints the wall time and the operator's CPU per created
  run (target: under 5 ms). That CPU includes starting each run (its JobNet snapshot, status),
  not only creating it. The runs' JobNet names a credentials Secret that does not exist, so no
  job connects anywhere: the runs end at the credentials check, without network traffic.

Run from the repository root: ``python3 benchmarks/bench_schedules.py [--schedules 1000]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.emulator import EmulatorServer
from tests.support.fakeclock import FakeClock, missing_faketime
from tests.support.operator_proc import OperatorProcess, register_webhooks
from tests.support.schedules import API_VERSION, schedule

UTC = datetime.UTC
TICKS = os.sysconf("SC_CLK_TCK")
#: Manifests per kubectl apply (one apply of all of them outlasts kubectl's request timeout).
BATCH = 50


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000, help="JobSchedules in the namespace (default 1000)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle measurement (default 30)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting after this long (default 900)")
    args = parser.parse_args()
    if reason := missing_faketime():
        raise SystemExit(f"bench_schedules: {reason}")

    now = datetime.datetime.now(UTC)
    slot = (now + datetime.timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp, EmulatorServer(Path(tmp)) as emulator:
        clock = FakeClock(Path(tmp) / "clock", now)
        operator = OperatorProcess(emulator, Path(tmp), verbose=False, environment=clock.environment)
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

            before, started = cpu_seconds(pid), time.monotonic()
            clock.set(slot + datetime.timedelta(seconds=1))
            wait(
                lambda: sum(s.get("lastScheduleTime") == expected_next for s in statuses()) == args.schedules,
                args.timeout,
                "every schedule recording its slot",
            )
            wall = time.monotonic() - started
            burst_cpu = cpu_seconds(pid) - before
            runs = [run["metadata"]["name"] for run in emulator.list_objects(API_VERSION, "jobruns")]
            wanted = {f"nightly-{n:04d}-{slot:%Y%m%d%H%M}" for n in range(args.schedules)}
            print(
                f"burst: {len(runs)} runs for {args.schedules} slots due in the same minute "
                f"({'each exactly once' if sorted(runs) == sorted(wanted) else 'MISMATCH'}), "
                f"wall {wall:.1f} s, operator CPU {1000 * burst_cpu / max(1, len(runs)):.2f} ms per run "
                f"(target < 5 ms; includes starting each run)"
            )
            return 0 if sorted(runs) == sorted(wanted) else 1
        finally:
            operator.stop()


if __name__ == "__main__":
    sys.exit(main())
