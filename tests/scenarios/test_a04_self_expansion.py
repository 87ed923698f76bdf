"""A04: a JobNet that expands itself is rejected, on create and on update."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import expand_job, jobnet, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess, admission_review

pytestmark = pytest.mark.emulator


def test_A04_self_expansion_rejected(emulator: EmulatorServer, operator: OperatorProcess) -> None:
    result = kubectl_apply(emulator, jobnet("narcissus", expand_job("again", "narcissus")))

    assert result.rc == 1
    assert "spec.jobs[0].expand" in result.stderr and "'narcissus' expands itself" in result.stderr
    assert emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "narcissus") is None

    # Adding the self-expansion to an existing, valid JobNet is rejected too; it stays as it was.
    assert kubectl_apply(emulator, jobnet("narcissus", script_job("work"))).rc == 0
    result = kubectl_apply(emulator, jobnet("narcissus", script_job("work"), expand_job("again", "narcissus", "work")))
    assert result.rc == 1 and "expands itself" in result.stderr
    stored = emulator.get("jobnet.dev/v1alpha1", "jobnets", "default", "narcissus")
    assert stored is not None and [job["name"] for job in stored["spec"]["jobs"]] == ["work"]

    old = jobnet("narcissus", script_job("work"))
    new = jobnet("narcissus", script_job("work"), expand_job("again", "narcissus"))
    response = operator.admission_review("/validate-jobnet", admission_review("UPDATE", new, old))
    assert response["allowed"] is False and "expands itself" in response["status"]["message"]
