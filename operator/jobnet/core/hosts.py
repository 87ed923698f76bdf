"""How a VM is named wherever the operator's parts must agree on it: ``user@address:port``.

The scheduler's facts and actions, the heartbeats the runtime collects per agent link, the
job status (``host``), the SSH pool's targets and ``jobnet lint --tree`` all spell a host this
way; heartbeats only reach the jobs they prove alive when every spelling matches, hence one
function. Pure: no I/O.
"""

from __future__ import annotations

from typing import Protocol


class HostAddress(Protocol):
    """Anything that says where an agent runs: a JobNet's ``HostSpec``, an SSH target, a link."""

    @property
    def user(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...


def host_id(host: HostAddress) -> str:
    """``user@address:port``, e.g. ``batch@10.0.0.5:22``."""
    return f"{host.user}@{host.address}:{host.port}"
