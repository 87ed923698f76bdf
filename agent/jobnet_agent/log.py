"""The agent log: one human-readable line per decision, for whoever investigates an incident.

Every process of a state directory (serve, supervisors, human commands) appends to the same file;
each line is a single ``write`` on an ``O_APPEND`` descriptor, so lines never interleave.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

from jobnet_agent.protocol import JobKey


def _timestamp(now: float) -> str:
    millis = int((now - int(now)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


class AgentLog:
    def __init__(self, path: str, role: str) -> None:
        self.path = path
        self.role = role
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def line(self, message: str, key: Optional[JobKey] = None) -> None:
        parts = [_timestamp(time.time()), f"{self.role}[{os.getpid()}]"]
        if key is not None:
            parts.append(key.text())
        parts.append(message.replace("\n", " "))
        data = (" ".join(parts) + "\n").encode("utf-8", "replace")
        try:
            os.write(self._fd, data)
        except OSError as exc:
            # The log is a diagnostic aid: a full disk must not stop jobs from being supervised.
            sys.stderr.write(f"jobnet-agent: cannot write agent log {self.path}: {exc}\n")

    def close(self) -> None:
        os.close(self._fd)
