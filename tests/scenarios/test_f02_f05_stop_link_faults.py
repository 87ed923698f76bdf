"""F02-F05: a force stop meets a broken link between the operator and the VM.

* F02: the link is cut before the kill request reaches the agent: Stuck StopOutcomeUnknown, the
  agent never saw a kill and the script still runs; once the link is back (restored after the
  connection the kill was written on is gone: before, TCP would deliver it, which is F03), stopping
  again delivers the kill: Stopped.
* F03: only the agent's answers are lost (``vm.drop("out")``): the kill reaches the agent and the
  job dies, but the operator cannot know: Stuck until known; resolved to Stopped when the link
  returns (Auto), or a person annotates it Stopped (Manual). The agent holds the kill it received
  (pause point ``serve:kill-before-request``) until the VM's packets out are dropped: dropping
  them first would race the kill, since the operator's TCP stops sending new data once its
  unanswered keepalives time out, so a kill sent late (a loaded machine) would never leave.
* F04: as F03, restored while the delivery is still being retried: Stopped, never Stuck.
* F05: as F03, past every retry: Stuck; the agent log shows what it could not report; Auto
  resolves it when the link returns, or a person annotates it Stopped.

The script is killed exactly once and never started again.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.agentenv import set_agent_env
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, process_gone, wait_connections_gone

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

STOP = "jobnet.dev/stop"
#: The file that releases a kill the agent holds (see the module docstring).
HOLD = "hold-kill"
OVERRIDE = "jobnet.dev/override"


class StopFault:
    """One JobNet ``<name>`` with a long job ``work`` (and ``after-work``) running on its own VM."""

    def __init__(
        self,
        scenario: Scenario,
        name: str,
        resolution: str = "Auto",
        retry: dict[str, Any] | None = None,
        hold_kills: bool = False,
    ) -> None:
        """``hold_kills``: the agent holds every kill it receives until released (see
        :meth:`stop_with_the_answer_lost`)."""
        self.scenario = scenario
        self.vm: NamespaceVM = scenario.vm()
        if hold_kills:
            set_agent_env(self.vm, "JOBNET_AGENT_PAUSE_AT", f"serve:kill-before-request=@{self.vm.home / HOLD}")
        self.path = f"/{name}/work"
        spec: dict[str, Any] = {"stuckResolution": resolution}
        if retry is not None:
            spec["retry"] = retry
        self.run = scenario.run_long_work(self.vm, name, followers=("after-work",), **spec)
        marker = (self.vm.home / "markers" / "work").read_text()
        self.pid = int(re.search(r" pid (\d+)", marker).group(1))  # type: ignore[union-attr]
        assert not process_gone(self.pid)

    def stop(self) -> None:
        self.scenario.annotate(self.run, STOP, self.path)

    def stop_with_the_answer_lost(self) -> None:
        """Stop the job; its kill reaches the agent, which holds it until the VM's packets out are
        dropped, then carries it out: neither its answer nor the job's end reaches the operator."""
        self.stop()
        wait_until(
            (self.vm.home / f"{HOLD}.reached").exists,
            timeout=30,
            what=f"the kill of {self.path} reached the agent, which holds it",
            describe=lambda: f"agent log:\n{self.scenario.agent_log(self.vm)[-3000:]}",
        )
        self.vm.drop("out")
        self.vm.put_file(HOLD, "")

    def kill_lines(self) -> list[str]:
        return [line for line in self.scenario.agent_log(self.vm).splitlines() if f"{self.path}#1 kill" in line]

    def wait_killed_on_the_vm(self) -> None:
        wait_until(
            lambda: any("kill requested (stop" in line for line in self.kill_lines()),
            timeout=30,
            what=f"the agent log says {self.path} was killed",
            describe=lambda: (
                f"agent log:\n{self.scenario.agent_log(self.vm)[-3000:]}\n{self.scenario.describe(self.run)}"
            ),
        )
        wait_until(lambda: process_gone(self.pid), timeout=15, what="the agent killed the script")

    def wait_stuck(self, *reasons: str) -> dict[str, Any]:
        job = self.scenario.wait_job_state(self.run, self.path, "Stuck", timeout=60)
        assert job["reason"] in reasons, job
        event = self.scenario.wait_event(self.run, "JobStuck", contains=self.path)
        assert job["reason"] in event["message"] and event["type"] == "Warning", event
        return job

    def channels_opened(self) -> int:
        return len(re.findall(r"agent channel to \S+ open", self.scenario.operator_log()))

    def wait_reconnected(self, opened_before: int) -> None:
        wait_until(
            lambda: self.channels_opened() > opened_before,
            timeout=60,
            what="the operator reconnected to the agent",
            describe=lambda: self.scenario.describe(self.run),
        )

    def wait_outcome_known(self) -> None:
        """Manual: the agent's final answer (killed) is shown on the Stuck job, which waits.

        A ``running`` record with the kill delivered may be shown first; the final one follows."""
        self.scenario.wait_event(
            self.run, "StuckOutcomeKnown", contains=f"{self.path}: the agent reports the job killed", timeout=60
        )
        assert self.scenario.job(self.run, self.path)["state"] == "Stuck"

    def assert_stopped(self, reason: str = "StopRequested") -> None:
        status = self.scenario.wait_phase(self.run, "Stopped", timeout=60)
        job = status["jobs"][self.path]
        assert job["state"] == "Stopped" and job["reason"] == reason, job
        assert status["jobs"][self.path.replace("/work", "/after-work")]["state"] == "Skipped"
        assert process_gone(self.pid)
        assert self.scenario.script_runs(self.vm, "work") == 1, "the stopped script must never start again"
        assert self.scenario.script_runs(self.vm, "after-work") == 0
        self.scenario.wait_event(self.run, "RunStopped")


def test_F02_cut_before_the_kill_reached_the_agent_stuck_then_stop_again_stopped(scenario: Scenario) -> None:
    fault = StopFault(scenario, "f02")
    log_before_cut = len(scenario.operator_log())
    fault.vm.cut()
    fault.stop()

    # StopOutcomeUnknown, or HostDown if the operator gave the link up before the stop came
    stuck = fault.wait_stuck("StopOutcomeUnknown", "HostDown")

    assert fault.kill_lines() == [], "the agent must never have seen the kill"
    assert not process_gone(fault.pid), "the script still runs"
    # Restore only once the connection the kill was written to is gone. The job goes Stuck when
    # the kill's answer is overdue, which can be before the kernel gives the connection up (its
    # unanswered data older than the dead-connection timeout) or the operator resets it (heartbeat
    # lost); restored before that, TCP still delivers the kill, which is the other scenario (F03:
    # the agent reports it and the job is resolved). The operator gave the channel up (a new
    # connection failed, logged after the cut: the setup's own lines must not count), and the
    # kernel keeps nothing that could still reach the VM.
    scenario.wait_operator_log(r"host=\S+ agent unreachable", timeout=60, since=log_before_cut)
    wait_connections_gone(fault.vm)
    opened = fault.channels_opened()
    fault.vm.restore()
    fault.wait_reconnected(opened)
    # The agent now answers, but it never got the kill: the job waits for the person to stop again.
    assert scenario.job(fault.run, fault.path)["state"] == "Stuck", scenario.job(fault.run, fault.path)
    assert fault.kill_lines() == [] and not process_gone(fault.pid)
    assert "stop" in stuck["message"].lower() or "kill" in stuck["message"].lower(), stuck

    fault.stop()

    fault.assert_stopped()
    fault.wait_killed_on_the_vm()
    assert len([line for line in fault.kill_lines() if "kill requested" in line]) == 1, fault.kill_lines()


@pytest.mark.parametrize("resolution", ["Auto", "Manual"])
def test_F03_cut_after_the_kill_reached_the_agent_stuck_until_known(scenario: Scenario, resolution: str) -> None:
    fault = StopFault(scenario, f"f03{resolution[0].lower()}", resolution, hold_kills=True)
    fault.stop_with_the_answer_lost()

    fault.wait_killed_on_the_vm()
    fault.wait_stuck("StopOutcomeUnknown")
    fault.vm.undrop("out")

    if resolution == "Auto":
        resolved = scenario.wait_event(fault.run, "StuckResolved", contains=fault.path, timeout=60)
        assert "kill" in resolved["message"], resolved
        fault.assert_stopped()
    else:
        fault.wait_outcome_known()
        scenario.annotate(fault.run, OVERRIDE, f"{fault.path}=Stopped")
        fault.assert_stopped(reason="Overridden")
        scenario.wait_event(fault.run, "Overridden", contains=fault.path)


def test_F04_link_down_after_the_kill_restored_within_retries_stopped(scenario: Scenario) -> None:
    fault = StopFault(scenario, "f04", retry={"dispatchAttempts": 8, "intervalSeconds": 1}, hold_kills=True)
    fault.stop_with_the_answer_lost()

    fault.wait_killed_on_the_vm()
    scenario.wait_operator_log(rf"job={re.escape(fault.path)} .*kill outcome unknown", timeout=30)
    fault.vm.undrop("out")

    fault.assert_stopped()
    assert "JobStuck" not in scenario.event_reasons(fault.run), scenario.describe(fault.run)
    assert len([line for line in fault.kill_lines() if "kill requested" in line]) == 1, fault.kill_lines()


@pytest.mark.parametrize("resolution", ["Auto", "Manual"])
def test_F05_link_down_after_the_kill_past_every_retry(scenario: Scenario, resolution: str) -> None:
    fault = StopFault(
        scenario,
        f"f05{resolution[0].lower()}",
        resolution,
        retry={"dispatchAttempts": 2, "intervalSeconds": 0.5},
        hold_kills=True,
    )
    fault.stop_with_the_answer_lost()

    fault.wait_killed_on_the_vm()
    fault.vm.cut()  # and then the link goes down altogether, past every retry
    fault.wait_stuck("StopOutcomeUnknown", "HostDown")
    assert scenario.job(fault.run, fault.path)["killReason"] == "stop"
    fault.vm.undrop("out")
    fault.vm.restore()

    if resolution == "Auto":
        resolved = scenario.wait_event(fault.run, "StuckResolved", contains=fault.path, timeout=60)
        assert "kill" in resolved["message"], resolved
        fault.assert_stopped()
        return
    fault.wait_outcome_known()
    # The connection that carried the kill dies once the link is back (the operator had given it
    # up); its agent says the result it sent was never acknowledged. Under Manual nobody
    # acknowledges it before the person decides, so the line is there whatever the timing.
    scenario.wait_agent_log(
        fault.vm,
        rf"{re.escape(fault.path)}#1 could not report: .* before the operator acknowledged the result \(stopped\)",
        timeout=30,
    )
    scenario.annotate(fault.run, OVERRIDE, f"{fault.path}=Stopped")
    fault.assert_stopped(reason="Overridden")
