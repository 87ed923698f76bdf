"""Job output on disk: a capped writer that keeps head and tail, and readers over what was kept.

A stream ``stdout`` of a job is stored as the head file ``stdout`` (the first
``max_bytes - tail_bytes`` bytes) and, beyond that, rotating tail segments ``stdout.tail.<n>`` of
``tail_bytes`` each; only the two newest segments exist, and the stored stream is the head followed
by the last ``tail_bytes`` of the segments. Whatever lies between was dropped and is counted.
Memory use is one fixed-size buffer, whatever the job writes.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

_SEGMENT = re.compile(r"^(stdout|stderr)\.tail\.(\d+)$")


def _segments(job_dir: str, stream: str) -> List[int]:
    found = []
    for name in os.listdir(job_dir):
        match = _SEGMENT.match(name)
        if match and match.group(1) == stream:
            found.append(int(match.group(2)))
    return sorted(found)


class CappedWriter:
    def __init__(self, job_dir: str, stream: str, max_bytes: int, tail_bytes: int, resume: bool = False) -> None:
        if max_bytes < 2:
            raise ValueError(f"max output bytes must be at least 2, got {max_bytes}")
        self.tail_bytes = max(1, tail_bytes if tail_bytes < max_bytes else max_bytes // 2)
        self.head_limit = max_bytes - self.tail_bytes
        self._dir = job_dir
        self._stream = stream
        # A new stream's head file is created by its first byte: a file costs an inode allocation
        # (about half a millisecond on a crowded ext4) and many jobs never write to stderr.
        self._head_fd: Optional[int] = None
        self._head_size = 0
        if resume:
            self._head_fd = os.open(os.path.join(job_dir, stream), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._head_size = os.fstat(self._head_fd).st_size
        self._segment = -1
        self._segment_fd: Optional[int] = None
        self._segment_size = 0
        self.total_bytes = self._head_size
        if resume:
            self._resume_segments()

    def _resume_segments(self) -> None:
        """Continue after another writer (a supervisor that died) from what it left on disk."""
        self.total_bytes = StoredOutput(self._dir, self._stream).sizes()[0]
        newest = _segments(self._dir, self._stream)
        if not newest:
            return
        self._segment = newest[-1]
        path = os.path.join(self._dir, f"{self._stream}.tail.{self._segment}")
        self._segment_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._segment_size = os.fstat(self._segment_fd).st_size

    @property
    def dropped_bytes(self) -> int:
        return max(0, self.total_bytes - self.head_limit - self.tail_bytes)

    def write(self, data: bytes) -> None:
        self.total_bytes += len(data)
        view = memoryview(data)
        if self._head_size < self.head_limit:
            if self._head_fd is None:
                self._head_fd = os.open(
                    os.path.join(self._dir, self._stream), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
                )
            room = self.head_limit - self._head_size
            self._write_all(self._head_fd, view[:room])
            self._head_size += min(room, len(view))
            view = view[room:]
        while view:
            if self._segment_fd is None or self._segment_size >= self.tail_bytes:
                self._next_segment()
            room = self.tail_bytes - self._segment_size
            assert self._segment_fd is not None
            self._write_all(self._segment_fd, view[:room])
            self._segment_size += min(room, len(view))
            view = view[room:]

    def _next_segment(self) -> None:
        if self._segment_fd is not None:
            os.close(self._segment_fd)
        self._segment += 1
        path = os.path.join(self._dir, f"{self._stream}.tail.{self._segment}")
        self._segment_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._segment_size = 0
        if self._segment >= 2:
            try:
                os.unlink(os.path.join(self._dir, f"{self._stream}.tail.{self._segment - 2}"))
            except FileNotFoundError:
                pass

    @staticmethod
    def _write_all(fd: int, view: memoryview) -> None:
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._head_fd is not None:
            os.close(self._head_fd)
            self._head_fd = None
        if self._segment_fd is not None:
            os.close(self._segment_fd)
            self._segment_fd = None


Piece = Tuple[str, int, int]  # (path, offset in file, length)


class StoredOutput:
    """What is kept of one stream, as a sequence of file pieces; tolerant of a live writer."""

    def __init__(self, job_dir: str, stream: str) -> None:
        self._dir = job_dir
        self._stream = stream

    def _layout(self) -> Tuple[List[Piece], int]:
        """The pieces of the stored stream and the total bytes the job wrote."""
        head = os.path.join(self._dir, self._stream)
        try:
            head_size = os.path.getsize(head)
        except FileNotFoundError:
            return [], 0
        segments = _segments(self._dir, self._stream)
        pieces = [(head, 0, head_size)]
        if not segments:
            return pieces, head_size
        newest = segments[-1]
        newest_path = os.path.join(self._dir, f"{self._stream}.tail.{newest}")
        newest_size = os.path.getsize(newest_path)
        if len(segments) == 1 or segments[-2] != newest - 1:
            pieces.append((newest_path, 0, newest_size))
            return pieces, head_size + newest_size
        previous_path = os.path.join(self._dir, f"{self._stream}.tail.{newest - 1}")
        segment_size = os.path.getsize(previous_path)  # a full segment: tail_bytes long
        keep_from_previous = max(0, segment_size - newest_size)
        pieces.append((previous_path, segment_size - keep_from_previous, keep_from_previous))
        pieces.append((newest_path, 0, newest_size))
        return pieces, head_size + newest * segment_size + newest_size

    def _stable_layout(self) -> Tuple[List[Piece], int]:
        # A live writer may rotate a segment away between listing and reading: look again.
        last_error: Optional[OSError] = None
        for _ in range(5):
            try:
                return self._layout()
            except FileNotFoundError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def paths(self) -> List[str]:
        """The files that hold what is kept, in order (none before the stream's first byte)."""
        pieces, _ = self._stable_layout()
        return [path for path, _, _ in pieces]

    def sizes(self) -> Tuple[int, int, int]:
        """(total bytes written, bytes stored, bytes dropped)."""
        pieces, total = self._stable_layout()
        stored = sum(length for _, _, length in pieces)
        return total, stored, total - stored

    def read(self, offset: int, length: int) -> Tuple[bytes, int]:
        """Up to ``length`` stored bytes from ``offset``; also returns the stored size."""
        for _ in range(5):
            pieces, _ = self._stable_layout()
            try:
                return self._read_pieces(pieces, offset, length), sum(p[2] for p in pieces)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"output of {self._stream} keeps rotating away; try again")

    def tail(self, max_bytes: int) -> Tuple[bytes, int, int]:
        """The last ``max_bytes`` stored bytes, total bytes written, and bytes dropped."""
        for _ in range(5):
            pieces, total = self._stable_layout()
            stored = sum(p[2] for p in pieces)
            start = max(0, stored - max_bytes)
            try:
                return self._read_pieces(pieces, start, stored - start), total, total - stored
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"output of {self._stream} keeps rotating away; try again")

    @staticmethod
    def _read_pieces(pieces: List[Piece], offset: int, length: int) -> bytes:
        chunks = []
        position = 0
        for path, file_offset, piece_length in pieces:
            if length <= 0:
                break
            if offset >= position + piece_length:
                position += piece_length
                continue
            skip = max(0, offset - position)
            take = min(piece_length - skip, length)
            with open(path, "rb") as handle:
                handle.seek(file_offset + skip)
                chunks.append(handle.read(take))
            length -= take
            offset += take
            position += piece_length
        return b"".join(chunks)
