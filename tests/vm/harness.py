"""Drive the real agent in a namespace VM through the operator's real SSH client (jobnet.ssh)."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterable, Sequence

from jobnet.core.agentproto import (
    GetRequest,
    JobKey,
    JobRecord,
    KillRequest,
    KillResult,
    LaunchRequest,
    LaunchResult,
    RecordResult,
)
from jobnet.ssh import (
    AgentChannel,
    AgentInstaller,
    HostConnectionPool,
    SshCredentials,
    SshSettings,
    SshTarget,
    serve_command,
)
from tests.support.netutil import wait_until
from tests.support.vm import NamespaceVM

FAST_SSH = SshSettings(
    connect_timeout=1.0,
    handshake_timeout=3.0,
    auth_timeout=3.0,
    keepalive_interval=1.0,
    dead_connection_timeout=3.0,
    reconnect_backoff_min=0.05,
    reconnect_backoff_max=0.2,
)
#: Short agent deadlines so failure tests finish in seconds.
FAST_AGENT_ARGS = (
    "--heartbeat-seconds",
    "0.2",
    "--grace-seconds",
    "0.5",
    "--sweep-seconds",
    "0.1",
    "--start-timeout-seconds",
    "2",
)


def new_key(path: str = "/test/job", attempt: int = 1) -> JobKey:
    return JobKey(run=str(uuid.uuid4()), path=path, attempt=attempt)


class AgentHarness:
    """One VM's agent, reached like the operator reaches it: pool -> installer -> channel."""

    def __init__(self, vm: NamespaceVM, installer: AgentInstaller, *, request_timeout: float = 5.0) -> None:
        self.vm = vm
        self.installer = installer
        self.request_timeout = request_timeout
        self.pool = HostConnectionPool(FAST_SSH)
        self.target = SshTarget(vm.address, 22, vm.user)
        self.credentials = SshCredentials(known_hosts=vm.known_hosts, private_key=vm.client_key)
        self.events: queue.Queue[JobRecord] = queue.Queue()
        self.channel: AgentChannel | None = None
        self.agent_path = ""

    def connect(self, *, env: dict[str, str] | None = None, extra_args: Sequence[str] = ()) -> AgentChannel:
        """Open a fresh agent channel (over the pooled transport) and say hello."""
        transport = self.pool.transport(self.target, self.credentials)
        self.agent_path = self.installer.ensure(transport, self.vm.address)
        command = serve_command(
            self.agent_path,
            serve_args=[
                "--state-dir",
                str(self.vm.state_dir),
                *self.vm.agent_serve_args(),
                *FAST_AGENT_ARGS,
                *extra_args,
            ],
        )
        if env:
            command = " ".join(f"{name}={value}" for name, value in env.items()) + " " + command
        self.channel = AgentChannel(
            transport, command, host=self.vm.address, on_event=self.events.put, request_timeout=self.request_timeout
        )
        self.channel.hello(client="jobnet-tests")
        return self.channel

    def reconnect(self, **kwargs: object) -> AgentChannel:
        """Drop the channel and the transport (as after a network failure) and connect anew."""
        if self.channel is not None:
            self.channel.close()
        self.pool.invalidate(self.target)
        return self.connect(**kwargs)  # type: ignore[arg-type]

    @property
    def chan(self) -> AgentChannel:
        assert self.channel is not None, "connect() first"
        return self.channel

    def launch(
        self,
        key: JobKey,
        script: str,
        *,
        args: Iterable[str] = (),
        timeout_seconds: int | None = None,
        working_dir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> LaunchResult:
        request = LaunchRequest(
            key=key,
            script=script,
            args=list(args),
            env=env or {},
            working_dir=working_dir,
            timeout_seconds=timeout_seconds,
        )
        return self.chan.call(request, LaunchResult)

    def kill(self, key: JobKey, *, grace_seconds: float | None = None, reason: str = "stop") -> KillResult:
        return self.chan.call(KillRequest(key=key, grace_seconds=grace_seconds, reason=reason), KillResult)

    def get(self, key: JobKey) -> JobRecord:
        return self.chan.call(GetRequest(key=key), RecordResult).record

    def wait_state(self, key: JobKey, *states: str, timeout: float = 10.0) -> JobRecord:
        return wait_until(
            lambda: (r := self.get(key)).state in states and r,
            timeout=timeout,
            what=f"{key} in state {'/'.join(states)}",
        )

    def script(self, name: str, body: str, mode: int = 0o755) -> str:
        """Put a shell script into the VM user's home; returns its absolute path."""
        return str(self.vm.put_file(f"scripts/{name}", "#!/bin/sh\n" + body, mode))

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.pool.close()
