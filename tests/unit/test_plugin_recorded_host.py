"""kubectl jobnet logs reads from the host the JobRun status recorded (``user@address:port``)."""

from __future__ import annotations

import pytest

from jobnet.core.hosts import host_id
from jobnet.core.models import HostSpec
from jobnet.plugin.logs import recorded_host

JOBNET_HOST = HostSpec(address="vm1.batch.example", port=22, user="batch", credentials_secret="vm1-ssh")


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ("batch@vm1.batch.example:22", ("batch", "vm1.batch.example", 22)),
        ("etl@198.18.0.2:2222", ("etl", "198.18.0.2", 2222)),
        ("vm2.batch.example", ("batch", "vm2.batch.example", 22)),  # a bare address: the JobNet's user and port
    ],
)
def test_recorded_host(recorded: str, expected: tuple[str, str, int]) -> None:
    host = recorded_host(JOBNET_HOST, recorded)
    assert (host.user, host.address, host.port) == expected
    assert host.credentials_secret == "vm1-ssh"


def test_recorded_host_round_trips_host_id() -> None:
    assert recorded_host(JOBNET_HOST, host_id(JOBNET_HOST)) == JOBNET_HOST
