"""Probes of the VM's processes through /proc (``kill(pid, 0)`` where there is no /proc).

Every probe tells a pid from its reuse or ignores zombies, because the answers decide whether a
job still runs: a wrong "alive" adopts a stranger, a wrong "gone" reports a live job lost.
"""

from __future__ import annotations

import os
from typing import List, Optional

from jobnet_agent.durable import read_whole


def _stat_fields(pid: str) -> Optional[List[bytes]]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        return read_whole(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (tells a pid from its reuse); None
    when it is gone or a zombie."""
    fields = _stat_fields(str(pid))
    if fields is None or fields[0] == b"Z":
        return None
    return int(fields[19])


def process_alive(pid: int, start_ticks: Optional[int]) -> bool:
    """Whether ``pid`` is still the same live (non-zombie) process."""
    if os.path.isdir("/proc/self"):
        ticks = process_start_ticks(pid)
        return ticks is not None and (start_ticks is None or ticks == start_ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in group ``pgid``.

    Zombies count for ``kill``; they linger when init reaps slowly, so /proc is asked too.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False
