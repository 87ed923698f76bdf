"""Typed messages of the agent protocol (docs/agent-protocol.md, version 1), operator side.

The watchdog agent is standard-library only and cannot use these models; both sides follow
docs/agent-protocol.md, which is the contract. Here the operator gets:

* :class:`JobKey` and :class:`JobRecord` (the agent's journal entry for one job execution);
* one request model per ``op`` (:class:`HelloRequest`, :class:`LaunchRequest`, ...), each
  serialised with :meth:`AgentRequest.wire` to the JSON object sent on the channel (minus ``id``,
  which the channel assigns);
* result models per op (:class:`HelloResult`, :class:`LaunchResult`, ...);
* :func:`parse_agent_message` turning one received line into a :class:`Response`,
  :class:`EventMessage` or :class:`HeartbeatMessage`.

Incoming messages ignore unknown fields (a newer agent may add some); outgoing requests
forbid them. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

#: The protocol version this operator speaks (``hello`` sends it; the agent refuses others).
PROTOCOL_VERSION = 1

#: The state of a :class:`JobRecord` in an agent's journal (the agent's vocabulary: what
#: happened to the process; the scheduler maps it to a ``jobnet.core.states.JobState``).
RecordState = Literal["accepted", "running", "exited", "killed", "timedOut", "failedToStart", "interrupted", "lost"]
TERMINAL_RECORD_STATES: frozenset[str] = frozenset(
    {"exited", "killed", "timedOut", "failedToStart", "interrupted", "lost"}
)
KillReason = Literal["stop", "timeout"]
#: ``reason`` of the record of a key the agent fenced before any launch of it arrived.
FENCED_REASON = "Fenced"
OutputStream = Literal["stdout", "stderr"]
ErrorCode = Literal["BadRequest", "NotFound", "UnsupportedProtocol", "Internal"]


class AgentProtocolError(ValueError):
    """A line from the agent that is not a valid protocol message."""


class _WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class _Incoming(_WireModel):
    model_config = ConfigDict(extra="ignore")


def key_text(run: str, path: str, attempt: int) -> str:
    """:meth:`JobKey.text` without building the model (the scheduler's hot path looks up
    records of every live job by it each round)."""
    return f"{run}:{path}#{attempt}"


class JobKey(_WireModel):
    """Identity of one job execution; every agent side effect is idempotent by it."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(min_length=1, description="The JobRun's uid.")
    path: str = Field(min_length=1, description="The job's path in the run, e.g. /nightly/load/step1.")
    attempt: int = Field(ge=1)

    def text(self) -> str:
        """The form used in logs and by ``jobnet-agent logs``: ``run:path#attempt``."""
        return key_text(self.run, self.path, self.attempt)

    def __str__(self) -> str:
        return self.text()


class KillRequested(_Incoming):
    """A kill delivered to the agent for this job (journalled before any signal is sent)."""

    reason: str | None = None
    at: float | None = None
    grace_seconds: float | None = None


class JobRecord(_Incoming):
    """The agent's journal entry for a job execution (one per state change, ordered by seq)."""

    key: JobKey
    seq: int = Field(ge=0)
    state: RecordState
    pid: int | None = None
    pgid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    accepted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    boot_id: str | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    kill_requested: KillRequested | str | bool | None = None
    acknowledged: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_RECORD_STATES

    @property
    def fenced(self) -> bool:
        """The agent claimed this key before any launch of it arrived: it never ran."""
        return self.state == "failedToStart" and self.reason == FENCED_REASON


# ---------------------------------------------------------------- requests


class AgentRequest(_WireModel):
    """Base of every request; ``op`` is fixed per subclass."""

    model_config = ConfigDict(extra="forbid")
    op: ClassVar[str]

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, **super().wire()}


class HelloRequest(AgentRequest):
    op: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    client: str


class LaunchRequest(AgentRequest):
    op: ClassVar[str] = "launch"
    key: JobKey
    script: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    timeout_seconds: int | None = Field(default=None, ge=1)


class KillRequest(AgentRequest):
    op: ClassVar[str] = "kill"
    key: JobKey
    reason: KillReason = "stop"
    grace_seconds: float | None = Field(default=None, ge=0)

    def wire(self) -> dict[str, Any]:
        message = super().wire()
        if self.grace_seconds is None:
            del message["graceSeconds"]
        return message


class FenceRequest(AgentRequest):
    """Claim ``key`` as never to run if the agent never saw it (docs/agent-protocol.md, Fence)."""

    op: ClassVar[str] = "fence"
    key: JobKey


class GetRequest(AgentRequest):
    op: ClassVar[str] = "get"
    key: JobKey


class ListRequest(AgentRequest):
    op: ClassVar[str] = "list"
    run: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"op": self.op} if self.run is None else super().wire()


class WatchRequest(AgentRequest):
    op: ClassVar[str] = "watch"
    from_seq: int = Field(default=0, ge=0)


class TailRequest(AgentRequest):
    op: ClassVar[str] = "tail"
    key: JobKey
    stream: OutputStream = "stdout"
    max_bytes: int = Field(default=4096, ge=0)


class ReadRequest(AgentRequest):
    op: ClassVar[str] = "read"
    key: JobKey
    stream: OutputStream = "stdout"
    offset: int = Field(default=0, ge=0)
    length: int = Field(ge=1)


class AckRequest(AgentRequest):
    op: ClassVar[str] = "ack"
    key: JobKey


class PingRequest(AgentRequest):
    op: ClassVar[str] = "ping"


# ---------------------------------------------------------------- results


class HelloResult(_Incoming):
    protocol: int
    agent_version: str
    boot_id: str
    hostname: str
    last_seq: int
    pid: int


class LaunchResult(_Incoming):
    record: JobRecord
    deduplicated: bool


class KillResult(_Incoming):
    record: JobRecord
    deduplicated: bool
    already_ended: bool


class FenceResult(_Incoming):
    record: JobRecord
    #: The key is fenced: it never ran and never will (a late launch of it is refused).
    fenced: bool


class RecordResult(_Incoming):
    """Result of ``get`` and ``ack``."""

    record: JobRecord


class ListResult(_Incoming):
    records: list[JobRecord]


class WatchResult(_Incoming):
    last_seq: int


class TailResult(_Incoming):
    data: str
    total_bytes: int
    dropped_bytes: int


class ReadResult(_Incoming):
    data: str = Field(description="base64")
    eof: bool


class PingResult(_Incoming):
    time: float


# ---------------------------------------------------------------- messages from the agent


class AgentErrorBody(_Incoming):
    code: str
    message: str


class Response(_Incoming):
    id: int
    ok: bool
    result: dict[str, Any] | None = None
    error: AgentErrorBody | None = None


class EventMessage(_Incoming):
    event: JobRecord


class Heartbeat(_Incoming):
    time: float
    last_seq: int


class HeartbeatMessage(_Incoming):
    heartbeat: Heartbeat


AgentMessage = Response | EventMessage | HeartbeatMessage

_MESSAGE_KINDS: dict[str, TypeAdapter[Any]] = {
    "id": TypeAdapter(Response),
    "event": TypeAdapter(EventMessage),
    "heartbeat": TypeAdapter(HeartbeatMessage),
}


def parse_agent_message(line: bytes | str) -> AgentMessage:
    """Parse one JSON line sent by the agent; raise :class:`AgentProtocolError` naming the problem."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise AgentProtocolError(f"agent sent a line that is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AgentProtocolError(f"agent sent a JSON {type(data).__name__}, expected an object")
    for marker, adapter in _MESSAGE_KINDS.items():
        if marker in data:
            try:
                return adapter.validate_python(data)  # type: ignore[no-any-return]
            except ValidationError as exc:
                raise AgentProtocolError(
                    f"agent sent an invalid {marker!r} message: {exc.errors(include_url=False)}"
                ) from None
    raise AgentProtocolError(f"agent sent an object with none of 'id', 'event', 'heartbeat': keys {sorted(data)}")
