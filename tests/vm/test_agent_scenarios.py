"""Agent-level halves of the failure scenarios (shared/scenarios.md), over real SSH into a VM.

The operator-level scenario tests (tests/scenarios/) build on these facts: what the agent's
journal and log say after each fault."""

from __future__ import annotations

import pytest

from jobnet.core.agentproto import KillRequest, KillResult, LaunchRequest, LaunchResult
from jobnet.ssh import ConnectionLost, ResponseTimeout
from tests.support.netutil import wait_until
from tests.support.vm import NamespaceVM, process_gone
from tests.vm.harness import AgentHarness, new_key


def _log_lines(vm: NamespaceVM, key: object) -> list[str]:
    return [line for line in vm.read_agent_log().splitlines() if str(key) in line]


def test_B04_agent_missing_script_is_failed_to_start_and_logged(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key("/b04/job")
    agent.launch(key, "/nonexistent/b04.sh")

    record = agent.wait_state(key, "failedToStart")

    assert record.reason == "ScriptNotFound" and record.pid is None
    assert any("ScriptNotFound" in line or "not found" in line.lower() for line in _log_lines(vm, key)), (
        vm.read_agent_log()
    )


def test_B05_agent_non_executable_script_is_permission_denied_and_logged(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key("/b05/job")
    agent.launch(key, agent.script("b05.sh", "echo never\n", mode=0o644))

    record = agent.wait_state(key, "failedToStart")

    assert record.reason == "PermissionDenied"
    assert any("PermissionDenied" in line or "permission denied" in line.lower() for line in _log_lines(vm, key))


def test_C05_agent_repeated_launch_after_a_lost_response_is_deduplicated(agent: AgentHarness, vm: NamespaceVM) -> None:
    script = agent.script("c05.sh", 'echo ran >> "$HOME/c05.txt"\n')
    key = new_key("/c05/job")

    vm.drop("out")  # the launch request reaches the agent, its response never comes back
    with pytest.raises(ResponseTimeout, match="may or may not have been carried out"):
        agent.chan.call(LaunchRequest(key=key, script=script), LaunchResult, timeout=1.0)
    wait_until(lambda: (vm.home / "c05.txt").exists(), timeout=5, what="the job ran despite the lost response")
    vm.undrop("out")
    agent.reconnect()
    retried = agent.launch(key, script)

    assert retried.deduplicated
    assert agent.wait_state(key, "exited").exit_code == 0
    assert (vm.home / "c05.txt").read_text() == "ran\n", "the script ran exactly once"
    assert any("launch ignored: already" in line for line in _log_lines(vm, key))


def test_E01_agent_vm_crash_mid_job_is_reported_interrupted_after_reboot(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key("/e01/job")
    started = agent.launch(key, agent.script("e01.sh", "sleep 30\n"))
    agent.wait_state(key, "running")
    old_boot = vm.boot_id

    new_boot = vm.crash()
    wait_until(lambda: agent.chan.closed, timeout=10, what="the channel notices the VM died")
    vm.start()
    agent.reconnect()
    record = agent.wait_state(key, "interrupted")

    assert new_boot != old_boot and agent.chan.hello_result.boot_id == new_boot  # type: ignore[union-attr]
    assert record.reason == "HostRebooted" and record.exit_code is None
    assert process_gone(started.record.pid)
    assert any("interrupted" in line.lower() for line in _log_lines(vm, key))


def test_E02_agent_supervisor_killed_mid_job_is_adopted_then_lost_never_a_success(
    agent: AgentHarness, vm: NamespaceVM
) -> None:
    """docs/agent-protocol.md: a running job whose supervisor died stays ``running`` and watched
    until its process disappears, then ``lost``, with the exit code the job's wrapper recorded."""
    key = new_key("/e02/job")
    launched = agent.launch(key, agent.script("e02.sh", "sleep 3; exit 0\n"))
    agent.wait_state(key, "running")

    killed = vm.kill_agent(("supervise", "serve"))
    wait_until(lambda: agent.chan.closed, timeout=5, what="the channel notices serve died")
    agent.reconnect()
    wait_until(
        lambda: any(f"adopted pid {launched.record.pid}" in line for line in _log_lines(vm, key)),
        timeout=5,
        what="the agent adopted the running job",
    )
    while_alive = agent.get(key)
    record = agent.wait_state(key, "exited", "lost", timeout=15)

    assert killed
    assert while_alive.state == "running"
    # the wrapper's recorded code travels with the lost record (stuckResolution Auto settles from it)
    assert (record.state, record.reason, record.exit_code) == ("lost", "SupervisorLost", 0), record
    assert "supervisor died mid-run" in (record.message or "")


def test_E02_agent_supervisor_and_job_killed_is_lost_never_a_success(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key("/e02/gone")
    launched = agent.launch(key, agent.script("e02.sh", "sleep 30\n"))
    agent.wait_state(key, "running")

    vm.kill_agent(("supervise", "serve"))
    vm.exec(f"kill -9 -{launched.record.pgid}")
    agent.reconnect()
    record = agent.wait_state(key, "lost", "exited", timeout=15)

    # the wrapper's recorded code travels with the lost record (stuckResolution Auto settles from it)
    assert (record.state, record.reason, record.exit_code) == ("lost", "SupervisorLost", 0), record
    wait_until(
        lambda: any("lost" in line for line in _log_lines(vm, key)), timeout=5, what="agent log says the job is lost"
    )


def test_E03_agent_reporter_dies_before_reporting_the_exit_result_not_lost(
    agent: AgentHarness, vm: NamespaceVM
) -> None:
    """The process that reports to the operator (serve) dies while the job runs; the job exits 0
    with nobody to report to; after reconnecting, the resumed watch delivers the result."""
    agent.chan.watch(0)
    key = new_key("/e03/job")
    agent.launch(key, agent.script("e03.sh", 'sleep 0.5; echo ran >> "$HOME/e03.txt"\nexit 0\n'))
    wait_until(
        lambda: any(r.key == key and r.state == "running" for r in list(agent.events.queue)),
        timeout=5,
        what="running event",
    )
    resume_from = agent.chan.last_event_seq

    assert vm.kill_agent(("serve",))
    wait_until(lambda: agent.chan.closed, timeout=5, what="the channel notices serve died")
    wait_until(lambda: (vm.home / "e03.txt").exists(), timeout=5, what="the job finished unobserved")
    agent.reconnect()
    agent.chan.watch(resume_from)
    ended = wait_until(
        lambda: [r for r in list(agent.events.queue) if r.key == key and r.terminal],
        timeout=5,
        what="the exit reported after reconnecting",
    )

    assert [(r.state, r.exit_code) for r in ended] == [("exited", 0)]
    assert agent.get(key).exit_code == 0
    assert (vm.home / "e03.txt").read_text() == "ran\n"


def test_E03_agent_supervisor_dies_after_the_exit_before_recording_it_result_recovered(
    agent: AgentHarness, vm: NamespaceVM
) -> None:
    """The supervisor is killed right after the job exited, before it journalled the end: the
    agent recovers the exit code the job's wrapper wrote, and says so in its log."""
    agent.reconnect(env={"JOBNET_AGENT_CRASH_AT": "supervise:after-exit"})
    key = new_key("/e03/recovered")
    agent.launch(key, agent.script("e03.sh", 'echo ran >> "$HOME/e03.txt"\nexit 0\n'))

    record = agent.wait_state(key, "exited", "lost", timeout=15)

    assert (record.state, record.exit_code) == ("exited", 0), record
    assert (vm.home / "e03.txt").read_text() == "ran\n"
    wait_until(
        lambda: any("result recovered" in line for line in _log_lines(vm, key)),
        timeout=5,
        what="agent log says the result was recovered",
    )


def test_F06_agent_kill_after_exit_0_is_ignored_and_reports_the_exit(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key("/f06/job")
    agent.launch(key, agent.script("f06.sh", "exit 0\n"))
    agent.wait_state(key, "exited")

    result = agent.kill(key)

    assert result.already_ended
    assert result.record.state == "exited" and result.record.exit_code == 0
    assert any("kill ignored: already exited with code 0" in line for line in _log_lines(vm, key))


def test_F12_agent_kill_repeated_after_a_lost_response_is_ignored_already_stopped(
    agent: AgentHarness, vm: NamespaceVM
) -> None:
    key = new_key("/f12/job")
    launched = agent.launch(key, agent.script("f12.sh", "sleep 30\n"))
    agent.wait_state(key, "running")

    vm.drop("out")  # the kill reaches the agent, its response is lost
    with pytest.raises(ConnectionLost):
        agent.chan.call(KillRequest(key=key, grace_seconds=0.3), KillResult, timeout=1.0)
    wait_until(lambda: process_gone(launched.record.pid), timeout=5, what="the agent killed the job")
    vm.undrop("out")
    agent.reconnect()
    agent.wait_state(key, "killed")
    repeated = agent.kill(key, grace_seconds=0.3)

    assert repeated.already_ended or repeated.deduplicated
    assert repeated.record.state == "killed"
    assert any("kill ignored: already stopped" in line for line in _log_lines(vm, key)), vm.read_agent_log()
