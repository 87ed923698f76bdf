"""The chaos harness's webhook Service (tests/support/service.py): each connection goes to the
next replica in turn that accepts it; a stopped one is skipped; with none, the connection closes."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.service import ServiceProxy


class Backend:
    """A tiny HTTP server answering its own name (a replica's webhook port)."""

    def __init__(self, name: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    servers = [Backend("a"), Backend("b")]
    yield servers
    for server in servers:
        if server.server.socket.fileno() != -1:
            server.stop()


def ask(proxy: ServiceProxy) -> str:
    with urllib.request.urlopen(proxy.url, timeout=5) as reply:
        return str(reply.read().decode())


def test_connections_are_balanced_and_a_stopped_backend_is_skipped(backends: list[Backend]) -> None:
    proxy = ServiceProxy(lambda: [server.port for server in backends], idle_timeout=2).start()
    try:
        assert sorted(ask(proxy) for _ in range(4)) == ["a", "a", "b", "b"]
        backends[1].stop()  # a replica killed: the Service sends everything to the other
        assert [ask(proxy) for _ in range(3)] == ["a", "a", "a"]
        backends[0].stop()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            ask(proxy)  # nobody serves: the call fails, as a webhook call to no endpoint does
    finally:
        proxy.stop()
