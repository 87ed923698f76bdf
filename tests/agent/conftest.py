"""Local agent harness: ``jobnet-agent serve`` as a real subprocess over pipes (no SSH).

Each test gets its own state dir and boot-id file; jobs are real processes. Every wait polls a
condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

AGENT_SRC = Path(__file__).resolve().parents[2] / "agent"
#: The interpreter that runs the agent; e.g. JOBNET_AGENT_TEST_PYTHON=python3.8 to check 3.8.
AGENT_PYTHON = os.environ.get("JOBNET_AGENT_TEST_PYTHON", sys.executable)

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(AGENT_SRC)
    env.pop("JOBNET_AGENT_CRASH_AT", None)
    env.pop("JOBNET_AGENT_PAUSE_AT", None)
    env.pop("JOBNET_AGENT_FAIL_AT", None)
    env.update(extra or {})
    return env


class AgentDirs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.boot_id_file = root / "boot_id"
        self.boot_id_file.write_text(str(uuid.uuid4()) + "\n")
        self.work = root / "work"
        self.work.mkdir()

    @property
    def agent_log(self) -> Path:
        return self.state / "agent.log"

    def log_text(self) -> str:
        return self.agent_log.read_text() if self.agent_log.exists() else ""

    def reboot(self) -> str:
        new = str(uuid.uuid4())
        self.boot_id_file.write_text(new + "\n")
        return new

    def options(self, **overrides: Any) -> list[str]:
        values = {
            "state-dir": self.state,
            "boot-id-file": self.boot_id_file,
            "grace-seconds": 2,
            "heartbeat-seconds": 0.5,
            "sweep-seconds": 0.1,
            "start-timeout-seconds": 5,
            "max-output-bytes": 1024 * 1024,
            "tail-bytes": 64 * 1024,
        }
        values.update({k.replace("_", "-"): v for k, v in overrides.items()})
        args: list[str] = []
        for name, value in values.items():
            args += ["--" + name, str(value)]
        return args

    def script(self, name: str, body: str, executable: bool = True) -> str:
        path = self.work / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755 if executable else 0o644)
        return str(path)

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AGENT_PYTHON, "-m", "jobnet_agent", *args],
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


class Agent:
    """One ``serve`` process: requests get responses by id; events and heartbeats are queued."""

    def __init__(
        self,
        dirs: AgentDirs,
        crash_at: str | None = None,
        pause_at: str | None = None,
        fail_at: str | None = None,
        **options: Any,
    ) -> None:
        self.dirs = dirs
        extra = {"JOBNET_AGENT_CRASH_AT": crash_at} if crash_at else {}
        if pause_at:
            extra["JOBNET_AGENT_PAUSE_AT"] = pause_at
        if fail_at:
            extra["JOBNET_AGENT_FAIL_AT"] = fail_at
        self.proc = subprocess.Popen(
            [AGENT_PYTHON, "-m", "jobnet_agent", "serve", *dirs.options(**options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=agent_env(extra),
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.heartbeats: queue.Queue[dict[str, Any]] = queue.Queue()
        self._responses: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if "event" in message:
                self.events.put(message["event"])
            elif "heartbeat" in message:
                self.heartbeats.put(message["heartbeat"])
            else:
                with self._cond:
                    self._responses[message["id"]] = message
                    self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def send(self, op: str, **args: Any) -> int:
        self._next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": self._next_id, "op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        return self._next_id

    def response(self, request_id: int, timeout: float = 15.0) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self._responses or self.closed, timeout):
                raise AssertionError(f"no response to request {request_id} within {timeout}s")
            if request_id not in self._responses:
                raise ConnectionError(f"serve closed the channel without answering request {request_id}")
            return self._responses.pop(request_id)

    def call(self, op: str, timeout: float = 15.0, **args: Any) -> dict[str, Any]:
        """A request that must succeed; returns its result."""
        response = self.response(self.send(op, **args), timeout)
        assert response["ok"], response
        return response["result"]

    def error(self, op: str, **args: Any) -> dict[str, Any]:
        """A request that must fail; returns its error."""
        response = self.response(self.send(op, **args))
        assert not response["ok"], response
        return response["error"]

    def launch(self, key: dict[str, Any], script: str, args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        return self.call(
            "launch",
            key=key,
            script=script,
            args=args or [],
            env=extra.pop("env", {}),
            workingDir=extra.pop("workingDir", None),
            timeoutSeconds=extra.pop("timeoutSeconds", None),
            **extra,
        )

    def get(self, key: dict[str, Any]) -> dict[str, Any]:
        return self.call("get", key=key)["record"]

    def wait_state(self, key: dict[str, Any], *states: str, timeout: float = 10.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            record = self.get(key)
            return record if record["state"] in states else None

        return wait_until(reached, timeout=timeout, what=f"{key} to reach {states}")

    def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout}s") from None

    def close(self, timeout: float = 10.0) -> int:
        """Close stdin (the SSH channel closing) and wait for serve to exit."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stderr_text(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def new_key(path: str = "/net/job", attempt: int = 1, run: str | None = None) -> dict[str, Any]:
    return {"run": run or uuid.uuid4().hex[:12], "path": path, "attempt": attempt}


def key_text(key: dict[str, Any]) -> str:
    return f"{key['run']}:{key['path']}#{key['attempt']}"


def supervisor_pids(state_dir: Path) -> list[int]:
    """Pids of the live supervisors of the jobs of a state dir."""
    found = []
    for lock_file in state_dir.glob("jobs/*/*/supervisor.lock"):
        text = lock_file.read_text().strip()  # empty until a supervisor took the job
        if text and pid_alive(int(text)):
            found.append(int(text))
    return found


def agent_process_pids(state_dir: Path) -> list[int]:
    """Every agent process (serve, supervisors, standby supervisors) of a state dir, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(state_dir).encode() in argv and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def kill_tree_of(pgid: int | None) -> None:
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[AgentDirs]:
    created = AgentDirs(tmp_path)
    yield created
    # Never leave a job or supervisor of this test behind.
    for pid in agent_process_pids(created.state):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    jobs = created.state / "jobs"
    if jobs.exists():
        for record_file in jobs.glob("*/*/record.json"):
            kill_tree_of(json.loads(record_file.read_text()).get("pgid"))


@pytest.fixture
def agent(dirs: AgentDirs) -> Iterator[Agent]:
    started = Agent(dirs)
    yield started
    if started.proc.poll() is None:
        started.close()
