"""HostLink's read of the credentials Secret and its launch window, without I/O: a transient API
failure is retried (the launch has not left), a missing Secret fails at once, a long outage
becomes a not-delivered HostUnreachable; never the Secret's contents in a message."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from jobnet.kube.client import KubeApiError
from jobnet.kube.runtime import (
    CredentialsUnavailable,
    CredentialsUnreadable,
    HostLink,
    LinkKey,
    RuntimeConfig,
)
from jobnet.ssh import SshSettings
from jobnet.ssh.errors import AuthenticationFailed, HostUnreachable

SECRET_DATA = {
    "password": "s3cret-value",
    "knownHosts": "vm1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
}


@dataclass
class ScriptedSecretReads:
    """get_secret_data answering from a script: an exception to raise or the data to return."""

    answers: list[Any]
    calls: int = 0

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, Any]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)


@dataclass
class StubRuntime:
    client: ScriptedSecretReads
    config: RuntimeConfig = field(
        default_factory=lambda: RuntimeConfig(
            dispatch_timeout=0.4,
            max_inflight_launches_per_host=2,
            ssh=SshSettings(reconnect_backoff_min=0.01, reconnect_backoff_max=0.05),
        )
    )


def _link(answers: list[Any]) -> tuple[HostLink, ScriptedSecretReads]:
    reads = ScriptedSecretReads(answers)
    link = HostLink(LinkKey("batch", "vm1", 22, "runner", "vm-creds"), StubRuntime(reads))  # type: ignore[arg-type]
    return link, reads


def _unreachable() -> KubeApiError:
    return KubeApiError("reading Secret batch/vm-creds", None, "the API server is unreachable")


def test_a_transient_secret_read_failure_is_retried_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    link, reads = _link([_unreachable(), KubeApiError("reading Secret batch/vm-creds", 503, "busy"), SECRET_DATA])
    with caplog.at_level(logging.WARNING, logger="jobnet.runtime"):
        credentials = asyncio.run(link._credentials())
    assert credentials.password == "s3cret-value" and reads.calls == 3
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2, retries
    assert "cannot read credentials Secret batch/vm-creds" in retries[0] and "unreachable" in retries[0]


def test_a_secret_unreadable_past_the_deadline_is_not_delivered_not_an_authentication_failure() -> None:
    link, reads = _link([_unreachable()])
    with pytest.raises(CredentialsUnreadable) as raised:
        asyncio.run(link._credentials())
    assert isinstance(raised.value, HostUnreachable) and not isinstance(raised.value, AuthenticationFailed)
    assert raised.value.code == "HostUnreachable"
    assert "batch/vm-creds" in raised.value.message and "retried for 0.2s" in raised.value.message
    assert reads.calls >= 2  # retried, and (the loop being bounded by the deadline) stopped


@pytest.mark.parametrize("status", [404, 403])
def test_a_missing_or_forbidden_secret_fails_at_once(status: int) -> None:
    link, reads = _link([KubeApiError("reading Secret batch/vm-creds", status, 'secrets "vm-creds" not found')])
    with pytest.raises(CredentialsUnavailable) as raised:
        asyncio.run(link._credentials())
    assert reads.calls == 1
    assert raised.value.code == "AuthenticationFailed" and "batch/vm-creds" in raised.value.message


def test_a_secret_with_wrong_keys_names_them_and_never_the_values() -> None:
    link, _ = _link([{"passwd": "s3cret-value"}])
    with pytest.raises(CredentialsUnavailable) as raised:
        asyncio.run(link._credentials())
    assert "batch/vm-creds is not usable" in raised.value.message and "passwd" in raised.value.message
    assert "s3cret-value" not in raised.value.message


def test_the_launch_window_lets_n_launches_in_flight_per_host() -> None:
    link, _ = _link([SECRET_DATA])
    in_flight = peak = 0

    async def launch() -> None:
        nonlocal in_flight, peak
        async with link.launch_window:
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

    async def fan_out() -> None:
        await asyncio.wait_for(asyncio.gather(*(launch() for _ in range(10))), 5)

    asyncio.run(fan_out())
    assert peak == 2


def test_a_secret_with_a_binary_value_is_unusable_naming_the_secret_and_key() -> None:
    link, _ = _link([{"password": b"\xff\xfes3cret-value", "knownHosts": SECRET_DATA["knownHosts"].encode()}])
    with pytest.raises(CredentialsUnavailable) as raised:
        asyncio.run(link._credentials())
    assert raised.value.code == "AuthenticationFailed"
    assert "batch/vm-creds is not usable: key 'password' is not UTF-8 text" in raised.value.message
    assert "s3cret-value" not in raised.value.message
