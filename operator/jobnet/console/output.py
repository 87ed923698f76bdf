"""The job monitor's full output of a job, read from the agent on the job's VM as the viewer, like
``kubectl jobnet logs`` (the credentials Secret the job's host names, read with the viewer's
identity; host keys verified): a page at a byte offset, the last page, and the bytes a running
job writes after it. Blocking calls (SSH), run in a worker thread by the server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from jobnet.plugin.logs import READ_CHUNK, AgentOutputReader, JobLocation, LogsOptions
from jobnet.plugin.view import PluginError

#: Bytes of output the job monitor shows at first (the end) and loads per "earlier output".
OUTPUT_PAGE_BYTES = 64 * 1024
#: How often the stream asks the agent for more output of a running job, in seconds.
FOLLOW_POLL_SECONDS = 0.3

T = TypeVar("T")
P = ParamSpec("P")


class OutputRefused(Exception):
    """The output cannot be read: why (for the page), with the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def from_line_start(data: bytes, start: int) -> tuple[int, bytes]:
    """A page cut at ``start`` > 0 may begin inside a line (or a character): it then begins after
    its first newline, if it has one. Returns the new start and the bytes."""
    if start == 0:
        return start, data
    newline = data.find(b"\n")
    if newline < 0 or newline == len(data) - 1:
        return start, data
    return start + newline + 1, data[newline + 1 :]


class OutputReader:
    """One agent channel to the job's VM (blocking calls; :meth:`run` runs one in a thread)."""

    def __init__(self, source: OutputSource) -> None:
        self.source = source
        try:
            self.reader = AgentOutputReader(source.location, source.secret, source.options)
        except _reading_errors() as error:
            raise _refusal(source.location, error) from None

    def read_page(self, offset: int, length: int | None) -> tuple[bytes, bool]:
        """Up to ``length`` (at most ``READ_CHUNK``) stored bytes from ``offset``, and whether
        the job ended and nothing is stored beyond them."""
        location, stream = self.source.location, self.source.options.stream
        try:
            chunk = self.reader.read(location.key, stream, offset, min(length or READ_CHUNK, READ_CHUNK))
        except _reading_errors() as error:
            raise _refusal(location, error) from None
        return base64.b64decode(chunk.data), chunk.eof

    def last_page(self) -> tuple[int, str, int]:
        """The last :data:`OUTPUT_PAGE_BYTES` stored (from a line start): start, text, end."""
        location, stream = self.source.location, self.source.options.stream
        try:
            sizes = self.reader.tail(location.key, stream, 0)
        except _reading_errors() as error:
            raise _refusal(location, error) from None
        stored = sizes.total_bytes - sizes.dropped_bytes
        start = max(0, stored - OUTPUT_PAGE_BYTES)
        data = b""
        while start + len(data) < stored:  # at most OUTPUT_PAGE_BYTES / READ_CHUNK reads
            page, _ = self.read_page(start + len(data), stored - start - len(data))
            if not page:
                break
            data += page
        start, data = from_line_start(data, start)
        return start, data.decode(errors="replace"), start + len(data)

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call(*args, **kwargs)`` in a worker thread."""
        return await asyncio.to_thread(call, *args, **kwargs)

    def close(self) -> None:
        self.reader.close()


@dataclass(frozen=True)
class OutputSource:
    """Where a job's output is (its current attempt's key and host) and how to log in there."""

    location: JobLocation
    #: the credentials Secret's data (a private key or password): never in a repr, so never in a log
    secret: dict[str, str] = field(repr=False)
    options: LogsOptions

    def open(self) -> OutputReader:
        return OutputReader(self)

    async def opened(self) -> OutputReader:
        """:meth:`open` in a worker thread; when the caller is cancelled meanwhile (the page went
        away), the reader is closed as soon as it is open."""
        opening = asyncio.ensure_future(asyncio.to_thread(self.open))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)
            raise

    async def call(self, use: Callable[[OutputReader], T]) -> T:
        """Open a reader, ``use`` it and close it again, in a worker thread."""

        def once() -> T:
            reader = self.open()
            try:
                return use(reader)
            finally:
                reader.close()

        return await asyncio.to_thread(once)


def _close_opened(opening: asyncio.Future[OutputReader]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _reading_errors() -> tuple[type[Exception], ...]:
    """What reading from a VM may raise (SSH, and so paramiko, is imported when first needed)."""
    from jobnet.ssh import AgentRequestFailed, SshError

    return (AgentRequestFailed, SshError, PluginError)


def _refusal(location: JobLocation, error: Exception) -> OutputRefused:
    from jobnet.ssh import AgentRequestFailed, SshError

    if isinstance(error, AgentRequestFailed):
        if error.agent_code == "NotFound":
            return OutputRefused(
                f"the agent on {location.host.address} no longer has the output of {location.key}", 502
            )
        return OutputRefused(f"the agent on {location.host.address} refused: {error.message}", 502)
    if isinstance(error, SshError):
        return OutputRefused(f"cannot read the output from the VM: {error.message}", 502)
    return OutputRefused(str(error))
