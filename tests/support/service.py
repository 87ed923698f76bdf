"""A Service in front of several operator replicas' webhook ports, as the chart's webhook Service
is: the API emulator calls webhooks by URL only (services are not emulated), so a test that
points the webhook configurations at one replica loses admission whenever that replica is down,
which a cluster does not. :class:`ServiceProxy` listens on one local port and hands each new
connection to the next backend in turn that accepts it; a backend that refuses (stopped, killed,
restarting) is skipped, as kube-proxy skips a pod that is not Ready. A frozen backend still
accepts (its kernel does), so a call that lands there times out, as it would in a cluster until
the pod's readiness probe fails.

Each relay ends when either side closes, or after ``idle_timeout`` seconds without data; the
accept loop ends with :meth:`stop`: every thread is bounded.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Sequence

from jobnet.devenv.emulator import free_port

#: Connect timeout to one backend (a local port: refused or accepted at once).
CONNECT_TIMEOUT = 1.0
_POLL = 0.2


class ServiceProxy:
    """``backends()``: the ports to balance over, asked at each connection."""

    def __init__(self, backends: Callable[[], Sequence[int]], *, idle_timeout: float = 60.0) -> None:
        self._backends = backends
        self._idle_timeout = idle_timeout
        self.port = free_port()
        self._next = 0
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        #: per backend port: connections handed to it (what the tests look at)
        self.handed: dict[int, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_POLL)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=self._idle_timeout + 1)
        if self._listener is not None:
            self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            backend = self._connect()
            if backend is None:
                client.close()  # no backend accepts: the caller sees the connection closed
                continue
            self._spawn(self._relay, client, backend)

    def _connect(self) -> socket.socket | None:
        """The next backend in turn that accepts a connection (each tried once)."""
        ports = list(self._backends())
        for _ in range(len(ports)):
            port = ports[self._next % len(ports)]
            self._next += 1
            try:
                backend = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
            except OSError:
                continue
            self.handed[port] = self.handed.get(port, 0) + 1
            return backend
        return None

    def _relay(self, client: socket.socket, backend: socket.socket) -> None:
        peers = {client: backend, backend: client}
        idle_until = self._idle_timeout
        try:
            while not self._stopped.is_set() and idle_until > 0:
                readable, _, _ = select.select(list(peers), [], [], _POLL)
                if not readable:
                    idle_until -= _POLL
                    continue
                idle_until = self._idle_timeout
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            backend.close()
