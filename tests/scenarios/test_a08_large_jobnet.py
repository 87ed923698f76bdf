"""A08: a 10,000-job JobNet over nested expansions is admitted, and a JobRun of it is expanded and
run to its end (its speed is measured by benchmarks/bench_expansion.py, not here).

The run's only first job cannot get its credentials (the Secret does not exist), so it Fails
without any network traffic and the other 9,999 jobs are Skipped: every job of the expanded
graph passes through the status, which must stay under the 1 MiB object limit."""

from __future__ import annotations

import json
import re

import pytest

from jobnet.core.models import GROUP_VERSION
from jobnet.core.runstatus import decoded_status
from tests.support.emulator import EmulatorServer
from tests.support.kube import jobrun, kubectl_apply
from tests.support.large_jobnet import FIRST_JOB, JOB_COUNT, ROOT, large_jobnet_specs
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess

pytestmark = pytest.mark.emulator

MiB = 1024 * 1024


def test_A08_10000_job_jobnet_over_nested_expansions_is_admitted_expanded_and_run(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    specs = large_jobnet_specs()
    manifests = [
        {
            "apiVersion": GROUP_VERSION,
            "kind": "JobNet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
        for name, spec in reversed(specs.items())
    ]  # leaves first: each expands existing ones
    for manifest in manifests:
        result = kubectl_apply(emulator, manifest)
        assert result.rc == 0, result.stderr

    assert kubectl_apply(emulator, jobrun(ROOT, name="big"), verb="create").rc == 0

    def finished() -> dict | None:
        body = emulator.get(GROUP_VERSION, "jobruns", "default", "big")
        phase = ((body or {}).get("status") or {}).get("phase")
        return body if phase in ("Succeeded", "Failed", "Stopped", "Stuck") else None

    body = wait_until(finished, timeout=240, what="the 10,000-job run ends")
    status = body["status"]
    assert status["phase"] == "Failed", status.get("message")
    assert status["counts"] == {"Failed": 1, "Skipped": JOB_COUNT - 1}, status["counts"]
    assert status["progress"] == f"{JOB_COUNT}/{JOB_COUNT}"  # finished (here: Failed or Skipped) of all
    assert len(json.dumps(body).encode()) < MiB

    jobs = decoded_status(status)["jobs"]
    assert sum(1 for entry in jobs.values() if entry["state"] in ("Failed", "Skipped")) >= JOB_COUNT
    assert jobs[FIRST_JOB]["state"] == "Failed" and jobs[FIRST_JOB]["reason"] == "AuthenticationFailed"
    assert "vm1-ssh" in jobs[FIRST_JOB]["message"]
    assert re.search(rf"JobRun default/big expanded JobNet '{ROOT}' into {JOB_COUNT} jobs", operator.log_text())

    listed = emulator.kubectl("get", "jobruns", "big")
    assert listed.rc == 0 and re.search(rf"big\s+{ROOT}\s+Failed\s+{JOB_COUNT}/{JOB_COUNT}", listed.stdout), (
        listed.stdout
    )
