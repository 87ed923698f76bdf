"""Install the agent zipapp on a VM over SFTP, atomically, only when it is missing or different.

A VM needs nothing but sshd and ``python3`` (>= 3.8). The zipapp lands in
``~/.jobnet/jobnet-agent-<version>-<sha256 prefix>.pyz``, named by its content, so a file of
that name is the operator's zipapp: a channel starts ``serve`` from it at once
(:meth:`AgentInstaller.start_command`, no Python run before it), and only when that command
exits before ``serve`` answered (:data:`AGENT_MISSING_STATUS`: no such file; or any other exit)
does :meth:`AgentInstaller.ensure` run: one exec round trip checks python3 and the installed
file's SHA-256; if they differ it is uploaded to a temporary name and renamed into place
(``posix-rename``), so a concurrent ``serve`` never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

from jobnet.core.agentproto import HelloResult
from jobnet.ssh.channel import AgentChannel, serve_command
from jobnet.ssh.errors import AgentInstallFailed, ConnectionLost

log = logging.getLogger(__name__)

MIN_PYTHON = (3, 8)
REMOTE_DIR = ".jobnet"
#: The exit status of :meth:`AgentInstaller.start_command` when the zipapp is not on the VM.
AGENT_MISSING_STATUS = 97
#: Hex digits of the zipapp's SHA-256 in its name on the VM.
_NAME_HASH_DIGITS = 16

# Runs with the VM's python3: prints "<major>.<minor> <home> <sha256 or ->" for the given path.
_PROBE = (
    "import hashlib,os,sys\n"
    "p=os.path.expanduser(sys.argv[1]);h='-'\n"
    "try:\n"
    " with open(p,'rb') as f: h=hashlib.sha256(f.read()).hexdigest()\n"
    "except OSError: pass\n"
    "print('%d.%d %s %s'%(sys.version_info[0],sys.version_info[1],os.path.expanduser('~'),h))\n"
)


class AgentInstaller:
    """Starts ``serve`` from the operator's agent zipapp on a VM, installing it when missing."""

    def __init__(self, zipapp: Path, version: str, *, python: str = "python3", timeout: float = 30.0) -> None:
        self.zipapp = Path(zipapp)
        self.version = version
        self.python = python
        self.timeout = timeout
        self._content = self.zipapp.read_bytes()
        self._sha256 = hashlib.sha256(self._content).hexdigest()

    @property
    def remote_name(self) -> str:
        """Where the zipapp lives on a VM, relative to the home directory: named by its content."""
        return f"{REMOTE_DIR}/jobnet-agent-{self.version}-{self._sha256[:_NAME_HASH_DIGITS]}.pyz"

    def start_command(self, serve_args: Sequence[str] = ()) -> str:
        """The shell command that starts ``serve`` from the installed zipapp without checking it
        first: a file of its content-derived name is this zipapp (installs rename it into place
        whole). Exits :data:`AGENT_MISSING_STATUS` when there is none; then :meth:`ensure`."""
        installed = '"$HOME"/' + shlex.quote(self.remote_name)
        return f"test -f {installed} || exit {AGENT_MISSING_STATUS}; exec " + serve_command(
            installed, python=self.python, serve_args=serve_args, quote_path=False
        )

    def start_serve(
        self,
        transport: paramiko.Transport,
        host: str,
        open_channel: Callable[[str], AgentChannel],
        *,
        client: str,
        serve_args: Sequence[str] = (),
        timeout: float | None = None,
    ) -> tuple[AgentChannel, HelloResult]:
        """A channel (from ``open_channel(command)``) to a ``serve`` that answered hello.

        Started from the installed zipapp at once; only when that command ended before ``serve``
        answered (the zipapp not installed, or a file that does not run) is the install checked
        (and made) by :meth:`ensure` and ``serve`` started once more."""
        channel = open_channel(self.start_command(serve_args))
        try:
            return channel, channel.hello(client, timeout)
        except ConnectionLost:
            channel.close()
            if channel.exit_status is None:
                raise  # the connection broke, or serve is slow: nothing says the install is at fault
            if channel.exit_status != AGENT_MISSING_STATUS:
                log.warning(
                    "serve on %s exited with status %d before answering: checking the installed agent (%s)",
                    host,
                    channel.exit_status,
                    "; ".join(channel.stderr_tail()[-3:]),
                )
        except BaseException:
            channel.close()
            raise
        path = self.ensure(transport, host)
        channel = open_channel(serve_command(path, python=self.python, serve_args=serve_args))
        try:
            return channel, channel.hello(client, timeout)
        except BaseException:
            channel.close()
            raise

    def ensure(self, transport: paramiko.Transport, host: str) -> str:
        """Install if needed; return the absolute path of the agent zipapp on the VM."""
        version, home, remote_sha = self._probe(transport, host)
        path = f"{home}/{self.remote_name}"
        if remote_sha != self._sha256:
            self._upload(transport, host, home, path)
            log.info("installed agent %s on %s at %s (python %s)", self.version, host, path, version)
        return path

    def _probe(self, transport: paramiko.Transport, host: str) -> tuple[str, str, str]:
        command = f"{shlex.quote(self.python)} -c {shlex.quote(_PROBE)} {shlex.quote('~/' + self.remote_name)}"
        status, out, err = run_command(transport, command, timeout=self.timeout, host=host)
        if status == 127 or "not found" in err:
            raise AgentInstallFailed(
                f"{self.python} not found on {host}: "
                f"the VM needs python3 >= {'.'.join(map(str, MIN_PYTHON))} for the agent"
            )
        fields = out.split()
        if status != 0 or len(fields) != 3:
            raise AgentInstallFailed(f"checking {self.python} on {host} failed (exit {status}): {err.strip()[:300]}")
        version, home, remote_sha = fields
        if tuple(int(part) for part in version.split(".")) < MIN_PYTHON:
            raise AgentInstallFailed(
                f"{self.python} on {host} is version {version}; the agent needs >= {'.'.join(map(str, MIN_PYTHON))}"
            )
        return version, home, remote_sha

    def _upload(self, transport: paramiko.Transport, host: str, home: str, path: str) -> None:
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise AgentInstallFailed(f"SFTP is not available on {host}")
            with sftp:
                sftp.get_channel().settimeout(self.timeout)
                try:
                    sftp.mkdir(f"{home}/{REMOTE_DIR}", mode=0o700)
                except OSError:
                    pass  # exists (the stat of the zipapp below fails clearly if it is not a directory)
                try:
                    with sftp.open(temporary, "wb") as remote:
                        remote.set_pipelined(True)
                        remote.write(self._content)
                    sftp.chmod(temporary, 0o644)
                    sftp.posix_rename(temporary, path)
                except BaseException:
                    try:
                        sftp.remove(temporary)
                    except OSError:
                        pass
                    raise
                if sftp.stat(path).st_size != len(self._content):
                    raise AgentInstallFailed(f"agent upload to {host}:{path} came out truncated")
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise AgentInstallFailed(
                f"uploading the agent to {host}:{path} failed: {exc.__class__.__name__}: {exc}"
            ) from None


def run_command(transport: paramiko.Transport, command: str, *, timeout: float, host: str) -> tuple[int, str, str]:
    """Run one command in a new session; returns (exit status, stdout, stderr) as text."""
    try:
        channel = transport.open_session(timeout=timeout)
        with channel:
            channel.settimeout(timeout)
            channel.exec_command(command)
            out = channel.makefile("rb").read().decode(errors="replace")
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            return channel.recv_exit_status(), out, err
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise ConnectionLost(f"running a command on {host} failed: {exc.__class__.__name__}: {exc}") from None


def agent_cache_dir() -> Path:
    """Where zipapps built from the installed agent package are kept: ``$XDG_CACHE_HOME/jobnet``
    (``~/.cache/jobnet``), private to the user."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jobnet"


def default_zipapp(cache_dir: Path | None = None) -> tuple[Path, str]:
    """The agent zipapp to install and its version.

    ``JOBNET_AGENT_ZIPAPP`` (set in the operator image) wins; otherwise the one built from the
    installed ``jobnet_agent`` package, kept in ``cache_dir`` (default :func:`agent_cache_dir`;
    one that cannot be written falls back to a new temporary directory) by the digest of its
    sources, so it is built once per version of the sources, not at every start."""
    import jobnet_agent
    from jobnet_agent.bundle import cached_zipapp

    version = jobnet_agent.__version__
    configured = os.environ.get("JOBNET_AGENT_ZIPAPP")
    if configured:
        return Path(configured), version
    directory = agent_cache_dir() if cache_dir is None else cache_dir
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cached_zipapp(directory), version
    except OSError:
        return cached_zipapp(tempfile.mkdtemp(prefix="jobnet-agent-")), version
