"""Follow every JobRun of a namespace over the API's real watch, through API outages and stalls:
after a broken or stalled stream it resumes from the last resourceVersion it saw (a relist when
the API says that version is too old), so the phases it records per run are in version order;
an event older than the run's newest version seen (held back by a fault, then released) is
ignored, as any client that compares versions would."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections import defaultdict
from typing import Any

from tests.support.emulator import EmulatorServer

JOBRUNS_PATH = "/apis/jobnet.dev/v1alpha1/namespaces/{namespace}/jobruns"


class PhaseWatch:
    """``with PhaseWatch(emulator) as watch:`` records :attr:`phases` (run -> phases seen, a new
    entry each time the phase changes) until closed."""

    def __init__(
        self, emulator: EmulatorServer, namespace: str = "default", read_timeout: float = 5.0, stream_seconds: int = 60
    ) -> None:
        self._address = urllib.parse.urlsplit(emulator.url)
        self._path = JOBRUNS_PATH.format(namespace=namespace)
        self._read_timeout = read_timeout
        self._stream_seconds = stream_seconds
        self.phases: dict[str, list[str]] = defaultdict(list)
        self.streams = 0
        self.relists = 0
        self.late = 0
        self._versions: dict[str, int] = {}
        self._version = ""
        self._closed = threading.Event()
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._follow, name="chaos phase watch", daemon=True)

    def __enter__(self) -> PhaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(2)
            except OSError:
                pass
        self._thread.join(15)

    def _record(self, body: dict[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        name, version = metadata.get("name", ""), int(metadata.get("resourceVersion") or 0)
        if version <= self._versions.get(name, 0):
            self.late += 1  # an old version delivered late (a fault): a client ignores it
            return
        self._versions[name] = version
        phase = (body.get("status") or {}).get("phase")
        seen = self.phases[name]
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
        self._version = str(max(int(self._version or 0), version))

    def _request(self, query: dict[str, str]) -> http.client.HTTPResponse:
        self._connection = http.client.HTTPConnection(
            self._address.hostname or "127.0.0.1", self._address.port, timeout=self._read_timeout
        )
        self._connection.request("GET", f"{self._path}?{urllib.parse.urlencode(query)}")
        return self._connection.getresponse()

    def relist(self) -> None:
        """Record the current version of every run (after a gap the stream cannot replay); its
        own connection, beside the stream's."""
        connection = http.client.HTTPConnection(
            self._address.hostname or "127.0.0.1", self._address.port, timeout=self._read_timeout
        )
        try:
            connection.request("GET", self._path)
            for item in json.loads(connection.getresponse().read()).get("items") or []:
                self._record(item)
        finally:
            connection.close()

    def _relist(self) -> None:
        self.relists += 1
        listed = json.loads(self._request({}).read())
        for item in listed.get("items") or []:
            self._record(item)
        self._version = listed["metadata"]["resourceVersion"]

    def _stream(self) -> None:
        self.streams += 1
        query = {"watch": "true", "timeoutSeconds": str(self._stream_seconds)}
        if self._version:
            query["resourceVersion"] = self._version
        for line in self._request(query):
            event = json.loads(line)
            if event["type"] == "ERROR":
                self._relist()
                return
            self._record(event["object"])

    def _follow(self) -> None:
        # Bounded by close(): every pass is one stream (at most stream_seconds) or one failed connect.
        while not self._closed.is_set():
            try:
                self._stream()
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                self._closed.wait(0.2)  # the API is away (outage, stall): try again shortly
            finally:
                if self._connection is not None:
                    self._connection.close()
