"""The SSH edge: connection pool, agent installer, agent channel (paramiko).

The operator uses :class:`HostAgent` (asyncio: connect, install, hello, watch, resume after a
reconnect); underneath, step by step (blocking, worker threads)::

    pool = HostConnectionPool(SshSettings(...))
    transport = pool.transport(SshTarget(address, port, user), SshCredentials.from_secret_data(secret))
    agent = installer.ensure(transport, host=address)
    channel = AgentChannel(transport, serve_command(agent, serve_args=[...]), host=address, on_event=...)
    channel.hello(client="jobnet-operator/0.1.0")
    channel.watch(from_seq)
    result = await channel.acall(LaunchRequest(key=..., script=...), LaunchResult)
"""

from jobnet.ssh.channel import AgentChannel, serve_command
from jobnet.ssh.errors import (
    AgentInstallFailed,
    AgentRequestFailed,
    AuthenticationFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostUnreachable,
    ResponseTimeout,
    SshError,
)
from jobnet.ssh.hostagent import AgentSettings, HostAgent
from jobnet.ssh.installer import AgentInstaller, default_zipapp, run_command
from jobnet.ssh.pool import HostConnectionPool, SshCredentials, SshSettings, SshTarget

__all__ = [
    "AgentChannel",
    "AgentInstallFailed",
    "AgentInstaller",
    "AgentRequestFailed",
    "AgentSettings",
    "AuthenticationFailed",
    "ConnectionLost",
    "HostAgent",
    "HostConnectionPool",
    "HostKeyMismatch",
    "HostUnreachable",
    "ResponseTimeout",
    "SshCredentials",
    "SshError",
    "SshSettings",
    "SshTarget",
    "default_zipapp",
    "run_command",
    "serve_command",
]
