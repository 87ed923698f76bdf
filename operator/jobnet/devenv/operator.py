"""Run the real operator (``jobnet operator``) as a subprocess against the API emulator (tests, ``jobnet dev``).

The operator gets a kubeconfig pointing at the emulator, a plain-HTTP webhook server on a
free localhost port, and writes its log to a file the test can read and assert on.
:func:`register_webhooks` installs the same Validating- and MutatingWebhookConfiguration as
the Helm chart, with URLs instead of a Service, so ``kubectl apply``/``annotate`` against the
emulator go through the operator's real admission webhooks.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobnet.core.admission import CONFIGURATION_KINDS, webhook_configurations
from jobnet.devenv.emulator import EmulatorServer, free_port
from jobnet.devenv.net import DeadlineExceeded, wait_until

WEBHOOK_CONFIGURATION = "jobnet-operator"


class OperatorNotReady(AssertionError):
    pass


def register_webhooks(
    emulator: EmulatorServer, base_url: str, failure_policy: str = "Fail", ca_bundle: bytes | None = None
) -> None:
    """Install the chart's Validating- and MutatingWebhookConfiguration, calling ``base_url``
    directly (verifying its TLS certificate against ``ca_bundle`` when it is HTTPS)."""
    client_config: dict[str, Any] = {"url": base_url}
    if ca_bundle:
        client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
    for plural, webhooks in webhook_configurations(client_config, failure_policy).items():
        emulator.put(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": CONFIGURATION_KINDS[plural],
                "metadata": {"name": WEBHOOK_CONFIGURATION},
                "webhooks": webhooks,
            }
        )


def unregister_webhooks(emulator: EmulatorServer) -> None:
    for plural in CONFIGURATION_KINDS:
        emulator.remove("admissionregistration.k8s.io/v1", plural, None, WEBHOOK_CONFIGURATION)


class OperatorProcess:
    """One ``jobnet operator`` subprocess; ``start``/``stop``/``kill``/``restart`` it at will."""

    def __init__(
        self,
        emulator: EmulatorServer,
        workdir: Path,
        *,
        namespaces: tuple[str, ...] = (),
        extra_args: tuple[str, ...] = (),
        leader_election: bool = False,
        log_format: str = "text",
        ready_timeout: float = 30.0,
        tls: tuple[Path, Path] | None = None,
        verbose: bool = True,
        kubeconfig: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.emulator = emulator
        #: whom the operator is (default: the emulator's admin), e.g. a ServiceAccount's token
        self.kubeconfig = kubeconfig or emulator.kubeconfig
        #: extra environment variables of the process (e.g. a test's libfaketime clock)
        self.environment = dict(environment or {})
        #: kopf's debug messages too (tests read them); benchmarks measure the production setting
        self.verbose = verbose
        self.tls = tls  # (certificate, key) of the webhook server; plain HTTP without
        #: elect a leader (several replicas); without, this process drives the runs at once
        self.leader_election = leader_election
        self.log_format = log_format
        self.workdir = workdir
        self.namespaces = namespaces
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.webhook_port = free_port()
        self.liveness_port = free_port()
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def webhook_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.webhook_port}"

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    def command(self) -> list[str]:
        args = [
            "operator",
            f"--kubeconfig={self.kubeconfig}",
            *(
                [f"--webhook-cert={self.tls[0]}", f"--webhook-key={self.tls[1]}"]
                if self.tls
                else ["--webhook-insecure"]
            ),
            "--webhook-listen-address=127.0.0.1",
            f"--webhook-port={self.webhook_port}",
            f"--liveness-endpoint=http://127.0.0.1:{self.liveness_port}/healthz",
            *([] if self.leader_election else ["--no-leader-election"]),
            f"--log-format={self.log_format}",
            *(["--verbose"] if self.verbose else []),
            # Short deadlines keep reconnects within a test's time.
            "--watch-server-timeout=10",
            "--watch-client-timeout=15",
            "--connect-timeout=2",
            "--request-timeout=10",
            "--retry-delay=1",
            *(f"--namespace={ns}" for ns in self.namespaces),
            *self.extra_args,
        ]
        return [sys.executable, "-c", "import sys; from jobnet.cli import main; sys.exit(main())", *args]

    def start(self, *, wait_ready: bool = True) -> OperatorProcess:
        """Start the process; by default wait until it serves (``wait_ready=False``: an operator
        that cannot reach its API server yet does not serve its webhook either)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the operator is already running")
        self._log_file = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
        env.update(PYTHONUNBUFFERED="1", POD_ID=f"operator-{uuid.uuid4().hex[:6]}", **self.environment)
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll (with a deadline) until the liveness endpoint answers and the webhook accepts connections."""
        process = self.process
        assert process is not None

        def ready() -> bool:
            if process.poll() is not None:
                raise OperatorNotReady(f"the operator exited with {process.returncode}:\n{self.log_tail()}")
            return self._alive() and self._port_open(self.webhook_port)

        try:
            wait_until(ready, timeout=self.ready_timeout, interval=0.1, what="the operator ready", ignoring=())
        except DeadlineExceeded:
            raise OperatorNotReady(
                f"the operator was not ready within {self.ready_timeout}s:\n{self.log_tail()}"
            ) from None

    def _alive(self) -> bool:
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time. Returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: a crash, no cleanup at all."""
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        if self.process is None:
            raise RuntimeError("the operator was never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return int(self.process.returncode)

    # -- the log --

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 15.0, since: int = 0) -> re.Match[str]:
        """Poll the log until ``pattern`` (a regex) appears, or fail with the log's tail.

        ``since``: search from that offset of :meth:`log_text` (its length taken earlier), so that
        a line logged before then cannot match."""
        regex = re.compile(pattern)
        return wait_until(
            lambda: regex.search(self.log_text(), since),
            timeout=timeout,
            interval=0.1,
            what=f"{pattern!r} in the operator log",
            describe=lambda: f"operator log (tail):\n{self.log_tail()}",
        )

    # -- the webhook, directly --

    def admission_review(self, path: str, review: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """POST an ``admission.k8s.io/v1`` AdmissionReview to the webhook; return its ``response``."""
        request = urllib.request.Request(
            f"{self.webhook_url}{path}",
            data=json.dumps(review).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return dict(json.loads(reply.read())["response"])
