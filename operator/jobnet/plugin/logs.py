"""``kubectl jobnet logs``: a job's full output, streamed from the agent on its VM.

The status of a JobRun only keeps a short tail; the agent keeps the whole output (capped in the
middle) under the job's key ``(run uid, path, attempt)``. This command connects like the
operator does — the host, port and user of the job's expanded JobNet, the credentials Secret
that host names, host keys always verified against its ``knownHosts`` — opens an agent channel
(``serve``) and reads the output with the protocol's ``read`` op (``tail`` for ``--tail N``).

When the agent cannot be reached (or no longer has the job) it says so on stderr and prints the
tail kept in the status instead, exiting with :data:`EXIT_FELL_BACK`.
"""

from __future__ import annotations

import base64
import os
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TextIO

from jobnet.core.agentproto import (
    JobKey,
    OutputStream,
    ReadRequest,
    ReadResult,
    TailRequest,
    TailResult,
)
from jobnet.core.annotations import resolve_path
from jobnet.core.hosts import host_id
from jobnet.core.models import HostSpec
from jobnet.plugin.view import JobRunView, PluginError

if TYPE_CHECKING:
    from jobnet.plugin.kube import PluginKube

EXIT_FELL_BACK = 3
#: Bytes asked for per ``read`` request.
READ_CHUNK = 256 * 1024
#: Bytes of the output end fetched for ``--tail N`` (the lines are cut from them).
TAIL_BYTES = 1024 * 1024
#: How often ``--follow`` asks for more output of a running job, in seconds.
FOLLOW_POLL_SECONDS = 0.3
#: ``serve`` options the operator uses on the VMs, shell-quoted (e.g. a non-default --state-dir).
SERVE_ARGS_ENV = "JOBNET_AGENT_SERVE_ARGS"


@dataclass(frozen=True)
class LogsOptions:
    path: str
    stream: OutputStream = "stdout"
    follow: bool = False
    tail_lines: int | None = None
    timeout: float | None = None
    ssh_timeout: float = 10.0
    serve_args: tuple[str, ...] = ()
    #: NAME -> ADDRESS to connect to for a host named NAME (as the operator's ``--host-alias``).
    host_aliases: tuple[tuple[str, str], ...] = ()


def serve_args_from_environment() -> tuple[str, ...]:
    return tuple(shlex.split(os.environ.get(SERVE_ARGS_ENV, "")))


@dataclass(frozen=True)
class JobLocation:
    """Where a job's output lives: its agent key and its host."""

    key: JobKey
    host: HostSpec
    output_tail: str | None


def recorded_host(host: HostSpec, recorded: str) -> HostSpec:
    """``host`` moved to where the status says the job ran: ``user@address:port`` (the runtime's
    :func:`~jobnet.core.hosts.host_id`); a bare address keeps the JobNet's user and port."""
    user, _, rest = recorded.rpartition("@")
    address, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit():
        address, port = rest, str(host.port)
    return host.model_copy(update={"user": user or host.user, "address": address, "port": int(port)})


def locate(view: JobRunView, raw_path: str) -> JobLocation:
    """The key and host of the job at ``raw_path`` (its current attempt); clear errors otherwise."""
    if view.graph is None:
        raise PluginError(f"cannot find the job's host: {view.graph_problem}")
    path, problem = resolve_path(view.graph, raw_path)
    if path is None:
        raise PluginError(problem or f"unknown path {raw_path!r}")
    node = view.graph.nodes[path]
    if node.kind != "job":
        raise PluginError(f"{path} is a jobnet, not a job: name one of its jobs, e.g. {node.children[0]}")
    entry = view.status.jobs.get(path)
    if entry is None or not entry.attempt:
        state = entry.state if entry else "Pending"
        raise PluginError(f"{path} is {state} and was never launched: it has no output yet")
    if node.host is None:
        raise PluginError(f"{path} has no host in its JobNet")
    host = node.host
    if entry.host and entry.host != host_id(host):
        # The JobNet was edited since the job ran; the output is where it ran.
        host = recorded_host(host, entry.host)
    key = JobKey(run=view.uid, path=path, attempt=entry.attempt)
    return JobLocation(key=key, host=host, output_tail=entry.output_tail)


class AgentOutputReader:
    """One agent channel to the job's VM, for reading output (blocking)."""

    def __init__(self, location: JobLocation, secret: dict[str, str], options: LogsOptions) -> None:
        from jobnet.ssh import (
            AgentChannel,
            AgentInstaller,
            HostConnectionPool,
            SshCredentials,
            SshSettings,
            SshTarget,
            default_zipapp,
        )

        try:
            credentials = SshCredentials.from_secret_data(secret)
        except ValueError as error:
            raise PluginError(f"Secret {location.host.credentials_secret!r}: {error}") from None
        timeout = options.ssh_timeout
        self.pool = HostConnectionPool(
            SshSettings(
                connect_timeout=timeout,
                handshake_timeout=timeout,
                auth_timeout=timeout,
                host_aliases=dict(options.host_aliases),
            )
        )
        target = SshTarget(location.host.address, location.host.port, location.host.user)
        try:
            transport = self.pool.transport(target, credentials)
            installer = AgentInstaller(*default_zipapp(), timeout=timeout)
            self.channel, _ = installer.start_serve(
                transport,
                location.host.address,
                lambda command: AgentChannel(
                    transport, command, host=str(target), request_timeout=timeout, open_timeout=timeout
                ),
                client="kubectl-jobnet",
                serve_args=options.serve_args,
            )
        except BaseException:
            self.pool.close()
            raise

    def read(self, key: JobKey, stream: OutputStream, offset: int, length: int = READ_CHUNK) -> ReadResult:
        request = ReadRequest(key=key, stream=stream, offset=offset, length=length)
        return self.channel.call(request, ReadResult)

    def tail(self, key: JobKey, stream: OutputStream, max_bytes: int) -> TailResult:
        request = TailRequest(key=key, stream=stream, max_bytes=max_bytes)
        return self.channel.call(request, TailResult)

    def close(self) -> None:
        self.channel.close()
        self.pool.close()


def _last_lines(data: bytes, count: int) -> bytes:
    if count <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


def copy_output(reader: AgentOutputReader, key: JobKey, options: LogsOptions, out: BinaryIO) -> None:
    """Write the job's output to ``out``; with ``follow``, until the job ended (or the timeout)."""
    offset = 0
    if options.tail_lines is not None:
        tail = reader.tail(key, options.stream, TAIL_BYTES)
        out.write(_last_lines(tail.data.encode(), options.tail_lines))
        out.flush()
        offset = tail.total_bytes - tail.dropped_bytes  # what is stored: the next read starts there
        if not options.follow:
            return
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    while True:
        chunk = reader.read(key, options.stream, offset)
        data = base64.b64decode(chunk.data)
        if data:
            out.write(data)
            out.flush()
            offset += len(data)
            continue
        if chunk.eof or not options.follow:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"the job still runs after --timeout {options.timeout:g}s")
        time.sleep(FOLLOW_POLL_SECONDS)


def run_logs(kube: PluginKube, run: str, options: LogsOptions, out: BinaryIO, err: TextIO, label: str) -> int:
    """The ``logs`` command (``label`` starts its messages, e.g. ``kubectl jobnet logs``); returns its exit status."""
    from jobnet.ssh import AgentRequestFailed, SshError

    view = kube.jobrun_view(run)
    location = locate(view, options.path)
    secret = kube.secret_data(location.host.credentials_secret)
    try:
        reader = AgentOutputReader(location, secret, options)
        try:
            copy_output(reader, location.key, options, out)
        finally:
            reader.close()
    except AgentRequestFailed as error:
        problem = (
            f"the agent on {location.host.address} has no output of {location.key} (removed after its retention?)"
            if error.agent_code == "NotFound"
            else f"the agent on {location.host.address} refused: {error.message}"
        )
        return _fall_back(location, problem, err, out, label)
    except SshError as error:
        return _fall_back(location, f"cannot read the output from the VM: {error.message}", err, out, label)
    except TimeoutError as error:
        err.write(f"{label}: {error}\n")
        return 1
    return 0


def _fall_back(location: JobLocation, problem: str, err: TextIO, out: BinaryIO, label: str) -> int:
    if location.output_tail:
        err.write(
            f"{label}: {problem}\n"
            f"{label}: showing the output tail kept in the JobRun status instead "
            f"(at most the last {len(location.output_tail)} characters):\n"
        )
        err.flush()
        out.write(location.output_tail.encode())
        out.flush()
    else:
        err.write(f"{label}: {problem}\n{label}: the JobRun status has no output tail of this job either\n")
    return EXIT_FELL_BACK
