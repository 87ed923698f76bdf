"""The operator started with exactly the container command line and environment the Helm chart
renders, against the API emulator: chart and binary cannot drift apart.

Values choose free ports, ``extraEnv`` binds the servers to loopback and ``extraArgs`` adds the
emulator's kubeconfig, the name the emulator calls the webhook by (127.0.0.1) and short test
deadlines: the chart's own mechanisms, no editing of the rendered command. Only what a cluster
fills in is substituted: the pod name of ``POD_ID``, and a URL for the webhook configurations'
Service (the emulator has no Services). The operator then issues its webhook certificate into
the chart's Secret, sets the caBundle the chart leaves out, and serves ``/metrics`` and liveness.
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from jobnet.core.servingcert import ServingMaterial, issue
from jobnet.devenv.emulator import free_port
from tests.support.emulator import EmulatorServer
from tests.support.netutil import wait_until

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a test dependency: pip install -e '.[test]'")

pytestmark = [pytest.mark.emulator]

CHART = Path(__file__).resolve().parents[2] / "charts" / "jobnet-operator"
RELEASE, NAMESPACE = "jobnet-operator", "jobnet-system"
SECRET = f"{RELEASE}-webhook-tls"
CONFIGURATION = f"{RELEASE}-{NAMESPACE}"
ADMISSION = "admissionregistration.k8s.io/v1"
CONFIGURATION_PLURALS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
#: Kinds the emulator stores as the chart renders them (the rest needs a real cluster: pods...).
APPLIED_KINDS = {
    "Secret",
    "ClusterKopfPeering",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    *("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"),
}
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
#: What kopf tries and does without when refused; the chart grants it only with rbac.watchCRDs.
TOLERATED_DENIALS = ["list customresourcedefinitions"]


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for template, text in sorted(manifests.items())
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


class ChartOperator:
    """The operator process as the chart's Deployment would run it."""

    def __init__(self, emulator: EmulatorServer, workdir: Path, kubeconfig: Path) -> None:
        self.emulator = emulator
        self.ports = {"webhook": free_port(), "liveness": free_port(), "metrics": free_port()}
        self.values = {
            "webhook": {"port": self.ports["webhook"]},
            "liveness": {"port": self.ports["liveness"]},
            "metrics": {"port": self.ports["metrics"]},
            "extraEnv": [
                {"name": "JOBNET_OPERATOR_WEBHOOK_LISTEN_ADDRESS", "value": "127.0.0.1"},
                {"name": "JOBNET_OPERATOR_METRICS_ADDRESS", "value": "127.0.0.1"},
            ],
            "extraArgs": [
                f"--kubeconfig={kubeconfig}",  # the chart's ServiceAccount (its RBAC is enforced)
                f"--liveness-endpoint=http://127.0.0.1:{self.ports['liveness']}/healthz",
                "--webhook-tls-name=127.0.0.1",
                "--webhook-tls-check-interval=1",
                "--watch-server-timeout=10",
                "--watch-client-timeout=15",
                "--retry-delay=1",
            ],
        }
        self.objects = render(self.values)
        (deployment,) = [o for o in self.objects if o["kind"] == "Deployment"]
        (self.container,) = deployment["spec"]["template"]["spec"]["containers"]
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        """What ``helm install`` would create, as far as the emulator stores it."""
        for obj in self.objects:
            if obj["kind"] not in APPLIED_KINDS:
                continue
            if obj["kind"].endswith("WebhookConfiguration"):
                for webhook in obj["webhooks"]:
                    service = webhook["clientConfig"].pop("service")
                    webhook["clientConfig"]["url"] = f"https://127.0.0.1:{self.ports['webhook']}{service['path']}"
            self.emulator.put(obj)

    def command(self) -> list[str]:
        program, *rest = self.container["command"]
        assert program == "jobnet"
        executable = shutil.which("jobnet")
        launcher = (
            [executable]
            if executable
            else [sys.executable, "-c", "import sys; from jobnet.cli import main; sys.exit(main())"]
        )
        return [*launcher, *rest, *self.container["args"]]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
        for variable in self.container["env"]:
            if "valueFrom" in variable:  # the downward API of a pod: its name
                assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, variable
                env[variable["name"]] = "jobnet-operator-7d9f8-abcde"
            else:
                env[variable["name"]] = variable["value"]
        return env

    def start(self) -> ChartOperator:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True
        )
        log.close()
        wait_until(self.alive, timeout=30, what="the liveness endpoint", describe=self.log_tail)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:]) if self.log_path.exists() else ""

    def http(self, port: str, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[port]}{path}", timeout=2) as reply:
            return reply.status, reply.read().decode()

    def alive(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"the operator exited with {self.process.returncode}:\n{self.log_tail()}"
        probe = self.container["livenessProbe"]["httpGet"]
        assert probe["port"] == "liveness"
        try:
            return self.http("liveness", probe["path"])[0] == 200
        except OSError:
            return False

    def served_certificate(self) -> x509.Certificate | None:
        """The certificate the webhook port presents now (None while it does not answer)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only looking at what is presented
        try:
            with socket.create_connection(("127.0.0.1", self.ports["webhook"]), timeout=2) as sock:
                with context.wrap_socket(sock) as tls:
                    der = tls.getpeercert(binary_form=True)
        except OSError:
            return None
        return x509.load_der_x509_certificate(der) if der else None


@pytest.fixture
def chart_operator(emulator: EmulatorServer, tmp_path: Path) -> Iterator[ChartOperator]:
    emulator.create_namespace(NAMESPACE)
    operator = ChartOperator(emulator, tmp_path, tmp_path / "operator.kubeconfig")
    operator.install()
    issued = emulator.kubectl("create", "token", RELEASE, "-n", NAMESPACE)
    assert issued.rc == 0, issued.stderr
    emulator.write_kubeconfig(tmp_path / "operator.kubeconfig", issued.stdout.strip())
    try:
        yield operator
    finally:
        operator.stop()


def secret_material(emulator: EmulatorServer) -> ServingMaterial | None:
    data = (emulator.get("v1", "secrets", NAMESPACE, SECRET) or {}).get("data") or {}
    return ServingMaterial.from_secret_data({key: base64.b64decode(value) for key, value in data.items()})


def ca_bundles(emulator: EmulatorServer) -> set[str | None]:
    return {
        webhook["clientConfig"].get("caBundle")
        for plural in CONFIGURATION_PLURALS
        for webhook in (emulator.get(ADMISSION, plural, None, CONFIGURATION) or {}).get("webhooks", [])
    }


def jobnet(name: str, after: list[str]) -> str:
    host = {"address": "vm.invalid", "user": "u", "credentialsSecret": "s"}
    jobs = [{"name": "a", "script": "/bin/true", "after": after}, {"name": "b", "script": "/bin/true"}]
    return yaml.safe_dump(
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobNet",
            "metadata": {"name": name},
            "spec": {"host": host, "jobs": jobs},
        }
    )


def test_the_operator_runs_as_the_chart_renders_it(chart_operator: ChartOperator, emulator: EmulatorServer) -> None:
    args = chart_operator.container["args"]
    assert args[args.index("--metrics-port") + 1] == str(chart_operator.ports["metrics"])
    assert args[-len(chart_operator.values["extraArgs"]) :] == chart_operator.values["extraArgs"]
    assert secret_material(emulator) is None and ca_bundles(emulator) == {None}  # as rendered

    chart_operator.start()

    status, metrics = chart_operator.http("metrics", "/metrics")
    assert status == 200 and "jobnet_api_writes" in metrics
    material = wait_until(lambda: secret_material(emulator), timeout=15, what="the certificate in the Secret")
    bundle = base64.b64encode(material.ca_bundle).decode()
    wait_until(lambda: ca_bundles(emulator) == {bundle}, timeout=15, what="the caBundle of both configurations")
    served = wait_until(chart_operator.served_certificate, timeout=15, what="the webhook serving TLS")
    assert served == x509.load_pem_x509_certificate(material.certificate)
    # The API server reaches the webhook over TLS, verified against the caBundle the operator set.
    refused = emulator.kubectl("apply", "-f", "-", input=jobnet("loop", after=["a"]))
    assert refused.rc != 0 and "denied the request" in refused.stderr and "cycle" in refused.stderr, refused
    assert emulator.kubectl("apply", "-f", "-", input=jobnet("fine", after=["b"])).rc == 0
    # All of that as its ServiceAccount, with exactly the chart's RBAC.
    denied = sorted(f"{r.verb} {r.resource}" for user, r in emulator.denial_log() if user == ACCOUNT)
    assert denied == TOLERATED_DENIALS, f"the chart's RBAC lacks what the operator needs: {denied}"


def test_the_operator_renews_an_expiring_certificate_and_serves_one_another_replica_wrote(
    chart_operator: ChartOperator, emulator: EmulatorServer
) -> None:
    args = chart_operator.command()
    names = [args[i + 1] for i, arg in enumerate(args) if arg == "--webhook-tls-name"] + ["127.0.0.1"]
    now = datetime.datetime.now(datetime.UTC)
    expiring = issue(names, now, datetime.timedelta(days=2))  # within the 30 days before expiry
    secret = emulator.get("v1", "secrets", NAMESPACE, SECRET)
    assert secret is not None
    emulator.put({**secret, "data": {k: base64.b64encode(v).decode() for k, v in expiring.secret_data().items()}})

    chart_operator.start()

    renewed = wait_until(
        lambda: (m := secret_material(emulator)) is not None and m.certificate != expiring.certificate and m,
        timeout=15,
        what="a renewed certificate",
    )
    authorities = x509.load_pem_x509_certificates(renewed.ca_bundle)
    assert x509.load_pem_x509_certificates(expiring.ca_bundle)[0] in authorities[1:]  # the old CA is still trusted
    assert "issued a new webhook certificate" in chart_operator.log_tail()
    wait_until(
        lambda: chart_operator.served_certificate() == x509.load_pem_x509_certificate(renewed.certificate),
        timeout=20,
        what="the renewed certificate served",
    )

    # Another replica rotated: this one serves what the Secret holds now and syncs the caBundle.
    other = issue(names, now, datetime.timedelta(days=365))
    current = emulator.get("v1", "secrets", NAMESPACE, SECRET)
    assert current is not None
    emulator.put({**current, "data": {k: base64.b64encode(v).decode() for k, v in other.secret_data().items()}})
    wait_until(
        lambda: chart_operator.served_certificate() == x509.load_pem_x509_certificate(other.certificate),
        timeout=20,
        what="the other replica's certificate served",
        describe=chart_operator.log_tail,
    )
    wait_until(
        lambda: ca_bundles(emulator) == {base64.b64encode(other.ca_bundle).decode()}, timeout=10, what="caBundle"
    )
    combined = emulator.kubectl("apply", "-f", "-", input=jobnet("after-rotation", after=["b"]))
    assert combined.rc == 0, combined.stderr
    material_text = chart_operator.log_tail() + str(emulator.list_objects("v1", "events", NAMESPACE))
    assert "PRIVATE KEY" not in material_text
