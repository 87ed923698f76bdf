"""A02: a dependency on a job name that does not exist is rejected, naming both jobs."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess, admission_review

pytestmark = pytest.mark.emulator


def test_A02_dangling_dependency_rejected(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    dangling = jobnet("dangling", script_job("extract"), script_job("transform", "extrakt"))

    result = kubectl_apply(emulator, dangling)

    assert result.rc == 1
    assert "denied the request" in result.stderr
    assert "spec.jobs[1].after[0]" in result.stderr
    assert "'transform'" in result.stderr and "'extrakt'" in result.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "dangling") is None

    review = admission_review("CREATE", dangling)
    response = operator.admission_review("/validate-jobnet", review)
    assert response["allowed"] is False
    assert response["uid"] == review["request"]["uid"]
    assert "'extrakt'" in response["status"]["message"]


def test_A02_every_problem_is_listed_not_just_the_first(operator: OperatorProcess) -> None:
    two_dangling = jobnet("dangling", script_job("a", "nope"), script_job("b", "missing"))

    response = operator.admission_review("/validate-jobnet", admission_review("CREATE", two_dangling))

    message = response["status"]["message"]
    assert "(2 problems)" in message
    assert "spec.jobs[0].after[0]" in message and "spec.jobs[1].after[0]" in message
