"""A05: mutual expansion (X -> Y -> X) and longer chains (X -> Y -> Z -> X) are rejected when
the closing edge is added, whichever JobNet the closing write is on."""

from __future__ import annotations

import pytest

from tests.support.emulator import EmulatorServer
from tests.support.kube import expand_job, jobnet, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess, admission_review

pytestmark = pytest.mark.emulator
JOBNETS = ("jobnet.dev/v1alpha1", "jobnets")


def test_A05_mutual_expansion_rejected_when_closing_edge_added(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    assert kubectl_apply(emulator, jobnet("ring-y", script_job("work"))).rc == 0
    assert kubectl_apply(emulator, jobnet("ring-x", expand_job("to-y", "ring-y"))).rc == 0

    result = kubectl_apply(emulator, jobnet("ring-y", script_job("work"), expand_job("to-x", "ring-x")))

    assert result.rc == 1
    assert "expansion cycle" in result.stderr
    assert "ring-y -> ring-x -> ring-y" in result.stderr or "ring-x -> ring-y -> ring-x" in result.stderr
    assert "to-x" not in str(emulator.get(*JOBNETS, "default", "ring-y"))


def test_A05_three_jobnet_expansion_cycle_rejected_on_update(
    emulator: EmulatorServer, operator: OperatorProcess
) -> None:
    assert kubectl_apply(emulator, jobnet("ring-z", script_job("work"))).rc == 0
    assert kubectl_apply(emulator, jobnet("ring-y", expand_job("to-z", "ring-z"))).rc == 0
    assert kubectl_apply(emulator, jobnet("ring-x", expand_job("to-y", "ring-y"))).rc == 0
    generation = emulator.get(*JOBNETS, "default", "ring-z")["metadata"]["generation"]
    ring_x = wait_until(
        lambda: emulator.get(*JOBNETS, "default", "ring-x").get("status"), timeout=15.0, what="ring-x's status"
    )
    # the operator sees the chain expand cleanly
    assert {key: ring_x[key] for key in ("valid", "jobCount", "observedGeneration")} == {
        "valid": True,
        "jobCount": 1,
        "observedGeneration": 1,
    }
    assert [(c["type"], c["status"]) for c in ring_x["conditions"]] == [("Valid", "True"), ("Ready", "True")]

    result = kubectl_apply(emulator, jobnet("ring-z", script_job("work"), expand_job("to-x", "ring-x")))

    assert result.rc == 1
    assert "spec.jobs[1].expand" in result.stderr
    assert "ring-z -> ring-x -> ring-y -> ring-z" in result.stderr, result.stderr
    assert emulator.get(*JOBNETS, "default", "ring-z")["metadata"]["generation"] == generation

    old = jobnet("ring-z", script_job("work"))
    new = jobnet("ring-z", script_job("work"), expand_job("to-x", "ring-x"))
    response = operator.admission_review("/validate-jobnet", admission_review("UPDATE", new, old))
    assert response["allowed"] is False and "expansion cycle" in response["status"]["message"]
