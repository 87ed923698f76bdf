"""F10: a stop while the VM is down: the job is Stuck (HostDown); a person settles it as Failed.

The VM "loses power" (every process dies, sshd included; the boot id changes) and its link goes
down, so nothing answers at all. The operator first loses the agent channel (the VM's kernel
closed the TCP connection as the processes died) and fails to reconnect; only then is the stop
annotated, so the kill certainly cannot be delivered: the job goes Stuck with reason HostDown,
never Stopped (nobody knows whether the script still runs) and never Failed on a guess.
"""

from __future__ import annotations

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_F10_stop_while_vm_down_is_stuck_host_down_then_annotate_failed(scenario: Scenario) -> None:
    vm = scenario.vm()
    run = scenario.run_long_work(vm, "f10")

    log_before_crash = len(scenario.operator_log())
    vm.crash()
    vm.cut()
    # the operator knows the VM is gone (a line from before the crash would not say so)
    scenario.wait_operator_log(r"host=\S+ agent unreachable: ", timeout=30, since=log_before_crash)
    scenario.annotate(run, "jobnet.dev/stop", "/f10/work")

    scenario.wait_job_state(run, "/f10/work", "Stuck", timeout=60)
    stuck = scenario.wait_event(run, "JobStuck", contains="HostDown", timeout=30)
    assert stuck["type"] == "Warning" and "/f10/work" in stuck["message"], stuck
    job = scenario.job(run, "/f10/work")
    assert job["reason"] == "HostDown", job
    assert "cannot reach" in job["message"] and "to stop the job" in job["message"], job
    # The operator log shows the SSH connect failure of the kill.
    scenario.wait_operator_log(r"job=/f10/work .*cannot reach the agent for kill: ")
    assert scenario.status(run)["phase"] == "Stuck"
    assert scenario.status(run)["jobs"]["/f10/after"]["state"] == "Pending"

    scenario.annotate(run, "jobnet.dev/override", "/f10/work=Failed")

    status = scenario.wait_phase(run, "Failed", timeout=60)
    job = status["jobs"]["/f10/work"]
    assert job["state"] == "Failed" and job["reason"] == "Overridden", job
    assert status["jobs"]["/f10/after"]["state"] == "Skipped", status["jobs"]["/f10/after"]
    assert [(o["fromState"], o["toState"]) for o in status.get("overrides") or [] if o["path"] == "/f10/work"] == [
        ("Stuck", "Failed")
    ], status.get("overrides")
    scenario.wait_event(run, "Overridden", contains="/f10/work")
    scenario.wait_steering_removed(run, ("jobnet.dev/override", "jobnet.dev/stop"))
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "after") == 0


def test_F10_vm_back_after_the_stop_stuck_job_auto_resolved_failed_host_rebooted(scenario: Scenario) -> None:
    """The automatic path: the VM boots again; its agent knows the job was interrupted by the
    reboot (boot id changed), so the Stuck job is resolved to Failed (HostRebooted), recorded as
    an automatic settlement: never Stopped or Succeeded on a guess."""
    vm = scenario.vm()
    run = scenario.run_long_work(vm, "f10", followers=())

    log_before_crash = len(scenario.operator_log())
    vm.crash()
    vm.cut()
    scenario.wait_operator_log(r"host=\S+ agent unreachable: ", timeout=30, since=log_before_crash)
    scenario.annotate(run, "jobnet.dev/stop", "/f10/work")
    scenario.wait_job_state(run, "/f10/work", "Stuck", timeout=60)
    assert scenario.job(run, "/f10/work")["reason"] == "HostDown"

    vm.restore()
    vm.start()

    status = scenario.wait_phase(run, "Failed", timeout=60)
    job = status["jobs"]["/f10/work"]
    assert job["state"] == "Failed" and job["reason"] == "HostRebooted", job
    assert "resolved automatically" in job["message"], job
    assert [(o["fromState"], o["toState"]) for o in status.get("overrides") or [] if o["path"] == "/f10/work"] == [
        ("Stuck", "Failed")
    ], status.get("overrides")
    scenario.wait_event(run, "StuckResolved", contains="/f10/work")
    assert scenario.script_runs(vm, "work") == 1
