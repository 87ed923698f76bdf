"""An override written for a state that is gone is not applied (issue 10 follow-up, found by the
chaos test, seed 3969049034): a person sees a job Stuck and writes ``=Ready@Stuck#1``; meanwhile
the operator resolves the job itself (Failed, from the agent's journal). Without the precondition
the override would re-run the job after its run had ended Failed.

* While the operator (its webhook) answers, admission refuses the stale override at once, naming
  the job's current state and attempt.
* Held back (written while the operator was stopped and its webhook did not answer, under
  ``failurePolicy: Ignore``), the operator checks it when it applies it: not applied, a Warning
  ``OverrideRejected`` says why, the annotation is removed and its identity recorded.
* An override whose precondition holds applies as any other (the job re-runs as attempt 2).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.operator_proc import register_webhooks
from tests.support.scenario import Scenario
from tests.support.stuck import after_the_cut, cut_until_stuck

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

OVERRIDE = "jobnet.dev/override"
#: Attempt 1 outlives the cut and fails on the VM while the link is down; attempt 2 succeeds.
WORK = after_the_cut('[ "$JOBNET_ATTEMPT" -ge 2 ] || exit 3\n')


def _resolved_failed_while_seen_stuck(scenario: Scenario, jobnet: str) -> tuple[Any, str, str]:
    """``work`` Stuck HeartbeatLost in attempt 1 (what the person sees), then resolved Failed by
    the operator from the agent's journal once the link is back. Returns the VM, run and path."""

    def while_cut(vm: Any, run: str, path: str, stuck: dict[str, Any]) -> None:
        assert stuck["attempt"] == 1, stuck
        scenario.wait_agent_log(vm, rf"{re.escape(path)}#1 exited with code 3", timeout=30)

    vm, run, path = cut_until_stuck(scenario, jobnet, WORK, "Auto", while_cut)
    scenario.wait_event(run, "StuckResolved", contains=path, timeout=60)
    status = scenario.wait_phase(run, "Failed", timeout=60)
    assert (status["jobs"][path]["state"], status["jobs"][path]["attempt"]) == ("Failed", 1), status["jobs"][path]
    return vm, run, path


def test_override_for_a_stuck_job_the_operator_resolved_is_not_applied(scenario: Scenario) -> None:
    vm, run, path = _resolved_failed_while_seen_stuck(scenario, "stale")
    stale = f"{path}=Ready@Stuck#1"
    now = f"{path} is Failed (attempt 1) now, not Stuck in attempt 1"

    # The webhook answers: refused at once, nothing stored.
    refused = scenario.kubectl("annotate", "--overwrite", "jobrun", run, f"{OVERRIDE}={stale}")
    assert refused.rc != 0 and now in refused.stderr, refused.stderr
    assert OVERRIDE not in (scenario.get_run(run)["metadata"].get("annotations") or {})

    # Held back: written while the operator is stopped and its webhook ignored (failurePolicy: Ignore).
    operator = scenario.operator
    assert operator is not None
    operator.stop()
    register_webhooks(scenario.emulator, operator.webhook_url, failure_policy="Ignore")
    scenario.annotate(run, OVERRIDE, stale)
    operator.start()

    event = scenario.wait_event(run, "OverrideRejected", contains=now, timeout=30)
    assert event["type"] == "Warning" and "as the override expects (@Stuck#1)" in event["message"], event
    scenario.wait_operator_log(rf"run=default/{run}.* OverrideRejected: .*{re.escape(now)}")
    scenario.wait_steering_removed(run)
    status = scenario.status(run)
    assert status["appliedSteering"]["override"].startswith("text-"), status["appliedSteering"]  # no webhook id
    job = status["jobs"][path]
    assert (job["state"], job["attempt"]) == ("Failed", 1), job
    assert status["phase"] == "Failed" and status["jobs"]["/stale/next"]["state"] == "Skipped"
    assert [o["by"] for o in status.get("overrides") or []] == ["jobnet-operator (auto)"], status.get("overrides")
    assert "Overridden" not in scenario.event_reasons(run)
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "next") == 0


def test_override_whose_precondition_holds_is_applied(scenario: Scenario) -> None:
    vm, run, path = _resolved_failed_while_seen_stuck(scenario, "fresh")
    # The person looks again: Failed in attempt 1; a re-run written for that state applies.
    scenario.annotate(run, OVERRIDE, f"{path}=Ready@Failed#1")
    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    job = status["jobs"][path]
    assert (job["state"], job["attempt"]) == ("Succeeded", 2), job
    rerun = status["overrides"][-1]
    assert (rerun["path"], rerun["fromState"], rerun["toState"]) == (path, "Failed", "Ready"), rerun
    assert "OverrideRejected" not in scenario.event_reasons(run)
    assert scenario.script_runs(vm, "work") == 2 and scenario.script_runs(vm, "next") == 1
    scenario.wait_steering_removed(run)
