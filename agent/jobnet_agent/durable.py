"""Writing files so that readers see whole contents, and, when asked, a power loss does too."""

from __future__ import annotations

import os
from typing import List


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (files created, renamed, removed) survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_whole(path: str) -> bytes:
    """A small file's content: an open, reads and a close (Python's buffered ``open`` adds five
    system calls around them: a record file is read a few times per job)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks: List[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` so readers see the old or the new content, never a mix.

    ``durable`` also makes it survive a power loss (fsync of the file and of its directory).
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(path))


def poke_fifo(path: str, byte: bytes) -> None:
    """Write one byte to a FIFO without blocking (a full FIFO was poked already and its reader
    looks anyway). Raises OSError when it cannot be opened (ENXIO: nobody reads it)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, byte)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
