"""The operator's plumbing that every scenario relies on: restarts do not redo work, an API
outage is survived, two replicas with leader election leave exactly one working, JSON logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess, register_webhooks

pytestmark = pytest.mark.emulator
JOBRUNS = ("jobnet.dev/v1alpha1", "jobruns")


def _status(emulator: EmulatorServer, name: str) -> dict:
    return (emulator.get(*JOBRUNS, "default", name) or {}).get("status") or {}


def test_restarted_operator_does_not_start_a_run_again(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    assert kubectl_apply(emulator, jobnet("hello", script_job("a")), jobrun("hello", name="r1")).rc == 0
    operator.wait_for_log(r"JobRun default/r1 expanded JobNet 'hello' into 1 jobs")
    # The run is started once its first status write (phase and snapshot) is stored: a crash
    # between the expansion's log line and that write leaves a run with no phase, which a
    # restarted operator rightly starts (nothing can have been launched without that write).
    wait_until(lambda: _status(emulator, "r1").get("phase"), timeout=15, what="r1's first status write")

    operator.kill()  # a crash: no cleanup
    operator.log_path.write_text("")
    operator.start()
    assert kubectl_apply(emulator, jobrun("hello", name="r2")).rc == 0
    operator.wait_for_log(r"JobRun default/r2 expanded")  # the restarted operator is working

    # kopf may replay the handler if the crash came before it recorded success; the run's own
    # guard (its status has a phase) keeps it from being expanded and started a second time.
    assert "JobRun default/r1" not in operator.log_text()


def test_operator_survives_an_api_outage(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    assert kubectl_apply(emulator, jobnet("hello", script_job("a"))).rc == 0
    with emulator.outage():
        time.sleep(2)  # the outage itself: long enough for every watch to notice
    assert operator.process is not None and operator.process.poll() is None
    assert kubectl_apply(emulator, jobrun("hello", name="after-outage")).rc == 0
    wait_until(
        lambda: _status(emulator, "after-outage").get("phase"),
        timeout=30,
        what="a JobRun created after the outage to be started",
    )


def test_two_replicas_leave_exactly_one_working(emulator: EmulatorServer, tmp_path: Path) -> None:
    replicas = []
    for index in range(2):
        workdir = tmp_path / f"replica-{index}"
        workdir.mkdir()
        replica = OperatorProcess(emulator, workdir, leader_election=True)
        replicas.append(replica.start())
        if index == 0:
            replica.wait_for_log(r"is the leader now")  # the first one leads, the second stands by
    try:
        register_webhooks(emulator, replicas[1].webhook_url)  # any replica serves admission
        replicas[1].wait_for_log(r"is a candidate for Lease default/jobnet-operator")
        assert kubectl_apply(emulator, jobnet("hello", script_job("a")), jobrun("hello", name="r1")).rc == 0
        wait_until(lambda: _status(emulator, "r1").get("phase"), timeout=15.0, what="r1 started")
        replicas[0].wait_for_log(r"JobRun default/r1 expanded")
        assert "JobRun default/r1" not in replicas[1].log_text()
        assert "is the leader now" not in replicas[1].log_text()
    finally:
        for replica in replicas:
            replica.stop()


def test_json_log_format(emulator: EmulatorServer, tmp_path: Path) -> None:
    process = OperatorProcess(emulator, tmp_path, log_format="json").start()
    try:
        assert kubectl_apply(emulator, jobnet("hello", script_job("a")), jobrun("hello", name="r1")).rc == 0
        process.wait_for_log(r"JobRun default/r1 expanded")
    finally:
        process.stop()
    records = [json.loads(line) for line in process.log_text().splitlines() if line.startswith("{")]
    assert any("JobRun default/r1 expanded" in record["message"] for record in records)
    assert all({"message", "timestamp", "severity"} <= set(record) for record in records)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 127.0.0.1 signed by it (what the chart or cert-manager provides)."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, request, cert = directory / "tls.key", directory / "tls.csr", directory / "tls.crt"
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca_cert,
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
            "-extfile",
            extensions,
        ],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return ca_cert, cert, key


def test_webhook_over_tls_with_the_ca_bundle_like_the_chart(emulator: EmulatorServer, tmp_path: Path) -> None:
    ca_cert, cert, key = _certificates(tmp_path)
    process = OperatorProcess(emulator, tmp_path, tls=(cert, key))
    register_webhooks(emulator, process.webhook_url, ca_bundle=ca_cert.read_bytes())
    process.start()
    try:
        cyclic = jobnet("cyclic", script_job("a", "b"), script_job("b", "a"))
        result = kubectl_apply(emulator, cyclic)
        assert result.rc == 1 and "dependency cycle" in result.stderr

        # An API server that does not trust the certificate never talks to the webhook.
        register_webhooks(emulator, process.webhook_url, ca_bundle=None)
        result = kubectl_apply(emulator, jobnet("fine", script_job("a")))
        assert result.rc == 1 and "certificate verify failed" in result.stderr
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--webhook-cert=/tmp/c.pem"], "--webhook-cert and --webhook-key go together"),
        (["--webhook-insecure", "--webhook-cert=/c", "--webhook-key=/k"], "--webhook-insecure cannot be combined"),
        (["--watch-server-timeout=60", "--watch-client-timeout=30"], "--watch-client-timeout must be longer"),
        (["--kubeconfig=/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig: no such file"),
        (["--connect-timeout=0"], "must be a positive number of seconds"),
        (["--lease-duration=10", "--renew-deadline=10"], "must be longer than the renew deadline"),
    ],
)
def test_operator_command_line_rejects_bad_arguments_clearly(arguments: list[str], complaint: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from jobnet.cli import main; sys.exit(main())", "operator", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert complaint in result.stderr
