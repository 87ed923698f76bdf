"""G05: a person writes a second override while the first is being applied and removed: both are
applied, each exactly once, in order; neither is lost.

The operator's removal of the first override is held in the API server until the person has
written the second one; the removal tests the annotation's value and identity first, so it is
refused instead of dropping the newer request, which is then applied and removed in turn."""

from __future__ import annotations

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import NAMESPACE, Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

OVERRIDE = "jobnet.dev/override"
#: fails its first attempt, succeeds when re-run
FAILS_ONCE = '[ "$JOBNET_ATTEMPT" -ge 2 ] || exit 3\n'


def test_G05_second_override_written_while_the_first_is_removed_is_applied_too(scenario: Scenario) -> None:
    vm = scenario.vm()
    extract = scenario.marker_script(vm, "extract", FAILS_ONCE)
    load = scenario.marker_script(vm, "load", FAILS_ONCE)
    run = scenario.run_jobnet("g05", scenario.host(vm), [
        {"name": "extract", "script": extract},
        {"name": "load", "script": load},
    ])  # fmt: skip
    scenario.wait_phase(run, "Failed", timeout=60)

    path = f"/apis/jobnet.dev/v1alpha1/namespaces/{NAMESPACE}/jobruns/{run}"
    with scenario.emulator.holding_annotation_patches(path) as waiting:
        scenario.annotate(run, OVERRIDE, "/g05/extract=Ready")
        first = scenario.get_run(run)["metadata"]["annotations"]["jobnet.dev/override-id"]
        wait_until(lambda: waiting[0] >= 1, timeout=30, what="the removal of the first override sent")
        assert scenario.status(run)["appliedSteering"]["override"] == first  # applied before its removal
        scenario.annotate(run, OVERRIDE, "/g05/load=Ready")
        second = scenario.get_run(run)["metadata"]["annotations"]["jobnet.dev/override-id"]
        assert second != first
    # The held removal is served now: its test of the first override's value fails.

    scenario.wait_operator_log(rf"run=default/{run} the applied jobnet.dev/override changed meanwhile", timeout=15)
    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    for name in ("extract", "load"):
        job = status["jobs"][f"/g05/{name}"]
        assert job["state"] == "Succeeded" and job["attempt"] == 2, (name, job)
        assert scenario.script_runs(vm, name) == 2, name
    assert [(o["path"], o["toState"]) for o in status["overrides"]] == [
        ("/g05/extract", "Ready"),
        ("/g05/load", "Ready"),
    ], status["overrides"]
    assert status["appliedSteering"]["override"] == second
    wait_until(
        lambda: OVERRIDE not in (scenario.get_run(run)["metadata"].get("annotations") or {}),
        timeout=15,
        what="the second override removed",
    )
    # One Event each (the order is status.overrides': Events are listed by their generated names).
    overridden = sorted(e["message"].split(":")[0] for e in scenario.events(run) if e.get("reason") == "Overridden")
    assert overridden == ["/g05/extract", "/g05/load"], overridden
    assert "OverrideRejected" not in scenario.event_reasons(run)
