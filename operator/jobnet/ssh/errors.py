"""Classified SSH failures. Messages name the host and what went wrong, never a key or password."""

from __future__ import annotations

from typing import ClassVar


class SshError(Exception):
    """Base of every failure talking to a VM; ``code`` is the machine-readable reason."""

    code: ClassVar[str] = "SshError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HostUnreachable(SshError):
    """No SSH session could be established: DNS, refused, timeout, no route, handshake failed.

    Nothing reached the agent."""

    code = "HostUnreachable"


class AuthenticationFailed(SshError):
    """sshd rejected the credentials. Nothing reached the agent."""

    code = "AuthenticationFailed"


class HostKeyMismatch(SshError):
    """The host key is unknown or differs from knownHosts: we disconnected before authenticating."""

    code = "HostKeyMismatch"


class ConnectionLost(SshError):
    """An established connection or agent channel broke. A request in flight may or may not
    have reached the agent: its outcome is unknown (the caller decides, e.g. re-send by key)."""

    code = "ConnectionLost"


class ResponseTimeout(ConnectionLost):
    """No response within the deadline; the request may have been carried out."""


class AgentInstallFailed(SshError):
    """The agent could not be installed or started on the VM (e.g. no python3 >= 3.8)."""

    code = "AgentInstallFailed"


class AgentRequestFailed(SshError):
    """The agent answered a request with an error; ``agent_code`` is its code (e.g. NotFound)."""

    code = "AgentRequestFailed"

    def __init__(self, agent_code: str, message: str) -> None:
        super().__init__(f"agent refused the request: {agent_code}: {message}")
        self.agent_code = agent_code
