"""One SSH transport per (address, port, user), host keys always verified.

Measured on loopback (docs/../shared/reference.md): a new connection costs ~250 ms, a new
session on a warm transport ~44 ms without TCP_NODELAY and ~0.25 ms with it. So the pool keeps
one long-lived paramiko Transport per host, sets TCP_NODELAY, sends keepalives and bounds how
long unacknowledged data may sit on a dead connection (TCP_USER_TIMEOUT), so a cut link turns
into :class:`~jobnet.ssh.errors.ConnectionLost` instead of a hang.

Host keys are checked against the ``knownHosts`` text of the credentials Secret, before
authentication: an unknown or changed key raises :class:`HostKeyMismatch` and the connection is
closed without ever sending credentials. Only the key types known for the host are negotiated.

The pool is thread-safe and blocking; asyncio callers use :meth:`HostConnectionPool.atransport`
(runs in a worker thread).
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import paramiko

from jobnet.core.hosts import host_id
from jobnet.ssh.errors import AuthenticationFailed, ConnectionLost, HostKeyMismatch, HostUnreachable, SshError

log = logging.getLogger(__name__)

#: known_hosts key type -> host key algorithms that prove it (an RSA key signs with SHA-2).
_ALGORITHMS_FOR_KEY_TYPE = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


@dataclass(frozen=True)
class SshTarget:
    """Where to connect: the pool keeps one transport per target."""

    address: str
    port: int = 22
    user: str = "root"

    def __str__(self) -> str:
        return host_id(self)

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts (``[addr]:port`` for a non-default port)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


#: Keys a credentials Secret may hold. ``ssh-privatekey`` is the key of Kubernetes' standard
#: ``kubernetes.io/ssh-auth`` Secret type; ``privateKey`` is ours (either, not both).
PRIVATE_KEY_KEYS = ("privateKey", "ssh-privatekey")
SECRET_KEYS = (*PRIVATE_KEY_KEYS, "password", "knownHosts")


def _secret_text(key: str, value: str | bytes) -> str:
    """A Secret value as text; a clear error naming the key (never the value) when it is not."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"key {key!r} is not UTF-8 text (a binary value? keys are PEM/OpenSSH text)") from None


@dataclass(frozen=True, repr=False)
class SshCredentials:
    """The credentials Secret's content: a private key and/or ``password``, and ``knownHosts``."""

    known_hosts: str
    private_key: str | None = None
    password: str | None = None
    #: the Secret key the private key came from (named in errors)
    private_key_source: str = "privateKey"

    def __post_init__(self) -> None:
        if not self.private_key and not self.password:
            raise ValueError("SSH credentials need privateKey (or ssh-privatekey) or password (none given)")
        if not self.known_hosts.strip():
            raise ValueError("SSH credentials need knownHosts: host keys are always verified")

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str | bytes]) -> SshCredentials:
        """From a Secret's decoded ``data`` (keys privateKey or ssh-privatekey, password,
        knownHosts). Every value is checked now, so a malformed Secret is an error naming the key
        (never its content) before anything is sent to a VM."""
        unknown = sorted(set(data) - set(SECRET_KEYS))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; expected {', '.join(SECRET_KEYS)}")
        text = {key: _secret_text(key, value) for key, value in data.items()}
        key_sources = [key for key in PRIVATE_KEY_KEYS if key in text]
        if len(key_sources) > 1:
            raise ValueError(f"keys {key_sources} both hold a private key: keep one")
        source = key_sources[0] if key_sources else PRIVATE_KEY_KEYS[0]
        credentials = cls(
            known_hosts=text.get("knownHosts", ""),
            private_key=text.get(source),
            password=text.get("password"),
            private_key_source=source,
        )
        credentials.host_keys()
        credentials.private_key_object()
        return credentials

    def __repr__(self) -> str:
        parts = ["privateKey=<hidden>" if self.private_key else "", "password=<hidden>" if self.password else ""]
        return (
            f"SshCredentials({', '.join(p for p in parts if p)}, knownHosts={len(self.known_hosts.splitlines())} lines)"
        )

    def host_keys(self) -> paramiko.HostKeys:
        """Parse knownHosts; a malformed line is a clear error naming its line number."""
        keys = paramiko.HostKeys()
        for number, line in enumerate(self.known_hosts.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
            except (paramiko.SSHException, ValueError) as exc:
                raise ValueError(f"key 'knownHosts' line {number} is not a valid known_hosts entry: {exc}") from None
            if entry is None:
                raise ValueError(f"key 'knownHosts' line {number} is not a valid known_hosts entry")
            keys._entries.append(entry)
        return keys

    def private_key_object(self) -> paramiko.PKey | None:
        if not self.private_key:
            return None
        for key_class in _KEY_CLASSES:
            try:
                return key_class.from_private_key(io.StringIO(self.private_key), password=self.password)
            except (paramiko.SSHException, ValueError, TypeError):
                continue
        raise ValueError(
            f"key {self.private_key_source!r} is not a readable ed25519, ECDSA or RSA private key "
            "(PEM or OpenSSH format, unencrypted or encrypted with the password)"
        )


@dataclass(frozen=True)
class SshSettings:
    """Every deadline of the SSH edge (seconds)."""

    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    auth_timeout: float = 10.0
    keepalive_interval: float = 5.0
    #: unacknowledged data older than this aborts the TCP connection (a cut becomes an error).
    dead_connection_timeout: float = 15.0
    reconnect_backoff_min: float = 0.2
    reconnect_backoff_max: float = 10.0
    #: host name -> address to connect to instead of resolving the name (like a pod's
    #: ``hostAliases``); the host key is still looked up in knownHosts under the name.
    host_aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _HostState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    transport: paramiko.Transport | None = None
    failures: int = 0
    next_attempt: float = 0.0


class HostConnectionPool:
    """One verified, authenticated paramiko Transport per :class:`SshTarget`."""

    def __init__(self, settings: SshSettings | None = None) -> None:
        self.settings = settings or SshSettings()
        self._hosts: dict[SshTarget, _HostState] = {}
        self._lock = threading.Lock()

    def transport(self, target: SshTarget, credentials: SshCredentials) -> paramiko.Transport:
        """The live transport to ``target``, connecting if needed.

        After a failed connect, the next attempt waits out a backoff (doubling from
        ``reconnect_backoff_min`` up to ``reconnect_backoff_max``) so callers cannot hammer a
        broken host."""
        with self._lock:
            state = self._hosts.setdefault(target, _HostState())
        with state.lock:
            if state.transport is not None and state.transport.is_active():
                return state.transport
            state.transport = None
            delay = state.next_attempt - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, self.settings.reconnect_backoff_max))
            try:
                state.transport = self._connect(target, credentials)
            except SshError:
                state.failures += 1
                backoff = self.settings.reconnect_backoff_min * 2 ** (state.failures - 1)
                state.next_attempt = time.monotonic() + min(backoff, self.settings.reconnect_backoff_max)
                raise
            state.failures, state.next_attempt = 0, 0.0
            return state.transport

    async def atransport(self, target: SshTarget, credentials: SshCredentials) -> paramiko.Transport:
        return await asyncio.to_thread(self.transport, target, credentials)

    def invalidate(self, target: SshTarget, transport: paramiko.Transport | None = None, reset: bool = False) -> None:
        """Close the target's transport (only if it is still ``transport``, when given).

        ``reset``: the connection is given up as dead, so abort it (TCP RST) instead of closing it.
        A closed socket's unacknowledged data stays with the kernel, which retransmits it for
        minutes: a kill written while the link was cut would reach the agent once the link
        returns, long after the job was reported Stuck with the kill's outcome unknown."""
        with self._lock:
            state = self._hosts.get(target)
        if state is None:
            return
        with state.lock:
            if state.transport is not None and (transport is None or state.transport is transport):
                if reset:
                    _discard_unsent(state.transport)
                state.transport.close()
                state.transport = None

    def close(self) -> None:
        with self._lock:
            targets = list(self._hosts)
        for target in targets:
            self.invalidate(target)

    # ------------------------------------------------------------ connecting

    def _connect(self, target: SshTarget, credentials: SshCredentials) -> paramiko.Transport:
        try:
            host_keys = credentials.host_keys()
            pkey = credentials.private_key_object()
        except ValueError as exc:
            raise AuthenticationFailed(f"cannot use the SSH credentials for {target}: {exc}") from None
        known = host_keys.lookup(target.known_hosts_name)
        if not known:
            raise HostKeyMismatch(
                f"no host key for {target.known_hosts_name} in knownHosts: refusing to connect to {target} "
                "(host keys are always verified; add the VM's key to the credentials Secret)"
            )
        sock = self._open_socket(target)
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = self.settings.handshake_timeout
            transport.handshake_timeout = self.settings.handshake_timeout
            transport.auth_timeout = self.settings.auth_timeout
            transport.get_security_options().key_types = _algorithms_for(list(known.keys()))
            try:
                transport.start_client(timeout=self.settings.handshake_timeout)
            except paramiko.IncompatiblePeer as exc:
                if "host key" not in str(exc):
                    raise HostUnreachable(f"SSH handshake with {target} failed: {_describe(exc)}") from None
                raise HostKeyMismatch(
                    f"sshd at {target.address}:{target.port} offers none of the host key types knownHosts has for it "
                    f"({', '.join(known.keys())}): refusing to connect"
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise HostUnreachable(f"SSH handshake with {target} failed: {_describe(exc)}") from None
            self._verify_host_key(target, transport, known)
            self._authenticate(target, transport, credentials, pkey)
            transport.set_keepalive(max(1, round(self.settings.keepalive_interval)))
            log.info("SSH connected to %s", target)
            return transport
        except BaseException:
            transport.close()
            raise

    def _open_socket(self, target: SshTarget) -> socket.socket:
        address = self.settings.host_aliases.get(target.address, target.address)
        via = f" (host alias: {address})" if address != target.address else ""
        try:
            sock = socket.create_connection((address, target.port), timeout=self.settings.connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise HostUnreachable(
                f"cannot reach sshd at {target.address}:{target.port}{via}: {_describe(exc)}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.settings.dead_connection_timeout * 1000)
            )
        return sock

    @staticmethod
    def _verify_host_key(target: SshTarget, transport: paramiko.Transport, known: Mapping[str, paramiko.PKey]) -> None:
        offered = transport.get_remote_server_key()
        expected = known.get(offered.get_name())
        if expected is None or expected.asbytes() != offered.asbytes():
            raise HostKeyMismatch(
                f"host key of {target.address}:{target.port} ({offered.get_name()} {offered.fingerprint}) "
                "does not match knownHosts: refusing to authenticate (possible man-in-the-middle or a reinstalled VM)"
            )

    @staticmethod
    def _authenticate(
        target: SshTarget, transport: paramiko.Transport, credentials: SshCredentials, pkey: paramiko.PKey | None
    ) -> None:
        tried = []
        try:
            if pkey is not None:
                tried.append("publickey")
                try:
                    transport.auth_publickey(target.user, pkey)
                except paramiko.AuthenticationException:
                    if not credentials.password:
                        raise
            if not transport.is_authenticated() and credentials.password:
                tried.append("password")
                transport.auth_password(target.user, credentials.password)
        except paramiko.AuthenticationException:
            raise AuthenticationFailed(
                f"sshd at {target.address}:{target.port} rejected user {target.user!r} ({' and '.join(tried)} tried)"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"connection to {target} broke during authentication: {_describe(exc)}") from None
        if not transport.is_authenticated():
            raise AuthenticationFailed(
                f"sshd at {target.address}:{target.port} did not authenticate user {target.user!r}"
            )


def _algorithms_for(key_types: list[str]) -> list[str]:
    algorithms: list[str] = []
    for key_type in key_types:
        for algorithm in _ALGORITHMS_FOR_KEY_TYPE.get(key_type, (key_type,)):
            if algorithm not in algorithms:
                algorithms.append(algorithm)
    return algorithms


def _describe(exc: BaseException) -> str:
    """A short cause for people: exception class and text (paramiko never puts secrets there)."""
    text = str(exc) or exc.__class__.__name__
    return text if text.startswith(exc.__class__.__name__) else f"{exc.__class__.__name__}: {text}"


def _discard_unsent(transport: paramiko.Transport) -> None:
    """Make the transport's socket reset on close (SO_LINGER on, zero seconds): what the kernel
    still holds unacknowledged is dropped, not retransmitted."""
    sock = transport.sock
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as exc:  # already closed: nothing left to discard
            log.debug("cannot set SO_LINGER on the connection to be reset: %s", exc)
