"""E01: the VM goes down mid-job (every process dies, it "reboots").

The job goes Stuck (the agent is silent: HeartbeatLost, or HostDown); once the VM is back its
agent reports the job as interrupted by the reboot, and the job ends Failed with that reason:
automatically (stuckResolution Auto) or by a person's annotation (Manual). The script never runs
a second time.
"""

from __future__ import annotations

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

STUCK_WHILE_DOWN = ("HeartbeatLost", "HostDown")


def _crash_mid_job(scenario: Scenario, jobnet: str, resolution: str) -> tuple[NamespaceVM, str, str]:
    """Run ``work`` (then ``after-work``) on a VM and crash the VM while ``work`` runs; returns
    (vm, run, old boot id) once the job is Stuck."""
    vm = scenario.vm()
    work = scenario.marker_script(vm, "work", "sleep 60\n")
    after = scenario.marker_script(vm, "after-work")
    run = scenario.run_jobnet(
        jobnet,
        scenario.host(vm),
        [
            {"name": "work", "script": work},
            {"name": "after-work", "script": after, "after": ["work"]},
        ],
        stuckResolution=resolution,
    )
    scenario.wait_job_state(run, f"/{jobnet}/work", "Running", timeout=60)
    wait_until(lambda: scenario.script_runs(vm, "work") == 1, timeout=30, what="the script started on the VM")
    old_boot = vm.boot_id

    vm.crash()

    stuck = scenario.wait_job_state(run, f"/{jobnet}/work", "Stuck", timeout=60)
    assert stuck["reason"] in STUCK_WHILE_DOWN, stuck
    assert scenario.status(run)["phase"] == "Stuck"
    event = scenario.wait_event(run, "JobStuck", contains=f"/{jobnet}/work")
    assert event["type"] == "Warning" and stuck["reason"] in event["message"], event
    assert f"job=/{jobnet}/work" in scenario.operator_log()
    assert scenario.script_runs(vm, "work") == 1
    return vm, run, old_boot


def _assert_interrupted_by_reboot(scenario: Scenario, vm: NamespaceVM, run: str, jobnet: str, old_boot: str) -> None:
    assert vm.boot_id != old_boot
    scenario.wait_agent_log(vm, rf"/{jobnet}/work#1.*interrupted", timeout=30)
    status = scenario.wait_phase(run, "Failed", timeout=30)
    assert status["jobs"][f"/{jobnet}/after-work"]["state"] == "Skipped"
    assert scenario.script_runs(vm, "work") == 1, "the interrupted job must never be started again"
    assert scenario.script_runs(vm, "after-work") == 0
    scenario.wait_event(run, "RunFailed")


def test_E01_vm_crash_mid_job_stuck_then_auto_resolved_failed_host_rebooted(scenario: Scenario) -> None:
    vm, run, old_boot = _crash_mid_job(scenario, "e01a", "Auto")

    vm.start()

    job = scenario.wait_job_state(run, "/e01a/work", "Failed", timeout=60)
    assert job["reason"] == "HostRebooted", job
    resolved = scenario.wait_event(run, "StuckResolved", contains="/e01a/work")
    assert "interrupted (HostRebooted)" in resolved["message"], resolved
    # Hearing the rebooted agent is no proof the job still runs: it never went back to Running.
    resolutions = [e["message"] for e in scenario.events(run) if e.get("reason") == "StuckResolved"]
    assert len(resolutions) == 1, resolutions
    overrides = scenario.status(run).get("overrides") or []
    assert any(
        entry["path"] == "/e01a/work" and entry["toState"] == "Failed" and "auto" in (entry.get("by") or "")
        for entry in overrides
    ), overrides
    _assert_interrupted_by_reboot(scenario, vm, run, "e01a", old_boot)


def test_E01_vm_crash_mid_job_stuck_then_annotate_failed(scenario: Scenario) -> None:
    vm, run, old_boot = _crash_mid_job(scenario, "e01m", "Manual")

    vm.start()
    # Manual: the agent's answer is shown, but only a person settles the job.
    known = scenario.wait_event(run, "StuckOutcomeKnown", contains="/e01m/work", timeout=60)
    assert "interrupted" in known["message"] or "HostRebooted" in known["message"], known
    assert scenario.job(run, "/e01m/work")["state"] == "Stuck"
    scenario.annotate(run, "jobnet.dev/override", "/e01m/work=Failed")

    job = scenario.wait_job_state(run, "/e01m/work", "Failed", timeout=30)
    assert job["reason"] == "Overridden", job
    scenario.wait_event(run, "Overridden", contains="/e01m/work")
    _assert_interrupted_by_reboot(scenario, vm, run, "e01m", old_boot)
