"""G04: an override to Ready is applied, the removal of the annotation fails, the operator is
killed and restarted: the job re-runs exactly once (attempt 2, no attempt 3).

The override's identity (stamped by the webhook) is recorded in the status by the same write that
applies it, so the restarted operator finds the annotation still there, sees it applied, and
only removes it."""

from __future__ import annotations

import re

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import NAMESPACE, Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

OVERRIDE = "jobnet.dev/override"


def test_G04_override_applied_removal_fails_operator_restarted_reruns_once(scenario: Scenario) -> None:
    # The first attempt fails; the re-run (attempt 2) succeeds.
    vm, run = scenario.run_failed_export_chain('[ "$JOBNET_ATTEMPT" -ge 2 ] || exit 3\n')
    operator = scenario.operator
    assert operator is not None

    path = f"/apis/jobnet.dev/v1alpha1/namespaces/{NAMESPACE}/jobruns/{run}"
    with scenario.emulator.failing_annotation_patches(path) as refused:
        scenario.annotate(run, OVERRIDE, "/chain/export=Ready")
        identity = scenario.get_run(run)["metadata"]["annotations"]["jobnet.dev/override-id"]
        scenario.wait_operator_log(rf"run=default/{run} cannot remove the applied annotations", timeout=30)
        scenario.wait_agent_log(vm, r"/chain/export#2 exited with code 0", timeout=30)
        assert refused[0] >= 1
        assert scenario.status(run)["appliedSteering"]["override"] == identity
        operator.kill()
    assert OVERRIDE in scenario.get_run(run)["metadata"]["annotations"], "the removal was to fail"

    operator.start()
    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    export_job = status["jobs"]["/chain/export"]
    assert export_job["state"] == "Succeeded" and export_job["attempt"] == 2, export_job
    assert scenario.script_runs(vm, "export") == 2 and scenario.script_runs(vm, "report") == 1
    assert not re.search(r"/chain/export#3", scenario.agent_log(vm)), scenario.agent_log(vm)
    assert [o["toState"] for o in status["overrides"]] == ["Ready"], status["overrides"]
    wait_until(
        lambda: OVERRIDE not in (scenario.get_run(run)["metadata"].get("annotations") or {}),
        timeout=15,
        what="the applied override removed by the restarted operator",
    )
    # With the re-run this fast, the kill may fall between the final status write and this Event:
    # the restarted operator posts it then, from the status (named after it: once either way).
    scenario.wait_event(run, "RunSucceeded")
    reasons = scenario.event_reasons(run)
    assert reasons.count("Overridden") == 1 and "OverrideRejected" not in reasons, reasons
    assert reasons.count("RunSucceeded") == 1, reasons
