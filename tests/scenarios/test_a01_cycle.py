"""A01: a cycle among jobs inside one JobNet is rejected at admission, naming the cycle path."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess, admission_review

pytestmark = pytest.mark.emulator

CYCLE_PATHS = ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c")


def test_A01_cycle_rejected_names_cycle_path(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    cyclic = jobnet("cyclic", script_job("a", "c"), script_job("b", "a"), script_job("c", "b"))

    result = kubectl_apply(emulator, cyclic)

    assert result.rc == 1
    assert 'admission webhook "jobnets.validate.jobnet.dev" denied the request' in result.stderr
    assert any(path in result.stderr for path in CYCLE_PATHS), result.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "cyclic") is None

    # The same JobNet without the closing edge is admitted: the cycle was the only problem.
    acyclic = jobnet("cyclic", script_job("a"), script_job("b", "a"), script_job("c", "b"))
    assert kubectl_apply(emulator, acyclic).rc == 0


def test_A01_cycle_denied_by_admission_review_posted_to_webhook(operator: OperatorProcess) -> None:
    cyclic = jobnet("cyclic", script_job("a", "c"), script_job("b", "a"), script_job("c", "b"))

    response = operator.admission_review("/validate-jobnet", admission_review("CREATE", cyclic))

    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    message = response["status"]["message"]
    assert "dependency cycle" in message and any(path in message for path in CYCLE_PATHS), message
    assert "spec.jobs[" in message  # the field path of the offending dependency
