"""A03: expanding a root JobNet that does not exist is rejected; deleting a JobNet that others
expand is rejected; and if it disappears anyway (admission bypassed), a JobRun of the referring
JobNet fails to start with a clear reason and an Event, and the operator carries on."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import expand_job, jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess, admission_review, unregister_webhooks

pytestmark = pytest.mark.emulator
JOBRUNS = ("jobnet.dev/v1alpha1", "jobruns")


def test_A03_expansion_of_missing_jobnet_rejected(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    result = kubectl_apply(
        emulator, jobnet("outer", script_job("extract"), expand_job("load", "no-such-jobnet", "extract"))
    )

    assert result.rc == 1
    assert "spec.jobs[1].expand" in result.stderr
    assert "'load'" in result.stderr and "'no-such-jobnet'" in result.stderr

    response = operator.admission_review(
        "/validate-jobnet", admission_review("CREATE", jobnet("outer", expand_job("load", "no-such-jobnet")))
    )
    assert response["allowed"] is False and "'no-such-jobnet'" in response["status"]["message"]


def test_A03_deleting_an_expanded_jobnet_is_rejected_naming_referrers(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    assert kubectl_apply(emulator, jobnet("inner", script_job("step1"))).rc == 0
    assert kubectl_apply(emulator, jobnet("outer", expand_job("load", "inner"))).rc == 0

    result = emulator.kubectl("delete", "jobnets", "inner", "--wait=false")

    assert result.rc == 1
    assert 'admission webhook "jobnets.validate.jobnet.dev" denied the request' in result.stderr
    assert "JobNet/outer spec.jobs[0].expand" in result.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "inner") is not None


def test_A03_jobrun_fails_to_start_when_expanded_jobnet_was_deleted_later(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    assert kubectl_apply(emulator, jobnet("inner", script_job("step1"))).rc == 0
    assert (
        kubectl_apply(emulator, jobnet("outer", script_job("extract"), expand_job("load", "inner", "extract"))).rc == 0
    )
    # The race admission cannot stop: the webhook is not configured while "inner" is deleted
    # and the JobRun is created, so both writes get in.
    unregister_webhooks(emulator)
    assert emulator.kubectl("delete", "jn", "inner").rc == 0
    assert kubectl_apply(emulator, jobrun("outer", name="outer-1")).rc == 0

    status = wait_until(
        lambda: (
            (emulator.get(*JOBRUNS, "default", "outer-1") or {}).get("status", {}).get("phase")
            and emulator.get(*JOBRUNS, "default", "outer-1")["status"]
        ),
        timeout=15.0,
        what="the JobRun's status",
    )

    assert status["phase"] == "Failed"
    assert status["reason"] == "InvalidJobNet"
    assert "JobNet 'inner'" in status["message"] and "does not exist" in status["message"]
    assert "spec.jobs[1].expand" in status["message"]
    events = wait_until(
        lambda: [e for e in emulator.events_for("default", "outer-1") if e["reason"] == "InvalidJobNet"],
        timeout=15.0,
        what="an InvalidJobNet Event on the JobRun",
    )
    assert [e["type"] for e in events] == ["Warning"]
    assert "'inner'" in events[0]["message"]
    outer = wait_until(
        lambda: (
            emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "outer")["status"].get("valid") is False
            and emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "outer")["status"]
        ),
        timeout=15.0,
        what="JobNet outer marked invalid after 'inner' disappeared",
    )
    assert "'inner'" in outer["message"]
    listing = emulator.kubectl("get", "jobruns")
    assert listing.rc == 0 and "outer-1" in listing.stdout and "Failed" in listing.stdout
    operator.wait_for_log(r"JobRun default/outer-1 failed to start: .*'inner'")
    described = emulator.kubectl("describe", "jr", "outer-1")
    assert described.rc == 0 and "InvalidJobNet" in described.stdout.split("Events:")[-1]

    # Not a crash: the operator is alive and still starts valid runs.
    assert operator.process is not None and operator.process.poll() is None
    assert kubectl_apply(emulator, jobnet("inner", script_job("step1"))).rc == 0
    assert kubectl_apply(emulator, jobrun("outer", name="outer-2")).rc == 0
    operator.wait_for_log(r"JobRun default/outer-2 expanded JobNet 'outer' into 2 jobs")
    status = wait_until(
        lambda: (emulator.get(*JOBRUNS, "default", "outer-2") or {}).get("status"),
        timeout=15.0,
        what="outer-2's status",
    )
    assert status.get("reason") != "InvalidJobNet"
