"""Crash points: kill this process with SIGKILL at a named step, to prove the journal survives it.

Set ``JOBNET_AGENT_CRASH_AT`` to a comma-separated list of point names (e.g.
``supervise:after-exit``). Unset (the normal case), every crash point is a no-op. The tests use it
to stop an agent process at exactly one step instead of racing a ``kill -9`` against it.
"""

from __future__ import annotations

import os
import signal

_ENV = "JOBNET_AGENT_CRASH_AT"


def crash_point(*names: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    points = {p.strip() for p in wanted.split(",")}
    if points.intersection(names):
        os.kill(os.getpid(), signal.SIGKILL)
