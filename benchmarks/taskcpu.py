"""CPU per asyncio task group inside a benchmarked operator process (benchmarks only).

``python3 benchmarks/taskcpu.py REPORT -- ARGS...`` runs ``jobnet ARGS...`` with every asyncio
callback timed (thread CPU time) and charged to the task it steps, grouped by the task's name:
the schedule controller's loop is one task (``jobschedule-loop``), so its own CPU is told apart
from starting runs, kopf's watch processing and the admission server. ``SIGUSR1`` writes the
totals so far (seconds per group, JSON) to REPORT.

Two things make the groups say who caused the work rather than which task did it:

* a task created without a name inside another task (aiohttp's task that writes a request's
  body, a helper task) takes its creator's name, so its CPU goes to the creator's group;
* the task answering an AdmissionReview is named after the webhook's path (``admission
  /validate-jobrun``), so the admission of a JobRun's creation is told apart from the others.

Work done outside any task (transport callbacks: reading sockets, parsing HTTP) is charged to
``callbacks``; the most costly tasks of no group are listed by name.

Each group belongs to one side (:data:`SIDES`): *creating* a run from its schedule (the
schedule controller, the create's admission, the JobSchedules' watch events, whether the
operator's own watch or kopf's) or *running* it
(what a run created by kubectl costs as well: its start, its loop, its watch events).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import collections
import functools
import json
import re
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

#: Task name -> group; the first pattern that matches the name wins.
GROUPS = [
    ("schedule controller", re.compile(r"^jobschedule-loop$")),
    ("admission: JobRun create", re.compile(r"^admission /(validate|mutate)-jobrun$")),
    ("JobSchedule watch", re.compile(r"^watch job(schedules|calendars)$")),
    ("kopf: JobSchedule events", re.compile(r"^worker for \(jobschedules")),
    ("kopf: JobSchedule watch", re.compile(r"^watcher for jobschedules\.")),
    ("kopf: JobRun events, start", re.compile(r"^(worker for \(jobruns|start jobrun )")),
    ("runtime: run loops", re.compile(r"^jobrun ")),
    ("kopf: JobRun watch", re.compile(r"^watcher for jobruns\.")),
    ("admission: other", re.compile(r"^admission /")),
    ("kopf: other watches", re.compile(r"^watcher for ")),
]

#: The side of a run's cost each group is on (groups not named here: neither).
SIDES = {
    "schedule controller": "creating",
    "admission: JobRun create": "creating",
    "JobSchedule watch": "creating",
    "kopf: JobSchedule events": "creating",
    "kopf: JobSchedule watch": "creating",
    "kopf: JobRun events, start": "running",
    "runtime: run loops": "running",
    "kopf: JobRun watch": "running",
}


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
    original_run = asyncio.events.Handle._run
    original_create = asyncio.base_events.BaseEventLoop.create_task

    def timed_run(handle: asyncio.Handle) -> None:
        start = time.thread_time()
        try:
            original_run(handle)
        finally:
            owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
            if isinstance(owner, asyncio.Task):
                spent = time.thread_time() - start
                group = group_of(owner.get_name())
                totals[group] += spent
                if group == "other tasks":
                    names[re.sub(r"\d+", "N", owner.get_name())] += spent
            else:
                totals["callbacks"] += time.thread_time() - start

    def create_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], *, name: str | None = None, **kwargs: Any
    ) -> asyncio.Task[Any]:
        if name is None:
            creator = asyncio.current_task(loop) if loop.is_running() else None
            name = creator.get_name() if creator is not None else None
        return original_create(loop, coro, name=name, **kwargs)  # type: ignore[arg-type]

    def write(signum: int, frame: FrameType | None) -> None:
        report.write_text(json.dumps({"groups": dict(totals), "others": dict(names.most_common(10))}))

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    asyncio.base_events.BaseEventLoop.create_task = create_task  # type: ignore[method-assign,assignment]
    signal.signal(signal.SIGUSR1, write)
    name_admission_tasks()


def name_admission_tasks() -> None:
    """The task answering an AdmissionReview takes the webhook's path as its name."""
    from aiohttp import web

    from jobnet.kube.webhook import AdmissionWebhooks

    serve = AdmissionWebhooks.serve

    async def named(self: AdmissionWebhooks, request: web.Request) -> web.Response:
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"admission {request.path}")
        return await serve(self, request)

    AdmissionWebhooks.serve = named  # type: ignore[method-assign]


def read(report: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    from jobnet.cli import main

    sys.exit(main(sys.argv[3:]))
