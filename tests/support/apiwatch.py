"""Watch one JobRun over the emulator's real watch API and record every write to it.

Each MODIFIED event is one write to the object (a status patch or an annotation removal), so
the events count the operator's API writes from outside the operator, and each event carries
the whole object as stored, so the largest one is the largest the object ever was.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Self

from tests.support.emulator import EmulatorServer


@dataclass
class ObjectWrite:
    at: float
    size: int
    """Bytes of the object as compact JSON (what etcd stores, near enough)."""
    status: dict[str, Any] = field(repr=False)


class JobRunWatch:
    """``with JobRunWatch(emulator, "run-1") as watch:`` records :attr:`writes` until closed."""

    def __init__(self, emulator: EmulatorServer, run: str, namespace: str = "default", timeout: float = 600.0) -> None:
        query = urllib.parse.urlencode(
            {"watch": "true", "fieldSelector": f"metadata.name={run}", "timeoutSeconds": str(int(timeout))}
        )
        self.url = f"{emulator.url}/apis/jobnet.dev/v1alpha1/namespaces/{namespace}/jobruns?{query}"
        self._address = urllib.parse.urlsplit(emulator.url)
        self._path = f"/apis/jobnet.dev/v1alpha1/namespaces/{namespace}/jobruns?{query}"
        self.timeout = timeout
        self.writes: list[ObjectWrite] = []
        self.created_at: float | None = None
        self.error: BaseException | None = None
        self._socket: socket.socket | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"watch {run}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._connected.wait(10):
            raise AssertionError(f"the watch {self.url} did not connect within 10s: {self.error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _follow(self) -> None:
        try:
            connection = http.client.HTTPConnection(
                self._address.hostname or "127.0.0.1", self._address.port, timeout=self.timeout
            )
            connection.request("GET", self._path)
            self._socket = connection.sock
            response = connection.getresponse()
            self._connected.set()
            for line in response:
                event = json.loads(line)
                body = event["object"]
                now = time.time()
                if event["type"] == "ADDED":
                    self.created_at = now
                elif event["type"] == "MODIFIED":
                    size = len(json.dumps(body, separators=(",", ":")).encode())
                    self.writes.append(ObjectWrite(now, size, body.get("status") or {}))
        except (OSError, ValueError, http.client.HTTPException) as e:
            if not self._connected.is_set():
                self.error = e
        finally:
            self._connected.set()

    def close(self) -> None:
        """End the watch (shutting the socket down wakes the reader blocked on it)."""
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the server
        self._thread.join(10)

    @property
    def largest(self) -> int:
        return max((write.size for write in self.writes), default=0)
