"""A connection the operator gives up as dead is reset, not closed: the kernel drops what it still
holds instead of retransmitting it (a kill written while the link was cut would otherwise reach
the agent minutes later, once the link returns). Seen from the peer on loopback: a reset is
ECONNRESET, a close is an orderly end of stream."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from jobnet.ssh.pool import HostConnectionPool, SshTarget, _HostState


@dataclass
class SocketOnlyTransport:
    """What invalidate uses of a paramiko Transport: its socket, and close."""

    sock: socket.socket

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        peer, _ = server.accept()
        peer.settimeout(5)
        with client, peer:
            yield client, peer


def _pool_holding(transport: SocketOnlyTransport) -> tuple[HostConnectionPool, SshTarget]:
    pool, target = HostConnectionPool(), SshTarget(address="127.0.0.1", port=22, user="jobnet")
    pool._hosts[target] = _HostState(transport=transport)  # type: ignore[arg-type]
    return pool, target


@pytest.mark.parametrize("reset", [True, False])
def test_a_dead_connection_is_reset_a_routine_one_closed(
    connection: tuple[socket.socket, socket.socket], reset: bool
) -> None:
    client, peer = connection
    pool, target = _pool_holding(SocketOnlyTransport(client))
    pool.invalidate(target, reset=reset)
    if reset:
        with pytest.raises(ConnectionResetError):
            peer.recv(1)
    else:
        assert peer.recv(1) == b""
    assert pool._hosts[target].transport is None
