"""The API emulator in a process of its own, as a real API server is.

In-process (``tests.support.emulator.EmulatorServer``, a thread), the emulator's answers wait for
the GIL of the benchmark's own threads: the watch that times a run decodes every write it sees,
at the moment the operator waits for that write's answer. ``jobnet dev`` runs the emulator in a
process whose other threads only wait, and a real API server is a process of its own, so the
benchmarks run it in a child process: :class:`EmulatorProcess` offers the calls the scenario
harness makes (kubectl, get, list, put, remove), each forwarded over a pipe to the child's
``EmulatorServer`` (which runs it on its loop, as in-process).
"""

from __future__ import annotations

import multiprocessing.connection
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

if __name__ == "__main__":  # the child, started as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.emulator import EmulatorServer

#: The calls forwarded to the child's EmulatorServer (all the scenario harness makes).
FORWARDED = frozenset({"get", "list_objects", "put", "remove"})


def _serve(workdir: Path, connection: multiprocessing.connection.Connection) -> None:
    """The child: serve the emulator, answer forwarded calls until told to stop (None)."""
    with EmulatorServer(workdir) as server:
        connection.send((server.port, server.secure_port))
        while (call := connection.recv()) is not None:
            name, args = call
            try:
                connection.send((True, getattr(server, name)(*args)))
            except Exception as error:  # handed to the caller, as the in-process call would raise it
                connection.send((False, error))


class EmulatorProcess:
    """``with EmulatorProcess(workdir) as emulator:`` an emulator served by a child process, with
    the kubeconfig (the admin's, plain HTTP) written to ``workdir / "kubeconfig.yaml"``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.port = 0
        self.secure_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: multiprocessing.connection.Connection | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Self:
        ours, theirs = socket.socketpair()
        # A fresh interpreter (none of our threads, nothing of ours imported twice).
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(self.workdir), str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self._connection = multiprocessing.connection.Connection(ours.detach())
        if not self._connection.poll(60):
            raise RuntimeError("the emulator process did not start within 60 s")
        self.port, self.secure_port = self._connection.recv()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None and self._connection is not None
        self._connection.send(None)
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _forward(self, name: str, *args: Any) -> Any:
        assert self._connection is not None
        self._connection.send((name, args))
        ok, value = self._connection.recv()
        if not ok:
            raise value
        return value

    def __getattr__(self, name: str) -> Any:
        if name not in FORWARDED:
            raise AttributeError(f"{name}: not offered by the emulator process (forwarded: {sorted(FORWARDED)})")
        return lambda *args: self._forward(name, *args)

    # Parent-side helpers of EmulatorServer that only use the attributes and calls above.
    kubectl = EmulatorServer.kubectl
    events_for = EmulatorServer.events_for
    create_namespace = EmulatorServer.create_namespace


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), multiprocessing.connection.Connection(int(sys.argv[2])))
