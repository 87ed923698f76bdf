"""HostAgent (the operator's asyncio handle on a VM's agent) over real SSH into a namespace VM."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import paramiko
import pytest

from jobnet.core.agentproto import GetRequest, JobRecord, LaunchRequest, LaunchResult, RecordResult
from jobnet.ssh import (
    AgentInstaller,
    AgentSettings,
    ConnectionLost,
    HostAgent,
    HostConnectionPool,
    HostKeyMismatch,
    SshCredentials,
    SshTarget,
)
from tests.support.netutil import wait_until
from tests.support.vm import NamespaceVM
from tests.vm.harness import FAST_AGENT_ARGS, FAST_SSH, new_key


def _host_agent(vm: NamespaceVM, installer: AgentInstaller, events: list[JobRecord], **overrides: object) -> HostAgent:
    credentials = SshCredentials(known_hosts=vm.known_hosts, private_key=vm.client_key)
    return HostAgent(
        HostConnectionPool(FAST_SSH),
        installer,
        SshTarget(vm.address, 22, vm.user),
        overrides.get("credentials", credentials),  # type: ignore[arg-type]
        on_event=events.append,
        # Like the operator: default state dir and boot id source (the VM's sshd points the agent
        # at the VM's boot id file); only the deadlines are shortened.
        settings=AgentSettings(request_timeout=3.0, serve_args=FAST_AGENT_ARGS),
    )


async def _until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    # Polled from a worker thread: the event loop stays free to deliver the events waited for.
    await asyncio.to_thread(wait_until, predicate, timeout=timeout, what=what, interval=0.01)


def test_events_arrive_on_the_loop_once_in_order_across_a_reconnect(
    vm: NamespaceVM, agent_installer: AgentInstaller
) -> None:
    events: list[JobRecord] = []
    host = _host_agent(vm, agent_installer, events)
    first, second = new_key("/ha/first"), new_key("/ha/second")

    async def scenario() -> None:
        await host.request(LaunchRequest(key=first, script="/bin/true"), LaunchResult)
        assert host.hello is not None and host.hello.boot_id == vm.boot_id
        assert (vm.state_dir / "agent.log").exists()
        await _until(lambda: any(r.key == first and r.terminal for r in events), 5, "first job's end")
        script = str(vm.put_file("second.sh", '#!/bin/sh\nsleep 0.5; touch "$HOME/second.done"\n'))
        launched = await host.request(LaunchRequest(key=second, script=script), LaunchResult)
        assert launched.record.pid
        vm.cut()
        with pytest.raises(ConnectionLost):
            await host.request(GetRequest(key=second), RecordResult, timeout=0.5)
        host.drop_connection()  # what the operator does when heartbeats stop
        await _until(lambda: (vm.home / "second.done").exists(), 5, "second job ended during the cut")
        vm.restore()
        await host.connect()  # the operator's probe
        await _until(
            lambda: any(r.key == second and r.terminal for r in events), 5, "second job's end via resumed watch"
        )
        record = (await host.request(GetRequest(key=second), RecordResult)).record
        assert record.state == "exited" and host.connected
        await host.close()

    asyncio.run(scenario())

    seqs = [r.seq for r in events]
    assert seqs == list(range(1, max(seqs) + 1))
    assert [r.state for r in events if r.key == second] == ["accepted", "running", "exited"]


class _CountingInstaller(AgentInstaller):
    """Counts the install checks (the probe, and the upload when it finds no such file)."""

    checks = 0

    def ensure(self, transport: paramiko.Transport, host: str) -> str:
        self.checks += 1
        return super().ensure(transport, host)


def test_serve_starts_from_the_installed_zipapp_and_it_is_checked_only_when_serve_does_not_start(
    vm: NamespaceVM, agent_installer: AgentInstaller
) -> None:
    installer = _CountingInstaller(agent_installer.zipapp, agent_installer.version)
    installed = vm.home / installer.remote_name
    shipped = installer.zipapp.read_bytes()
    host = _host_agent(vm, installer, [])

    async def reconnect() -> None:
        host.drop_connection()  # a new SSH connection, serve and channel
        await host.connect()

    async def scenario() -> list[int]:
        checks = []
        await host.connect()  # a fresh VM: serve's command exits AGENT_MISSING_STATUS, then the install
        checks.append(installer.checks)
        await reconnect()  # installed: serve at once
        checks.append(installer.checks)
        installed.write_bytes(b"damaged")  # a file of the right name that does not run: checked, replaced
        await reconnect()
        checks.append(installer.checks)
        await host.close()
        return checks

    assert not installed.exists()
    assert asyncio.run(scenario()) == [1, 1, 2]
    assert installed.read_bytes() == shipped
    assert sorted(path.name for path in installed.parent.glob("*.pyz")) == [installed.name]


def test_connect_errors_are_classified(vm: NamespaceVM, agent_installer: AgentInstaller) -> None:
    wrong = SshCredentials(known_hosts=vm.known_hosts.replace(vm.address, "198.18.255.254"), private_key=vm.client_key)
    host = _host_agent(vm, agent_installer, [], credentials=wrong)
    with pytest.raises(HostKeyMismatch):
        asyncio.run(host.connect())
    assert not host.connected
