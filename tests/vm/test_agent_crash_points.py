"""kill -9 of an agent process at each step of a launch, over SSH: the journal stays consistent,
a re-sent launch (same key, as the operator does when the outcome is unknown) never runs the
script twice, and a success is never reported for a script that did not run."""

from __future__ import annotations

import pytest

from jobnet.core.agentproto import ListRequest, ListResult
from jobnet.ssh import SshError
from jobnet_agent.jobdir import JobDir
from tests.support.netutil import wait_until
from tests.support.vm import NamespaceVM, process_gone
from tests.vm.harness import AgentHarness, new_key

#: crash point -> the end the journal must show (the crash really happened: without it, "exited").
CRASH_POINTS = {
    "serve:launch-after-accept": "failedToStart",  # accepted, no supervisor yet: it never ran
    "serve:journal-after-record": "failedToStart",
    "serve:journal-before-group-sync": "failedToStart",  # claimed, not yet fsynced nor handed over
    # Before the go line (its running record durable first), the wrapper runs nothing: known never run.
    "supervise:after-start": "failedToStart",
    "supervise:journal-after-record:running": "failedToStart",
    "supervise:journal-before-group-sync": "failedToStart",
    "supervise:before-start": "failedToStart",
    "supervise:after-running": "lost",  # ran unsupervised for a while: never guessed
    "supervise:after-exit": "exited",  # recovered from the wrapper's exit code
    "supervise:journal-after-record:exited": "exited",  # the record was written; its event is replayed
}


def _job_supervisors_gone(vm: NamespaceVM) -> bool:
    """Every supervisor that took a job is dead (an idle standby supervisor does not count)."""
    found = [JobDir.supervisor_pid_of(p.read_bytes()) for p in vm.state_dir.glob("jobs/*/*/supervisor.lock")]
    pids = [pid for pid in found if pid is not None]
    return bool(pids) and all(process_gone(pid) for pid in pids)


@pytest.mark.parametrize("point,expected_end", CRASH_POINTS.items())
def test_launch_survives_kill_9_at(point: str, expected_end: str, agent: AgentHarness, vm: NamespaceVM) -> None:
    script = agent.script("once.sh", 'echo ran >> "$HOME/ran.txt"\nsleep 1\n')
    key = new_key("/crash/job")
    agent.reconnect(env={"JOBNET_AGENT_CRASH_AT": point})
    try:
        agent.launch(key, script)
        assert point.startswith("supervise:"), "serve should have died answering the launch"
    except SshError:
        assert point.startswith("serve:")  # outcome unknown: exactly the operator's situation
    # Reconnect only once the crash happened, so the new serve finds what the crash left behind.
    wait_until(
        lambda: agent.chan.closed if point.startswith("serve:") else _job_supervisors_gone(vm),
        timeout=10,
        what=f"crash at {point}",
    )

    agent.reconnect()
    agent.launch(key, script)  # the operator's retry with the same key
    record = agent.wait_state(key, "exited", "lost", "failedToStart", "interrupted", timeout=20)

    runs = (vm.home / "ran.txt").read_text().count("ran\n") if (vm.home / "ran.txt").exists() else 0
    assert runs <= 1, f"script ran {runs} times"
    assert record.state == expected_end, (record, vm.read_agent_log())
    if record.state == "exited":
        assert runs == 1 and record.exit_code == 0
        assert not [
            line
            for line in vm.read_agent_log().splitlines()
            if "supervise[" in line and str(key) in line and "exited with code" in line
        ], "supervisor died first"
    if record.state == "failedToStart":
        assert runs == 0
    records = agent.chan.call(ListRequest(), ListResult).records
    assert [r.key for r in records] == [key]
    agent.chan.watch(0)
    seqs = wait_until(
        lambda: (
            [r.seq for r in list(agent.events.queue) if r.seq <= record.seq]
            if any(r.seq == record.seq for r in list(agent.events.queue))
            else None
        ),
        timeout=5,
        what="journal replayed",
    )
    assert seqs == list(range(1, record.seq + 1)), "journal events contiguous, none duplicated"


def test_exit_recorded_by_a_dying_supervisor_reaches_a_connected_watcher(agent: AgentHarness, vm: NamespaceVM) -> None:
    """The supervisor dies between writing the exited record and appending its event, while serve
    stays connected: the watcher still gets the event (no new serve start needed)."""
    agent.reconnect(env={"JOBNET_AGENT_CRASH_AT": "supervise:journal-after-record:exited"})
    agent.chan.watch(0)
    key = new_key("/crash/live")
    agent.launch(key, agent.script("live.sh", "exit 0\n"))
    agent.wait_state(key, "exited")

    wait_until(
        lambda: any(r.key == key and r.state == "exited" for r in list(agent.events.queue)),
        timeout=5,
        what="the exited event on the live watch stream",
    )
    assert not [
        line
        for line in vm.read_agent_log().splitlines()
        if "supervise[" in line and str(key) in line and "exited with code" in line
    ], "supervisor died first"
