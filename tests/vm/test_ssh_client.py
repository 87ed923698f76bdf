"""The operator's SSH edge against a real sshd in a namespace VM: pool, host keys, auth, installer."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest

from jobnet.ssh import (
    AgentInstaller,
    AgentInstallFailed,
    AuthenticationFailed,
    HostConnectionPool,
    HostKeyMismatch,
    HostUnreachable,
    SshCredentials,
    SshSettings,
    SshTarget,
    default_zipapp,
    run_command,
)
from jobnet.ssh.installer import AGENT_MISSING_STATUS
from tests.support.vm import NamespaceVM

FAST = SshSettings(
    connect_timeout=1.0, handshake_timeout=3.0, auth_timeout=3.0, reconnect_backoff_min=0.05, reconnect_backoff_max=0.2
)


def target(vm: NamespaceVM) -> SshTarget:
    return SshTarget(vm.address, 22, vm.user)


def key_credentials(vm: NamespaceVM) -> SshCredentials:
    return SshCredentials(known_hosts=vm.known_hosts, private_key=vm.client_key)


@pytest.fixture
def pool() -> HostConnectionPool:
    pool = HostConnectionPool(FAST)
    yield pool
    pool.close()


def _new_key(tmp_path: Path, key_type: str, fmt: str) -> tuple[str, str]:
    path = tmp_path / f"id_{key_type}_{fmt}"
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-m", fmt, "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.read_text(), Path(f"{path}.pub").read_text()


def test_one_transport_per_host_with_tcp_nodelay(vm: NamespaceVM, pool: HostConnectionPool) -> None:
    first = pool.transport(target(vm), key_credentials(vm))
    second = pool.transport(target(vm), key_credentials(vm))

    assert first is second and first.is_authenticated()
    assert first.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert run_command(first, "id -un", timeout=5, host=vm.address) == (0, f"{vm.user}\n", "")
    assert vm.read_sshd_log().count(f"Accepted publickey for {vm.user}") == 1


@pytest.mark.parametrize("key_type,fmt", [("rsa", "PEM"), ("ecdsa", "PEM"), ("ed25519", "RFC4716")])
def test_private_key_types_and_formats(
    vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path, key_type: str, fmt: str
) -> None:
    private, public = _new_key(tmp_path, key_type, fmt)
    vm.authorize_key(public)
    transport = pool.transport(target(vm), SshCredentials(known_hosts=vm.known_hosts, private_key=private))
    assert transport.is_authenticated()


def test_password_authentication(vm: NamespaceVM, pool: HostConnectionPool) -> None:
    transport = pool.transport(target(vm), SshCredentials(known_hosts=vm.known_hosts, password=vm.password))
    assert transport.is_authenticated()
    assert f"Accepted password for {vm.user}" in vm.read_sshd_log()


def test_wrong_key_is_authentication_failed_without_the_key_in_the_message(
    vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path
) -> None:
    private, _ = _new_key(tmp_path, "ed25519", "RFC4716")
    with pytest.raises(AuthenticationFailed) as failure:
        pool.transport(target(vm), SshCredentials(known_hosts=vm.known_hosts, private_key=private))
    assert failure.value.code == "AuthenticationFailed"
    assert vm.user in failure.value.message and "publickey" in failure.value.message
    secret_line = private.splitlines()[1]
    assert secret_line not in str(failure.value)


def test_wrong_password_is_authentication_failed(vm: NamespaceVM, pool: HostConnectionPool) -> None:
    with pytest.raises(AuthenticationFailed) as failure:
        pool.transport(target(vm), SshCredentials(known_hosts=vm.known_hosts, password="not-" + vm.password))
    assert vm.password not in str(failure.value) and "password" in failure.value.message


def test_changed_host_key_never_authenticates(vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path) -> None:
    _, other_host_key = _new_key(tmp_path, "ed25519", "RFC4716")
    known_hosts = f"{vm.address} {' '.join(other_host_key.split()[:2])}\n"

    with pytest.raises(HostKeyMismatch, match="does not match knownHosts") as failure:
        pool.transport(target(vm), SshCredentials(known_hosts=known_hosts, private_key=vm.client_key))

    assert failure.value.code == "HostKeyMismatch"
    log = vm.read_sshd_log()
    assert f"Connection from {vm.host_address}" in log  # it did connect ...
    assert "Accepted" not in log and "Postponed" not in log and "Failed" not in log  # ... but never authenticated


def test_hashed_known_hosts_entries_are_understood(vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(vm.known_hosts)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True, capture_output=True, timeout=10)
    hashed = known_hosts.read_text()
    assert hashed.startswith("|1|") and vm.address not in hashed
    assert pool.transport(target(vm), SshCredentials(known_hosts=hashed, private_key=vm.client_key)).is_authenticated()


def test_known_key_of_another_type_is_a_mismatch(vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path) -> None:
    _, ecdsa_host_key = _new_key(tmp_path, "ecdsa", "PEM")
    known_hosts = f"{vm.address} {' '.join(ecdsa_host_key.split()[:2])}\n"
    with pytest.raises(HostKeyMismatch, match="offers none of the host key types"):
        pool.transport(target(vm), SshCredentials(known_hosts=known_hosts, private_key=vm.client_key))
    assert "Accepted" not in vm.read_sshd_log()


def test_unknown_host_never_connects(vm: NamespaceVM, pool: HostConnectionPool) -> None:
    known_hosts = vm.known_hosts.replace(vm.address, "198.18.255.254")
    with pytest.raises(HostKeyMismatch, match=f"no host key for {vm.address}"):
        pool.transport(target(vm), SshCredentials(known_hosts=known_hosts, private_key=vm.client_key))
    assert f"Connection from {vm.host_address}" not in vm.read_sshd_log()


def test_host_down_is_host_unreachable(vm: NamespaceVM, pool: HostConnectionPool) -> None:
    vm.crash()  # sshd gone: connection refused
    with pytest.raises(HostUnreachable, match=f"cannot reach sshd at {vm.address}:22"):
        pool.transport(target(vm), key_credentials(vm))
    vm.cut()  # link down: timeout
    with pytest.raises(HostUnreachable, match=f"cannot reach sshd at {vm.address}:22"):
        pool.transport(target(vm), key_credentials(vm))


def test_reconnects_after_the_transport_dies(vm: NamespaceVM, pool: HostConnectionPool) -> None:
    first = pool.transport(target(vm), key_credentials(vm))
    vm.crash()
    vm.start()
    first.close()  # what the keepalive / channel reader notice on a real dead peer
    second = pool.transport(target(vm), key_credentials(vm))
    assert second is not first and second.is_authenticated()


def test_credentials_never_show_secrets(vm: NamespaceVM) -> None:
    creds = SshCredentials(known_hosts=vm.known_hosts, private_key=vm.client_key, password="hunter2")
    assert "hunter2" not in repr(creds) and "PRIVATE KEY" not in repr(creds)
    with pytest.raises(ValueError, match="unknown keys \\['passwd'\\]"):
        SshCredentials.from_secret_data({"passwd": "x", "knownHosts": vm.known_hosts})
    with pytest.raises(ValueError, match="knownHosts"):
        SshCredentials(known_hosts="", password="x")


def _dummy_zipapp(path: Path, greeting: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__main__.py", f"print({greeting!r})\n")
    return path


def test_installer_uploads_once_atomically_under_a_name_of_its_content(
    vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path
) -> None:
    transport = pool.transport(target(vm), key_credentials(vm))
    built = _dummy_zipapp(tmp_path / "a.pyz", "build-a")
    installer = AgentInstaller(built, "9.9.9")

    path = installer.ensure(transport, vm.address)
    uploaded = Path(path).stat().st_ino

    content = hashlib.sha256(built.read_bytes()).hexdigest()
    assert path == f"{vm.home}/.jobnet/jobnet-agent-9.9.9-{content[:16]}.pyz" == f"{vm.home}/{installer.remote_name}"
    assert run_command(transport, f"python3 {path}", timeout=10, host=vm.address)[1] == "build-a\n"
    assert AgentInstaller(installer.zipapp, "9.9.9").ensure(transport, vm.address) == path
    assert Path(path).stat().st_ino == uploaded  # not uploaded again
    assert sorted(p.name for p in (vm.home / ".jobnet").iterdir()) == [Path(path).name]

    rebuilt = AgentInstaller(_dummy_zipapp(tmp_path / "b.pyz", "build-b"), "9.9.9")
    other = rebuilt.ensure(transport, vm.address)
    assert other != path
    assert run_command(transport, f"python3 {other}", timeout=10, host=vm.address)[1] == "build-b\n"
    # The earlier build stays: a serve started from it may still import from it.
    assert sorted(p.name for p in (vm.home / ".jobnet").iterdir()) == sorted([Path(path).name, Path(other).name])


def test_start_command_runs_the_installed_zipapp_or_says_it_is_missing(
    vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path
) -> None:
    transport = pool.transport(target(vm), key_credentials(vm))
    installer = AgentInstaller(_dummy_zipapp(tmp_path / "a.pyz", "build-a"), "9.9.9")

    missing = run_command(transport, installer.start_command(), timeout=10, host=vm.address)
    installer.ensure(transport, vm.address)
    installed = run_command(transport, installer.start_command(), timeout=10, host=vm.address)

    assert missing[0] == AGENT_MISSING_STATUS
    assert installed[:2] == (0, "build-a\n")


def test_installer_says_clearly_when_python3_is_missing(
    vm: NamespaceVM, pool: HostConnectionPool, tmp_path: Path
) -> None:
    transport = pool.transport(target(vm), key_credentials(vm))
    installer = AgentInstaller(_dummy_zipapp(tmp_path / "a.pyz", "x"), "1.0", python="python3-missing-here")
    with pytest.raises(AgentInstallFailed, match="python3-missing-here not found on .*needs python3 >= 3.8"):
        installer.ensure(transport, vm.address)


def test_default_zipapp_is_built_from_the_installed_agent_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobnet_agent

    monkeypatch.delenv("JOBNET_AGENT_ZIPAPP", raising=False)
    built, version = default_zipapp(tmp_path / "cache")
    assert version == jobnet_agent.__version__
    assert zipfile.is_zipfile(built) and re.fullmatch(
        rf"jobnet-agent-{re.escape(version)}-[0-9a-f]{{16}}\.pyz", built.name
    )
    assert built.parent == tmp_path / "cache" and (tmp_path / "cache").stat().st_mode & 0o077 == 0

    # A cache that cannot be written (here a file in the way): built in a temporary directory.
    (tmp_path / "blocked").write_text("")
    elsewhere, _ = default_zipapp(tmp_path / "blocked" / "cache")
    assert zipfile.is_zipfile(elsewhere) and elsewhere.name == built.name and elsewhere.parent != built.parent

    monkeypatch.setenv("JOBNET_AGENT_ZIPAPP", str(built))
    assert default_zipapp(tmp_path / "elsewhere") == (built, version)
