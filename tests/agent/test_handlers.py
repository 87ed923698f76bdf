"""The request handlers (jobnet_agent.handlers) called directly: no serve process, no pipes.

The supervisor starter and the detection callback are fakes that record what they were asked;
the journal is real (a temporary state dir)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobnet_agent import PROTOCOL_VERSION
from jobnet_agent.config import AgentConfig
from jobnet_agent.handlers import Handlers, Later
from jobnet_agent.journal import Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.protocol import JobKey, JobRecord, ProtocolError, Request

KEY = {"run": "r1", "path": "/net/a", "attempt": 1}
JOB_KEY = JobKey.from_json(KEY)


class FakeStarter:
    """Stands in for the supervising process: notes the job and reports it ready at once."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def __call__(self, job_dir: str, lock_fd: int, ready_w: int) -> None:
        self.started.append(job_dir)
        os.write(ready_w, b"1")


class Fixture:
    def __init__(self, root: Path) -> None:
        self.config = AgentConfig(state_dir=str(root / "state"), start_timeout_seconds=2.0)
        self.journal = Journal(self.config.state_dir, "serve")
        self.journal.open()
        self.log = AgentLog(self.config.agent_log_path, "serve")
        self.starter = FakeStarter()
        self.settled: list[JobRecord] = []
        self.handlers = Handlers(self.config, "boot-1", self.journal, self.log, self.starter, self.settled.append)
        self._ids = iter(range(1, 1000))

    def call(self, op: str, **args: Any) -> Any:
        return self.handlers.table[op](Request(id=next(self._ids), op=op, args=args))

    def launch(self) -> Any:
        return self.call("launch", key=KEY, script="/bin/true")

    def log_text(self) -> str:
        return Path(self.config.agent_log_path).read_text()


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    fixture = Fixture(tmp_path)
    yield fixture
    fixture.log.close()


def test_hello_names_the_agent_and_refuses_another_protocol(fx: Fixture) -> None:
    answer = fx.call("hello", protocol=PROTOCOL_VERSION, client="test")

    assert answer["protocol"] == PROTOCOL_VERSION and answer["bootId"] == "boot-1" and answer["lastSeq"] == 0
    with pytest.raises(ProtocolError) as refused:
        fx.call("hello", protocol=PROTOCOL_VERSION + 1)
    assert refused.value.code == "UnsupportedProtocol"


def test_a_launch_is_claimed_at_once_and_answered_once_its_supervisor_is_ready(fx: Fixture) -> None:
    later = fx.launch()

    assert isinstance(later, Later)
    assert fx.journal.read_record(JOB_KEY).state == "accepted"  # claimed before any supervisor
    assert fx.starter.started == []
    answer = later.finish()
    assert fx.starter.started == [fx.journal.job(JOB_KEY).path]
    assert answer["deduplicated"] is False and answer["record"]["state"] == "accepted"


def test_a_second_launch_of_a_key_is_deduplicated_and_starts_nothing(fx: Fixture) -> None:
    fx.launch().finish()

    again = fx.launch()

    assert not isinstance(again, Later) and again["deduplicated"] is True
    assert len(fx.starter.started) == 1
    assert "launch ignored: already accepted" in fx.log_text()


def test_a_fenced_key_refuses_its_launch(fx: Fixture) -> None:
    assert fx.call("fence", key=KEY)["fenced"] is True

    answer = fx.launch()

    assert answer["deduplicated"] is True and answer["record"]["reason"] == "Fenced" and fx.starter.started == []


def test_a_kill_without_a_listening_supervisor_is_settled_by_detection(fx: Fixture) -> None:
    fx.launch().finish()

    first = fx.call("kill", key=KEY, graceSeconds=1)
    second = fx.call("kill", key=KEY)

    assert first["deduplicated"] is False and first["record"]["killRequested"] == "stop"
    assert second["deduplicated"] is True and second["alreadyEnded"] is False
    assert [r.kill_requested for r in fx.settled] == ["stop", "stop"]


def test_a_kill_of_an_ended_job_answers_its_end(fx: Fixture) -> None:
    fx.launch().finish()
    fx.journal.update(JOB_KEY, lambda r: r.replace(state="exited", exit_code=3))

    answer = fx.call("kill", key=KEY)

    assert answer["alreadyEnded"] is True and answer["record"]["exitCode"] == 3 and fx.settled == []


@pytest.mark.parametrize("op", ["get", "kill", "ack", "tail", "read"])
def test_requests_about_an_unknown_key_say_not_found(fx: Fixture, op: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        fx.call(op, key=KEY)
    assert refused.value.code == "NotFound"


def test_only_an_ended_job_can_be_acknowledged(fx: Fixture) -> None:
    fx.launch().finish()
    with pytest.raises(ProtocolError, match="still accepted"):
        fx.call("ack", key=KEY)
    fx.journal.update(JOB_KEY, lambda r: r.replace(state="exited", exit_code=0))

    assert fx.call("ack", key=KEY)["record"]["acknowledged"] is True
    assert fx.call("list", run="r1")["records"][0]["acknowledged"] is True


def test_output_is_read_and_tailed_from_the_job_directory(fx: Fixture) -> None:
    fx.launch().finish()
    Path(fx.journal.job(JOB_KEY).path, "stdout").write_bytes(b"line 1\nline 2\n")
    fx.journal.update(JOB_KEY, lambda r: r.replace(state="exited", exit_code=0))

    tail = fx.call("tail", key=KEY, maxBytes=7)
    read = fx.call("read", key=KEY, offset=7)

    assert (tail["data"], tail["totalBytes"], tail["droppedBytes"]) == ("line 2\n", 14, 0)
    assert base64.b64decode(read["data"]) == b"line 2\n" and read["eof"] is True
