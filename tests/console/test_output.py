"""The job monitor's full output: pages begin at a line start; the credentials it reads with stay out of reprs."""

from __future__ import annotations

import pytest

from jobnet.console.output import OutputSource, from_line_start
from jobnet.core.agentproto import JobKey
from jobnet.core.models import HostSpec
from jobnet.plugin.logs import JobLocation, LogsOptions


@pytest.mark.parametrize(
    ("data", "start", "expected"),
    [
        (b"one\ntwo\n", 0, (0, b"one\ntwo\n")),  # the very start is a line start
        (b"ne\ntwo\n", 1, (4, b"two\n")),  # cut inside a line: from the next one
        (b"\ntwo\n", 3, (4, b"two\n")),  # cut just before a newline
        (b"no newline at all", 9, (9, b"no newline at all")),  # one long line: kept whole
        (b"tail only\n", 5, (5, b"tail only\n")),  # nothing after the only newline: kept
    ],
)
def test_a_page_cut_inside_a_line_begins_at_the_next_line(data: bytes, start: int, expected: tuple[int, bytes]) -> None:
    assert from_line_start(data, start) == expected


def test_an_output_source_keeps_the_credentials_out_of_its_repr() -> None:
    """A repr reaches logs (an exception's message, a debug line): the Secret's data never does."""
    host = HostSpec(address="vm1", user="batch", credentials_secret="vm1-ssh")
    location = JobLocation(key=JobKey(run="uid-1", path="/n/a", attempt=1), host=host, output_tail=None)
    secret = {"privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nkey-material", "password": "hunter2"}
    source = OutputSource(location=location, secret=secret, options=LogsOptions(path="/n/a"))
    text = repr(source)
    assert "key-material" not in text and "hunter2" not in text
    assert "vm1-ssh" in text and "/n/a" in text  # what the source is stays visible
