"""The jobnet watchdog agent: runs jobs on a VM, detached, journaled, idempotent by key.

Standard library only, Python >= 3.8. See docs/agent-protocol.md for the wire protocol.
"""

__version__ = "0.3.0"

#: The protocol version spoken by ``serve`` (docs/agent-protocol.md).
PROTOCOL_VERSION = 1
