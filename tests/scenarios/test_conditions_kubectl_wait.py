"""status.conditions with real kubectl: ``kubectl wait --for=condition=...`` on JobRuns and JobNets,
and the Started/Completed printer columns."""

from __future__ import annotations

import pytest

from tests.support.scenario import NAMESPACE, Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def wait_for(scenario: Scenario, what: str, condition: str) -> None:
    result = scenario.kubectl("wait", f"--for=condition={condition}", what, "--timeout=25s")
    assert result.rc == 0, (
        f"kubectl wait {what} {condition}: {result.stderr}\n{scenario.operator.log_tail() if scenario.operator else ''}"
    )
    assert "condition met" in result.stdout, result.stdout


def test_kubectl_wait_for_succeeded_and_ready(scenario: Scenario) -> None:
    vm = scenario.vm()
    scenario.start_operator("--agent-idle-timeout=0.5")  # the idle channel closes within the test
    ok = scenario.marker_script(vm, "ok")
    bad = scenario.marker_script(vm, "bad", "exit 3\n")
    good_run = scenario.run_jobnet("good", scenario.host(vm), [{"name": "a", "script": ok}])
    bad_run = scenario.run_jobnet("bad", scenario.host(vm), [{"name": "a", "script": bad}])

    wait_for(scenario, "jobnet/good", "Ready")
    wait_for(scenario, f"jobrun/{good_run}", "Succeeded")
    wait_for(scenario, f"jobrun/{bad_run}", "Succeeded=False")

    good = scenario.get_run(good_run)
    (succeeded,) = good["status"]["conditions"]
    assert succeeded["type"] == "Succeeded" and succeeded["status"] == "True"
    assert succeeded["reason"] == "Succeeded" and succeeded["message"] == "1/1 jobs finished (1 Succeeded)"
    assert succeeded["lastTransitionTime"] == good["status"]["finishedAt"]
    assert succeeded["observedGeneration"] == good["metadata"]["generation"] == good["status"]["observedGeneration"]
    (failed,) = scenario.get_run(bad_run)["status"]["conditions"]
    assert (failed["status"], failed["reason"]) == ("False", "Failed")

    # Both runs ended: their host channel, idle, is closed routinely (INFO, never a WARNING).
    scenario.wait_operator_log(r"\[INFO *\] agent channel to .* closed by the operator")
    closes = [line for line in scenario.operator_log().splitlines() if "closed by the operator" in line]
    assert closes and not [line for line in closes if "WARNING" in line], closes

    table = scenario.get_runs_table()
    header = table.splitlines()[0].split()
    assert header[:6] == ["NAME", "JOBNET", "PHASE", "PROGRESS", "STARTED", "COMPLETED"], table


def test_kubectl_wait_sees_an_invalid_jobnet_and_the_run_it_fails(scenario: Scenario) -> None:
    scenario.start_operator()
    # Written past admission (as while the webhook is down with failurePolicy Ignore): the
    # operator still describes the JobNet, and fails a run of it.
    for obj in (
        {"kind": "JobNet", "metadata": {"name": "outer"}, "spec": {"jobs": [{"name": "x", "expand": "missing"}]}},
        {"kind": "JobRun", "metadata": {"name": "outer-1"}, "spec": {"jobNetRef": "outer"}},
    ):
        scenario.emulator.put(
            {"apiVersion": "jobnet.dev/v1alpha1", **obj, "metadata": {**obj["metadata"], "namespace": NAMESPACE}}
        )

    wait_for(scenario, "jobnet/outer", "Ready=False")
    wait_for(scenario, "jobnet/outer", "Valid=False")
    wait_for(scenario, "jobrun/outer-1", "Succeeded=False")
    reasons = scenario.kubectl("get", "jobnet,jobrun", "-o", "jsonpath={.items[*].status.conditions[0].reason}")
    assert reasons.stdout.split() == ["InvalidJobNet", "InvalidJobNet"], reasons
    (failed,) = scenario.get_run("outer-1")["status"]["conditions"]
    assert "'missing'" in failed["message"], failed
