"""Probes of the VM's processes through /proc (``kill(pid, 0)`` where there is no /proc).

Every probe tells a pid from its reuse or ignores zombies, because the answers decide whether a
job still runs: a wrong "alive" adopts a stranger, a wrong "gone" reports a live job lost.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

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


#: The supervising process's name in ``/proc/<pid>/comm`` (what ``ps -o comm``, ``top`` and
#: ``pgrep`` show; the kernel keeps 15 bytes): how the devenv, the tests and a person tell it from
#: ``serve``, whichever way it was started (a fork of ``serve`` keeps serve's command line).
SUPERVISING_PROCESS_NAME = "jobnetsupervise"


def name_this_process(name: str, argv: Optional[Sequence[str]] = None) -> None:
    """Give this process a name of its own: ``name`` in ``/proc/self/comm``, and ``argv`` in its
    command line (``/proc/self/cmdline``: ``ps -f``, ``ps aux``) as far as the room of the one it
    was started with allows (the kernel reads the command line from the memory it was passed in,
    which this process may write through ``/proc/self/mem``: what setproctitle does). A fork keeps
    its parent's name and command line; this is how it stops looking like its parent. Best effort:
    a /proc that refuses either write leaves that one as it was."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass
    fields = _stat_fields("self") if argv is not None else None
    if argv is None or fields is None or len(fields) < 47:  # arg_start and arg_end: fields 48 and 49 (Linux 3.5)
        return
    start, end = int(fields[45]), int(fields[46])
    title = b"".join(arg.encode("utf-8", "replace") + b"\0" for arg in argv)[: end - start - 1]
    try:
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            # Padded with NULs to the old end: its last byte NUL, the kernel reads argv as written.
            memory.write(title.ljust(end - start, b"\0"))
    except (OSError, ValueError, OverflowError):
        pass
