"""Both sides of the fork server's hand-over (jobnet_agent.forkserver), over a real socket pair."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import pytest

from jobnet_agent.forkserver import receive_job, send_job


def test_a_job_changes_hands_with_its_lock_held_and_its_ready_pipe(tmp_path: Path) -> None:
    serve_side, fork_server_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lock_path = tmp_path / "supervisor.lock"
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    ready_r, ready_w = os.pipe()
    try:
        send_job(serve_side, str(tmp_path), lock_fd, ready_w)
        # serve's copies go: the lock stays held through the copy in flight.
        os.close(lock_fd)
        os.close(ready_w)
        probe = os.open(lock_path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)

        received = receive_job(fork_server_side)
        assert received is not None
        job_dir, received_lock, received_ready = received
        assert job_dir == str(tmp_path)
        os.write(received_ready, b"1")
        assert os.read(ready_r, 1) == b"1"
        os.close(received_ready)
        os.close(received_lock)  # the last holder lets go: the lock is free
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
    finally:
        os.close(ready_r)
        serve_side.close()
        fork_server_side.close()


def test_the_fork_server_learns_that_serve_is_gone() -> None:
    serve_side, fork_server_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serve_side.close()
    try:
        assert receive_job(fork_server_side) is None
    finally:
        fork_server_side.close()
