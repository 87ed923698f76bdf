"""The real agent in a namespace VM, driven through the operator's real SSH client."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path

import pytest

import jobnet_agent
from jobnet.core.agentproto import GetRequest, JobRecord, PingRequest, PingResult, RecordResult
from jobnet.ssh import AgentRequestFailed, ConnectionLost
from tests.support.netutil import wait_until
from tests.support.vm import NamespaceVM, process_gone
from tests.vm.harness import AgentHarness, new_key


def test_hello_reports_protocol_agent_version_and_the_vms_boot_id(agent: AgentHarness, vm: NamespaceVM) -> None:
    hello = agent.chan.hello_result
    assert hello is not None
    assert hello.protocol == 1
    assert hello.agent_version == jobnet_agent.__version__
    assert hello.boot_id == vm.boot_id
    assert hello.pid in vm.pids()


def test_the_agent_was_installed_over_sftp_into_the_users_home(agent: AgentHarness, vm: NamespaceVM) -> None:
    installed = vm.home / agent.installer.remote_name
    assert installed.name.startswith(f"jobnet-agent-{jobnet_agent.__version__}-")
    assert agent.agent_path == str(installed)
    assert installed.read_bytes() == agent.installer.zipapp.read_bytes()
    assert installed.stat().st_uid == vm.uid


def test_launch_is_idempotent_by_key_the_script_runs_once(agent: AgentHarness, vm: NamespaceVM) -> None:
    script = agent.script("append.sh", 'echo ran >> "$HOME/ran.txt"\nsleep 0.5\n')
    key = new_key()

    first = agent.launch(key, script)
    again = agent.launch(key, script)
    agent.wait_state(key, "exited")
    agent.reconnect()
    after_exit = agent.launch(key, script)

    assert not first.deduplicated and first.record.pid
    assert again.deduplicated and again.record.pid == first.record.pid
    assert after_exit.deduplicated and after_exit.record.state == "exited" and after_exit.record.exit_code == 0
    assert (vm.home / "ran.txt").read_text() == "ran\n"
    assert f"launch ignored: already started (pid {first.record.pid})" in vm.read_agent_log()


def test_kill_reaches_the_whole_process_tree(agent: AgentHarness, vm: NamespaceVM) -> None:
    script = agent.script(
        "tree.sh",
        'sh -c \'trap "" TERM; echo $$ > "$HOME/child.pid"; while :; do sleep 0.05; done\' &\nwait\n',
    )
    key = new_key()
    agent.launch(key, script)
    child = int(
        wait_until(
            lambda: (vm.home / "child.pid").exists() and (vm.home / "child.pid").read_text().strip(),
            timeout=5,
            what="child started",
        )
    )

    killed = agent.kill(key, grace_seconds=0.3)
    record = agent.wait_state(key, "killed")

    assert not killed.already_ended
    assert record.reason == "StopRequested"
    wait_until(lambda: process_gone(child), timeout=5, what=f"child {child} that ignores SIGTERM killed")


def test_timeout_is_enforced_on_the_vm(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key()
    launched = agent.launch(key, agent.script("slow.sh", "sleep 30\n"), timeout_seconds=1)

    record = agent.wait_state(key, "timedOut", timeout=10)

    assert record.reason == "TimedOut"
    assert process_gone(launched.record.pid)


def test_missing_script_fails_to_start(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key()
    agent.launch(key, f"{vm.home}/scripts/does-not-exist.sh")
    record = agent.wait_state(key, "failedToStart")
    assert record.reason == "ScriptNotFound"
    assert "does-not-exist.sh" in (record.message or "")


def test_watch_resumes_after_a_network_cut_without_loss_or_duplicates(agent: AgentHarness, vm: NamespaceVM) -> None:
    assert agent.chan.watch(0).last_seq >= 0
    quick, slow = new_key("/cut/quick"), new_key("/cut/slow")
    agent.launch(quick, agent.script("quick.sh", "exit 0\n"))
    agent.launch(slow, agent.script("slow.sh", 'sleep 1; touch "$HOME/slow.done"\n'))
    seen: list[JobRecord] = []

    def collect_until(predicate: object, timeout: float) -> None:
        def probe() -> bool:
            while True:
                try:
                    seen.append(agent.events.get_nowait())
                except queue.Empty:
                    return any(predicate(r) for r in seen)  # type: ignore[operator]

        wait_until(probe, timeout=timeout, what="expected events")

    collect_until(lambda r: r.key == quick and r.state == "exited", timeout=5)
    vm.cut()
    wait_until(lambda: (vm.home / "slow.done").exists(), timeout=10, what="slow job finished during the cut")
    wait_until(lambda: agent.chan.heartbeat_age() > 1.0, timeout=5, what="heartbeats stop during the cut")
    resume_from = agent.chan.last_event_seq
    agent.chan.close()
    vm.restore()
    agent.reconnect()
    agent.chan.watch(resume_from)
    collect_until(lambda r: r.key == slow and r.terminal, timeout=10)

    seqs = [r.seq for r in seen]
    assert seqs == list(range(1, max(seqs) + 1)), "every journal entry exactly once, in order"
    assert [r.state for r in seen if r.key == slow][-1] == "exited"


@pytest.mark.slow
def test_500_mb_of_stdout_keeps_agent_memory_bounded(agent: AgentHarness, vm: NamespaceVM) -> None:
    key = new_key("/big/output")
    size = 500_000_000
    agent.launch(key, agent.script("big.sh", f"head -c {size} /dev/zero\n"))
    peak_kib: dict[int, int] = {}

    def sample_until_ended() -> bool:
        for pid in vm.agent_processes():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib[pid] = max(peak_kib.get(pid, 0), int(line.split()[1]))
        return agent.get(key).terminal

    wait_until(sample_until_ended, timeout=120, interval=0.05, what="500 MB job finished")
    record = agent.get(key)

    assert record.state == "exited" and record.exit_code == 0
    assert record.stdout_bytes == size
    assert record.stdout_dropped > 0
    assert len(peak_kib) >= 2, "sampled serve and the supervisor"
    print(f"peak RSS (KiB) of agent processes while writing {size} bytes: {peak_kib}")
    assert max(peak_kib.values()) < 64 * 1024, f"agent memory grew with output: {peak_kib} KiB"


def test_concurrent_asyncio_requests_are_matched_by_id(agent: AgentHarness) -> None:
    keys = [new_key(f"/async/{n}") for n in range(20)]

    async def ask_all() -> list[object]:
        return await asyncio.gather(
            *(agent.chan.acall(GetRequest(key=key), RecordResult) for key in keys), return_exceptions=True
        )

    answers = asyncio.run(ask_all())

    assert all(isinstance(a, AgentRequestFailed) and a.agent_code == "NotFound" for a in answers), answers

    async def ping_many() -> list[PingResult]:
        return await asyncio.wait_for(
            asyncio.gather(*(agent.chan.acall(PingRequest(), PingResult) for _ in range(50))), 10
        )

    pings = asyncio.run(ping_many())
    assert len(pings) == 50 and all(p.time > 0 for p in pings)


def test_heartbeats_are_tracked(agent: AgentHarness) -> None:
    wait_until(lambda: agent.chan.last_heartbeat is not None, timeout=5, what="first heartbeat")
    first = agent.chan.last_heartbeat
    wait_until(lambda: agent.chan.last_heartbeat is not first, timeout=5, what="next heartbeat")
    assert agent.chan.heartbeat_age() < 1.0


def test_a_dying_channel_fails_pending_requests_with_connection_lost(agent: AgentHarness, vm: NamespaceVM) -> None:
    vm.drop("in")  # the request never reaches the agent, so no answer can come
    pending = agent.chan.submit(PingRequest())
    vm.kill_agent(("serve",))
    vm.undrop("in")

    with pytest.raises(ConnectionLost, match="while waiting for the ping response"):
        pending.result(timeout=10)
    assert agent.chan.closed
    with pytest.raises(ConnectionLost, match=vm.address):
        agent.chan.submit(PingRequest())
