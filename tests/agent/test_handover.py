"""Both sides of the hand-over of a job to the supervising process (jobnet_agent.handover), over
a real socket pair."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobnet_agent.handover import ADOPT, START, receive_job, send_job


def test_a_job_changes_hands_with_its_lock_held_and_its_ready_pipe(tmp_path: Path) -> None:
    serve_side, supervisor_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lock_path = tmp_path / "supervisor.lock"
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    ready_r, ready_w = os.pipe()
    try:
        send_job(serve_side, START, str(tmp_path), [lock_fd, ready_w])
        # serve's copies go: the lock stays held through the copy in flight.
        os.close(lock_fd)
        os.close(ready_w)
        probe = os.open(lock_path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)

        received = receive_job(supervisor_side)
        assert received is not None
        kind, job_dir, (received_lock, received_ready) = received
        assert (kind, job_dir) == (START, str(tmp_path))
        os.write(received_ready, b"1")
        assert os.read(ready_r, 1) == b"1"
        os.close(received_ready)
        os.close(received_lock)  # the last holder lets go: the lock is free
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
    finally:
        os.close(ready_r)
        serve_side.close()
        supervisor_side.close()


@pytest.fixture
def lock_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def hand_over(kind: bytes, job_dir: str, fds: list[int]) -> tuple[bytes, str, list[int]] | None:
    """Send one hand-over through a fresh socket pair and receive it on the other side."""
    serve_side, supervisor_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        send_job(serve_side, kind, job_dir, fds)
        return receive_job(supervisor_side)
    finally:
        serve_side.close()
        supervisor_side.close()


def test_an_adoption_carries_the_lock_only(tmp_path: Path, lock_fd: int) -> None:
    received = hand_over(ADOPT, str(tmp_path), [lock_fd])

    assert received is not None and received[:2] == (ADOPT, str(tmp_path)) and len(received[2]) == 1
    os.close(received[2][0])


def test_a_hand_over_with_fds_missing_is_dropped_and_its_fds_closed(tmp_path: Path, lock_fd: int) -> None:
    # a start needs its ready pipe too
    assert hand_over(START, str(tmp_path), [lock_fd]) == (START, str(tmp_path), [])


def test_the_supervising_process_learns_that_serve_is_gone() -> None:
    serve_side, supervisor_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serve_side.close()
    try:
        assert receive_job(supervisor_side) is None
    finally:
        supervisor_side.close()
