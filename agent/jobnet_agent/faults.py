"""Crash, pause and failure points: make this process SIGKILL itself, stall, or see an I/O error
at a named step.

Set ``JOBNET_AGENT_CRASH_AT`` to a comma-separated list of point names (e.g.
``supervise:after-exit``), ``JOBNET_AGENT_PAUSE_AT`` to a comma-separated list of
``name=seconds`` (e.g. ``serve:before-hand-over=1``) or ``name=@path``: hold until ``path``
exists (at most a minute), after creating ``path.reached`` so that a test knows the point was
reached. ``JOBNET_AGENT_FAIL_AT``: a comma-separated list of ``name=@path``: the step raises
``OSError(EIO)`` while ``path`` exists (a disk that fails, then recovers). Unset (the normal
case), every point is a no-op. The tests use them to stop an agent
process at exactly one step, or to hold it there while they cut its channel or restart the
operator, instead of racing a ``kill -9`` or a disconnect against it.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from typing import List

_ENV = "JOBNET_AGENT_CRASH_AT"
_PAUSE_ENV = "JOBNET_AGENT_PAUSE_AT"
_FAIL_ENV = "JOBNET_AGENT_FAIL_AT"


def crash_point(*names: str) -> None:
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    points = {p.strip() for p in wanted.split(",")}
    if points.intersection(names):
        os.kill(os.getpid(), signal.SIGKILL)


def _settings(variable: str, name: str) -> List[str]:
    """The values ``name=VALUE`` of point ``name`` in the comma-separated list ``variable`` holds."""
    found = []
    for item in os.environ.get(variable, "").split(","):
        point, _, value = item.strip().partition("=")
        if point == name:
            found.append(value)
    return found


def pause_point(name: str) -> None:
    for seconds in _settings(_PAUSE_ENV, name):
        if seconds.startswith("@"):
            _hold_until(seconds[1:])
        else:
            time.sleep(float(seconds))


def fail_point(name: str) -> None:
    for value in _settings(_FAIL_ENV, name):
        if value.startswith("@") and os.path.exists(value[1:]):
            raise OSError(errno.EIO, f"injected I/O error at {name}")


#: A held point goes on by itself after this long, so that a test that fails never leaves it held.
_MAX_HOLD_SECONDS = 60.0


def _hold_until(path: str) -> None:
    with open(path + ".reached", "w"):
        pass
    deadline = time.monotonic() + _MAX_HOLD_SECONDS
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
