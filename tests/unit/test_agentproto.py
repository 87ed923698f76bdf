"""The operator-side models of the agent protocol (docs/agent-protocol.md)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from jobnet.core.agentproto import (
    AgentProtocolError,
    EventMessage,
    HeartbeatMessage,
    JobKey,
    KillRequest,
    LaunchRequest,
    LaunchResult,
    ListRequest,
    Response,
    WatchRequest,
    parse_agent_message,
)

KEY = JobKey(run="6f1c", path="/nightly/load/step1", attempt=2)


def test_key_text_form() -> None:
    assert KEY.text() == "6f1c:/nightly/load/step1#2" == str(KEY)


def test_requests_serialise_to_the_documented_wire_form() -> None:
    assert LaunchRequest(key=KEY, script="/opt/a.sh", args=["x"], env={"A": "1"}, timeout_seconds=5).wire() == {
        "op": "launch",
        "key": {"run": "6f1c", "path": "/nightly/load/step1", "attempt": 2},
        "script": "/opt/a.sh",
        "args": ["x"],
        "env": {"A": "1"},
        "workingDir": None,
        "timeoutSeconds": 5,
    }
    assert KillRequest(key=KEY).wire() == {"op": "kill", "key": KEY.wire(), "reason": "stop"}
    assert KillRequest(key=KEY, grace_seconds=1.5, reason="timeout").wire()["graceSeconds"] == 1.5
    assert ListRequest().wire() == {"op": "list"}
    assert WatchRequest(from_seq=7).wire() == {"op": "watch", "fromSeq": 7}


def test_bad_requests_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="attempt"):
        JobKey(run="r", path="/p", attempt=0)
    with pytest.raises(ValidationError, match="script"):
        LaunchRequest(key=KEY, script="")


def test_parse_response_event_and_heartbeat() -> None:
    record = {"key": KEY.wire(), "seq": 9, "state": "exited", "exitCode": 0, "futureField": True}
    response = parse_agent_message(
        json.dumps({"id": 3, "ok": True, "result": {"record": record, "deduplicated": False}})
    )
    assert isinstance(response, Response) and response.id == 3
    assert LaunchResult.model_validate(response.result).record.exit_code == 0

    event = parse_agent_message(json.dumps({"event": record}).encode())
    assert isinstance(event, EventMessage) and event.event.terminal and event.event.key == KEY

    heartbeat = parse_agent_message('{"heartbeat": {"time": 12.5, "lastSeq": 9}}')
    assert isinstance(heartbeat, HeartbeatMessage) and heartbeat.heartbeat.last_seq == 9

    error = parse_agent_message('{"id": 4, "ok": false, "error": {"code": "NotFound", "message": "no such key"}}')
    assert isinstance(error, Response) and not error.ok and error.error.code == "NotFound"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "line,problem",
    [
        ("not json", "not JSON"),
        ("[1]", "JSON list"),
        ('{"x": 1}', "none of 'id'"),
        ('{"event": {"seq": 1}}', "invalid 'event'"),
    ],
)
def test_bad_lines_are_clear_errors(line: str, problem: str) -> None:
    with pytest.raises(AgentProtocolError, match=problem):
        parse_agent_message(line)
