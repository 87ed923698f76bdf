"""Message shapes of the agent protocol (docs/agent-protocol.md), validated. Pure: no I/O."""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Dict, List, Optional, Tuple

from jobnet_agent import PROTOCOL_VERSION
from jobnet_agent.frozen import Frozen, init_fields

ACCEPTED = "accepted"
RUNNING = "running"
EXITED = "exited"
KILLED = "killed"
TIMED_OUT = "timedOut"
FAILED_TO_START = "failedToStart"
INTERRUPTED = "interrupted"
LOST = "lost"

ACTIVE_STATES = frozenset([ACCEPTED, RUNNING])
TERMINAL_STATES = frozenset([EXITED, KILLED, TIMED_OUT, FAILED_TO_START, INTERRUPTED, LOST])

#: Reason of a key claimed by ``fence`` before any launch of it arrived: it never runs.
FENCED = "Fenced"
FENCED_MESSAGE = "fenced before it was launched: a newer attempt replaced it"

KILL_REASONS = ("stop", "timeout")
STREAMS = ("stdout", "stderr")

#: Largest ``read`` chunk served at once; bigger requests are answered with this much.
MAX_READ_LENGTH = 4 * 1024 * 1024
#: Records carry human text; keep every record line small whatever a failure message says.
MAX_MESSAGE_CHARS = 2000

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ProtocolError(Exception):
    """A request the agent refuses; ``code`` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> ProtocolError:
    return ProtocolError("BadRequest", message)


class JobKey(Frozen):
    """Identity of one job execution: (JobRun uid, job path, attempt)."""

    run: str
    path: str
    attempt: int

    def __init__(self, run: str, path: str, attempt: int) -> None:
        init_fields(self, run=run, path=path, attempt=attempt)

    def text(self) -> str:
        return f"{self.run}:{self.path}#{self.attempt}"

    def to_json(self) -> Dict[str, Any]:
        return {"run": self.run, "path": self.path, "attempt": self.attempt}

    @classmethod
    def from_json(cls, value: Any) -> JobKey:
        if not isinstance(value, dict):
            raise bad_request(f"key must be an object {{run, path, attempt}}, got {type(value).__name__}")
        unknown = sorted(set(value) - {"run", "path", "attempt"})
        if unknown:
            raise bad_request("key has unknown field(s): {}".format(", ".join(unknown)))
        run = _key_part(value, "run")
        path = _key_part(value, "path")
        attempt = value.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise bad_request(f"key.attempt must be an integer >= 1, got {attempt!r}")
        if ":" in run:
            raise bad_request(f"key.run must not contain ':' (got {run!r})")
        return cls(run=run, path=path, attempt=attempt)

    @classmethod
    def parse_text(cls, text: str) -> JobKey:
        """Parse the text form ``run:path#attempt``."""
        run, sep, rest = text.partition(":")
        path, hash_sep, attempt = rest.rpartition("#")
        if not sep or not hash_sep or not attempt.isdigit():
            raise ValueError(f"job key {text!r} is not of the form run:path#attempt (e.g. 6f1c:/nightly/load#1)")
        return cls.from_json({"run": run, "path": path, "attempt": int(attempt)})


def _key_part(value: Dict[str, Any], name: str) -> str:
    part = value.get(name)
    if not isinstance(part, str) or not part:
        raise bad_request(f"key.{name} must be a non-empty string, got {part!r}")
    if len(part) > 1024 or _CONTROL_CHARS.search(part):
        raise bad_request(f"key.{name} must be at most 1024 printable characters")
    return part


class JobRecord(Frozen):
    """The journal's knowledge of one job execution (the protocol's JobRecord).

    ``grace_seconds``, ``pid_start_ticks`` and ``supervisor_pid`` are the agent's own bookkeeping:
    kept in the journal, never sent over the wire.
    """

    key: JobKey
    state: str
    seq: int
    pid: Optional[int]
    pgid: Optional[int]
    exit_code: Optional[int]
    signal: Optional[int]
    reason: Optional[str]
    message: Optional[str]
    accepted_at: Optional[float]
    started_at: Optional[float]
    ended_at: Optional[float]
    boot_id: Optional[str]
    stdout_bytes: int
    stderr_bytes: int
    stdout_dropped: int
    stderr_dropped: int
    kill_requested: Optional[str]
    acknowledged: bool
    grace_seconds: Optional[float]
    pid_start_ticks: Optional[int]

    def __init__(
        self,
        key: JobKey,
        state: str,
        seq: int = 0,
        pid: Optional[int] = None,
        pgid: Optional[int] = None,
        exit_code: Optional[int] = None,
        signal: Optional[int] = None,
        reason: Optional[str] = None,
        message: Optional[str] = None,
        accepted_at: Optional[float] = None,
        started_at: Optional[float] = None,
        ended_at: Optional[float] = None,
        boot_id: Optional[str] = None,
        stdout_bytes: int = 0,
        stderr_bytes: int = 0,
        stdout_dropped: int = 0,
        stderr_dropped: int = 0,
        kill_requested: Optional[str] = None,
        acknowledged: bool = False,
        grace_seconds: Optional[float] = None,
        pid_start_ticks: Optional[int] = None,
    ) -> None:
        init_fields(
            self,
            key=key,
            state=state,
            seq=seq,
            pid=pid,
            pgid=pgid,
            exit_code=exit_code,
            signal=signal,
            reason=reason,
            message=message,
            accepted_at=accepted_at,
            started_at=started_at,
            ended_at=ended_at,
            boot_id=boot_id,
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            stdout_dropped=stdout_dropped,
            stderr_dropped=stderr_dropped,
            kill_requested=kill_requested,
            acknowledged=acknowledged,
            grace_seconds=grace_seconds,
            pid_start_ticks=pid_start_ticks,
        )

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES

    def replace(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` (field names as attributes). A record changes a few times per
        job in every agent process, so this copies the fields instead of rebuilding the record
        through ``__init__`` (10x the cost)."""
        unknown = changes.keys() - _RECORD_FIELDS
        if unknown:
            raise TypeError(f"JobRecord has no field(s) {sorted(unknown)}")
        message = changes.get("message")
        if message is not None and len(message) > MAX_MESSAGE_CHARS:
            changes["message"] = message[: MAX_MESSAGE_CHARS - 3] + "..."
        copy = object.__new__(JobRecord)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def to_wire(self) -> Dict[str, Any]:
        return {
            "key": self.key.to_json(),
            "seq": self.seq,
            "state": self.state,
            "pid": self.pid,
            "pgid": self.pgid,
            "exitCode": self.exit_code,
            "signal": self.signal,
            "reason": self.reason,
            "message": self.message,
            "acceptedAt": self.accepted_at,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "bootId": self.boot_id,
            "stdoutBytes": self.stdout_bytes,
            "stderrBytes": self.stderr_bytes,
            "stdoutDropped": self.stdout_dropped,
            "stderrDropped": self.stderr_dropped,
            "killRequested": self.kill_requested,
            "acknowledged": self.acknowledged,
        }

    def to_stored(self) -> Dict[str, Any]:
        stored = self.to_wire()
        stored["_graceSeconds"] = self.grace_seconds
        stored["_pidStartTicks"] = self.pid_start_ticks
        return stored

    @classmethod
    def from_stored(cls, data: Dict[str, Any]) -> JobRecord:
        return cls(
            key=JobKey.from_json(data["key"]),
            state=data["state"],
            seq=data["seq"],
            pid=data.get("pid"),
            pgid=data.get("pgid"),
            exit_code=data.get("exitCode"),
            signal=data.get("signal"),
            reason=data.get("reason"),
            message=data.get("message"),
            accepted_at=data.get("acceptedAt"),
            started_at=data.get("startedAt"),
            ended_at=data.get("endedAt"),
            boot_id=data.get("bootId"),
            stdout_bytes=data.get("stdoutBytes", 0),
            stderr_bytes=data.get("stderrBytes", 0),
            stdout_dropped=data.get("stdoutDropped", 0),
            stderr_dropped=data.get("stderrDropped", 0),
            kill_requested=data.get("killRequested"),
            acknowledged=data.get("acknowledged", False),
            grace_seconds=data.get("_graceSeconds"),
            pid_start_ticks=data.get("_pidStartTicks"),
        )

    def describe_end(self) -> str:
        """How a person would say how this job ended, e.g. ``exited with code 0``."""
        if self.state == EXITED:
            return f"exited with code {self.exit_code}"
        if self.state == KILLED:
            return "stopped"
        if self.state == TIMED_OUT:
            return "timed out"
        return self.state


_RECORD_FIELDS = frozenset(JobRecord._fields)
#: The keys of a stored record (:meth:`JobRecord.to_stored`), in order, and those of them never sent.
_STORED_ORDER = tuple(JobRecord(key=JobKey(run="r", path="/p", attempt=1), state=ACCEPTED).to_stored())
_STORED_KEYS = frozenset(_STORED_ORDER)
_INTERNAL_KEYS = ("_graceSeconds", "_pidStartTicks")


class LaunchSpec(Frozen):
    """What to run for a key."""

    script: str
    args: List[str]
    env: Dict[str, str]
    working_dir: Optional[str]
    timeout_seconds: Optional[int]

    def __init__(
        self,
        script: str,
        args: List[str],
        env: Dict[str, str],
        working_dir: Optional[str],
        timeout_seconds: Optional[int],
    ) -> None:
        init_fields(self, script=script, args=args, env=env, working_dir=working_dir, timeout_seconds=timeout_seconds)

    def to_json(self) -> Dict[str, Any]:
        return {
            "script": self.script,
            "args": list(self.args),
            "env": dict(self.env),
            "workingDir": self.working_dir,
            "timeoutSeconds": self.timeout_seconds,
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> LaunchSpec:
        script = data.get("script")
        if not isinstance(script, str) or not script:
            raise bad_request("script must be a non-empty string (absolute path of the executable)")
        if not script.startswith("/"):
            raise bad_request(f"script must be an absolute path, got {script!r}")
        if "\x00" in script:
            raise bad_request("script must not contain NUL characters")
        args = data.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) and "\x00" not in a for a in args):
            raise bad_request("args must be a list of strings without NUL characters")
        env = data.get("env", {})
        if not isinstance(env, dict):
            raise bad_request("env must be an object of string values")
        for name, value in env.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise bad_request(f"env name {name!r} is not a valid variable name")
            if not isinstance(value, str) or "\x00" in value:
                raise bad_request(f"env {name} must be a string without NUL characters")
        working_dir = data.get("workingDir")
        if working_dir is not None and (not isinstance(working_dir, str) or not working_dir):
            raise bad_request("workingDir must be a non-empty string or null")
        timeout = data.get("timeoutSeconds")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1):
            raise bad_request(f"timeoutSeconds must be an integer >= 1 or null, got {timeout!r}")
        return cls(script=script, args=list(args), env=dict(env), working_dir=working_dir, timeout_seconds=timeout)


class Request(Frozen):
    id: int
    op: str
    args: Dict[str, Any]

    def __init__(self, id: int, op: str, args: Dict[str, Any]) -> None:
        init_fields(self, id=id, op=op, args=args)


_OPS = ("hello", "launch", "kill", "fence", "get", "list", "watch", "tail", "read", "ack", "ping")


def parse_request(line: str) -> Request:
    """Parse one request line; raises ProtocolError (with the id when it could be read)."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise bad_request(f"request is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("request must be a JSON object")
    request_id = data.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise bad_request("request needs an integer id")
    op = data.get("op")
    if op not in _OPS:
        raise RequestError(request_id, bad_request("unknown op {!r}; known: {}".format(op, ", ".join(_OPS))))
    args = {k: v for k, v in data.items() if k not in ("id", "op")}
    return Request(id=request_id, op=op, args=args)


class RequestError(ProtocolError):
    """A ProtocolError for a request whose id is known, so the answer can carry it."""

    def __init__(self, request_id: int, error: ProtocolError) -> None:
        super().__init__(error.code, error.message)
        self.request_id = request_id


def check_hello(args: Dict[str, Any]) -> None:
    protocol = args.get("protocol")
    if protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            "UnsupportedProtocol",
            f"agent speaks protocol {PROTOCOL_VERSION}, client asked for {protocol!r}",
        )


def kill_args(args: Dict[str, Any], default_grace: float) -> Tuple[float, str]:
    grace = args.get("graceSeconds")
    if grace is None:
        grace = default_grace
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0 or grace > 86400:
        raise bad_request(f"graceSeconds must be a number between 0 and 86400, got {grace!r}")
    reason = args.get("reason", "stop")
    if reason not in KILL_REASONS:
        raise bad_request(f"reason must be 'stop' or 'timeout', got {reason!r}")
    return float(grace), reason


def stream_arg(args: Dict[str, Any]) -> str:
    stream = args.get("stream", "stdout")
    if stream not in STREAMS:
        raise bad_request(f"stream must be 'stdout' or 'stderr', got {stream!r}")
    return str(stream)


def int_arg(args: Dict[str, Any], name: str, default: Optional[int] = None, minimum: int = 0) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise bad_request(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def optional_run_arg(args: Dict[str, Any]) -> Optional[str]:
    run = args.get("run")
    if run is not None and (not isinstance(run, str) or not run):
        raise bad_request("run must be a non-empty string when given")
    return run


def encode(message: Dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def ok(request_id: int, result: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error(request_id: Optional[int], code: str, message: str) -> Dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def event(record: JobRecord) -> Dict[str, Any]:
    return {"event": record.to_wire()}


def stored_event(stored: Dict[str, Any]) -> Dict[str, Any]:
    """The event of a record as the journal stores it (:meth:`JobRecord.to_stored`): the same
    message as :func:`event` of the record, without building one when it is as stored today."""
    if stored.keys() != _STORED_KEYS:
        return event(JobRecord.from_stored(stored))  # older or newer: as the record reads it
    wire = dict(stored)
    for name in _INTERNAL_KEYS:
        del wire[name]
    return {"event": wire}


#: A JSON string as the agent encodes it (a regex of bytes): shared by the patterns that read
#: event log entries without decoding them (here and in ``jobnet_agent.eventlog``).
JSON_STRING = rb'"(?:[^"\\]|\\.)*"'


@functools.lru_cache(maxsize=None)
def _stored_entry_pattern() -> re.Pattern[bytes]:
    """An event log entry whose record is exactly as :meth:`JobRecord.to_stored` writes it today
    (its members in that order, each a JSON scalar, the key an object of three): group 1 its seq,
    group 2 its record up to the members never sent.

    Compiled at its first use, not at import: 18 M instructions, 12 % of ``serve``'s start until
    hello, which the supervising process and a person's commands never need, and ``serve`` only
    once a watch streams an event."""
    scalar = rb"(?:null|true|false|-?[0-9][-+.0-9eE]*|" + JSON_STRING + rb")"
    key = rb'\{"run":' + scalar + rb',"path":' + scalar + rb',"attempt":' + scalar + rb"\}"
    sent = [name for name in _STORED_ORDER if name not in _INTERNAL_KEYS]
    assert sent[0] == "key" and _STORED_ORDER[len(sent) :] == _INTERNAL_KEYS, "to_stored's order changed"
    members = [rb'"key":' + key] + [b'"%s":' % name.encode() + scalar for name in sent[1:]]
    internal = b"".join(b',"%s":' % name.encode() + scalar for name in _INTERNAL_KEYS)
    return re.compile(rb'\{"seq":([0-9]+),"record":(\{' + b",".join(members) + rb")" + internal + rb"\}\}")


def watched_event(line: bytes) -> Optional[Tuple[int, bytes]]:
    """An event log line as the watch stream sends it: (seq, the encoded :func:`stored_event`
    message), without decoding and encoding the record when it is stored as today (its JSON is
    the wire's, but for the members never sent, which come last). None for an entry that is no
    event (a compaction's marker). Raises ValueError for a line that is no JSON."""
    match = _stored_entry_pattern().fullmatch(line)
    if match is not None:
        return int(match.group(1)), b'{"event":' + match.group(2) + b"}}\n"
    entry = json.loads(line.decode("utf-8"))
    if "record" not in entry:
        return None
    return int(entry["seq"]), encode(stored_event(entry["record"]))


def heartbeat(now: float, last_seq: int) -> Dict[str, Any]:
    return {"heartbeat": {"time": now, "lastSeq": last_seq}}
