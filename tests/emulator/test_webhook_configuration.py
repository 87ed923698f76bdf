"""``jobnet operator --webhook-configuration NAME``: the operator creates both webhook
configurations itself, pointed at the URL it serves, and the API server then judges and stamps
through them (no configuration is installed by the test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobnet.core.admission import ENDPOINTS
from jobnet.core.deletion import FINALIZER
from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess

pytestmark = pytest.mark.emulator
ADMISSION = "admissionregistration.k8s.io/v1"


def test_the_operator_configures_its_webhooks_and_they_judge_and_stamp(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    process = OperatorProcess(emulator, tmp_path, extra_args=("--webhook-configuration=jobnet-managed",)).start()
    try:
        for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            wait_until(lambda p=plural: emulator.get(ADMISSION, p, None, "jobnet-managed"), timeout=30, what=plural)
        urls = sorted(
            webhook["clientConfig"]["url"]
            for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
            for webhook in (emulator.get(ADMISSION, plural, None, "jobnet-managed") or {})["webhooks"]
        )
        assert urls == sorted(f"{process.webhook_url}{endpoint.path}" for endpoint in ENDPOINTS)

        refused = kubectl_apply(emulator, jobrun("absent", name="bad"))
        assert refused.rc != 0 and "JobRun 'bad' is invalid" in refused.stderr, refused.stderr
        assert kubectl_apply(emulator, jobnet("hello", script_job("a")), jobrun("hello", name="good")).rc == 0
        stored = emulator.get("jobnet.dev/v1alpha1", "jobruns", "default", "good") or {}
        assert FINALIZER in stored["metadata"].get("finalizers", [])  # put there by the mutating webhook
    finally:
        process.stop()
