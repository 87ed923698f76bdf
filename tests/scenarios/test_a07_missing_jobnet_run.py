"""A07: a JobRun that references a missing JobNet is rejected at admission."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess, admission_review

pytestmark = pytest.mark.emulator


def test_A07_jobrun_of_missing_jobnet_rejected(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    result = kubectl_apply(emulator, jobrun("ghost"), verb="create")

    assert result.rc == 1
    assert 'admission webhook "jobruns.validate.jobnet.dev" denied the request' in result.stderr
    assert "spec.jobNetRef" in result.stderr and "JobNet 'ghost' does not exist" in result.stderr
    assert emulator.list_objects("jobnet.dev/v1alpha1", "jobruns") == []

    response = operator.admission_review("/validate-jobrun", admission_review("CREATE", jobrun("ghost", name="r1")))
    assert response["allowed"] is False and "'ghost'" in response["status"]["message"]

    # Once the JobNet exists the same JobRun is admitted and started.
    assert kubectl_apply(emulator, jobnet("ghost", script_job("boo"))).rc == 0
    assert kubectl_apply(emulator, jobrun("ghost"), verb="create").rc == 0
    assert len(emulator.list_objects("jobnet.dev/v1alpha1", "jobruns")) == 1
