"""CPU per asyncio task group inside a benchmarked operator process (benchmarks only).

``python3 benchmarks/taskcpu.py REPORT -- ARGS...`` runs ``jobnet ARGS...`` with every asyncio
callback timed (thread CPU time) and charged to the task it steps, grouped by the task's name:
the schedule controller's loop is one task (``jobschedule-loop``), so its own CPU is told apart
from starting runs, kopf's watch processing and the admission server. ``SIGUSR1`` writes the
totals so far (seconds per group, JSON) to REPORT. Work done outside any task (transport
callbacks: reading sockets, parsing HTTP) is charged to ``callbacks``; the most costly tasks of no
group are listed by name.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

#: Task name -> group; the first pattern that matches the name wins.
GROUPS = [
    ("schedule controller", re.compile(r"^jobschedule-loop$")),
    ("kopf: JobRun events, start", re.compile(r"^worker for \(jobruns")),
    ("kopf: JobSchedule events", re.compile(r"^worker for \(jobschedules")),
    ("kopf: watch streams", re.compile(r"^watcher for")),
    ("runtime: run loops", re.compile(r"^(jobrun|start jobrun) ")),
    ("admission (unnamed tasks)", re.compile(r"^Task-\d+$")),
]


@functools.cache
def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if pattern.search(name):
            return group
    return "other tasks"


def install(report: Path) -> None:
    """Time every callback from now on; SIGUSR1 writes the totals to ``report``."""
    totals: collections.Counter[str] = collections.Counter()
    names: collections.Counter[str] = collections.Counter()
    original = asyncio.events.Handle._run

    def timed_run(handle: asyncio.Handle) -> None:
        start = time.thread_time()
        try:
            original(handle)
        finally:
            owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
            if isinstance(owner, asyncio.Task):
                spent = time.thread_time() - start
                group = group_of(owner.get_name())
                totals[group] += spent
                if group == "other tasks":
                    names[owner.get_name()] += spent
            else:
                totals["callbacks"] += time.thread_time() - start

    def write(signum: int, frame: FrameType | None) -> None:
        report.write_text(json.dumps({"groups": dict(totals), "others": dict(names.most_common(10))}))

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, write)


def read(report: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    from jobnet.cli import main

    sys.exit(main(sys.argv[3:]))
