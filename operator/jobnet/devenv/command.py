"""``jobnet dev``: the API emulator, the real operator and one local VM, on this machine.

The examples name their VM ``vm1.batch.example`` (user ``batch``, Secret ``vm1-ssh``). Here that
name is a host alias (the operator's ``--host-alias``) for the local VM, and the Secret's
known_hosts line is written for the name, so host key verification works exactly as in a cluster.
The local VM is a namespace VM (:mod:`jobnet.devenv.vm`, needs root) or an sshd the user already
has (``--local-ssh``; its host key must already be in the user's known_hosts: never trusted blindly).

``--demo`` drives it end to end with the real kubectl (:mod:`jobnet.devenv.demo`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from jobnet.crdgen import generated_files

try:
    from jobnet.devenv.emulator import EmulatorServer
    from jobnet.devenv.operator import OperatorNotReady, OperatorProcess, register_webhooks
except ImportError as missing:  # kmock comes with the dev extra only
    raise SystemExit(f"jobnet dev needs the dev extra (pip install -e '.[dev]'): {missing}") from None
from jobnet.devenv.vm import NamespaceVM, VMError, missing_requirements

#: What the examples call their VM, its user and its credentials Secret.
DEV_HOST = "vm1.batch.example"
DEV_USER = "batch"
DEV_SECRET = "vm1-ssh"
NAMESPACE = "default"
DEFAULT_WORKDIR = ".jobnet-dev"

#: Short deadlines, so that a cut link turns into a Stuck job within seconds (the demo shows it).
DEV_RUNTIME_ARGS = (
    "--heartbeat-deadline=3",
    "--dispatch-timeout=5",
    "--kill-grace=1",
    "--agent-request-timeout=3",
    "--ssh-connect-timeout=2",
    "--ssh-handshake-timeout=5",
    "--ssh-keepalive=1",
    "--ssh-dead-connection-timeout=3",
    "--reconnect-backoff-min=0.1",
    "--reconnect-backoff-max=1",
    "--agent-serve-arg=--heartbeat-seconds",
    "--agent-serve-arg=0.5",
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_START = 2


class DevError(Exception):
    """``jobnet dev`` cannot do what was asked; the message says what and how to fix it."""


@dataclass(frozen=True)
class LocalSsh:
    """An sshd the user already has (``--local-ssh HOST:PORT --user U --key FILE``)."""

    address: str
    port: int
    user: str
    key_file: Path
    known_hosts_file: Path

    def known_hosts_line(self, name: str) -> str:
        """The sshd's host key from the user's known_hosts, as a line for ``name``.

        The key must already be known (the user has connected once, or passed --known-hosts):
        jobnet never trusts a host key it is shown for the first time."""
        lookup = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        if not self.known_hosts_file.is_file():
            raise DevError(f"--known-hosts {self.known_hosts_file}: no such file")
        found = subprocess.run(
            ["ssh-keygen", "-F", lookup, "-f", str(self.known_hosts_file)], capture_output=True, text=True, timeout=10
        )
        entries = [line.split() for line in found.stdout.splitlines() if line.strip() and not line.startswith("#")]
        if not entries:
            raise DevError(
                f"no host key for {lookup} in {self.known_hosts_file}: connect once with "
                f"`ssh -p {self.port} {self.user}@{self.address}` and check the fingerprint, "
                "or pass --known-hosts FILE (host keys are always verified)"
            )
        alias = name if self.port == 22 else f"[{name}]:{self.port}"
        return "".join(f"{alias} {fields[1]} {fields[2]}\n" for fields in entries if len(fields) >= 3)


def parse_local_ssh(text: str) -> tuple[str, int]:
    address, separator, port = text.rpartition(":")
    if not separator or not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:22), not {text!r}")
    return address.strip("[]"), int(port)


def add_dev_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the demo end to end (examples 01 and 03, then a Stuck job settled by an "
        "override), print what happens, clean up and exit: 0 on success",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(DEFAULT_WORKDIR),
        help=f"kubeconfig, operator log and emulator files (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=Path("examples"),
        help="directory of the numbered examples the demo applies (default: examples)",
    )
    local = parser.add_argument_group("an sshd you already have (instead of a namespace VM, which needs root)")
    local.add_argument("--local-ssh", type=parse_local_ssh, metavar="HOST:PORT", help="the sshd to run jobs on")
    local.add_argument("--user", help="login user at --local-ssh")
    local.add_argument("--key", type=Path, metavar="FILE", help="private key file authorised for --user")
    local.add_argument(
        "--known-hosts",
        type=Path,
        metavar="FILE",
        default=Path.home() / ".ssh" / "known_hosts",
        help="where the sshd's host key is already recorded (default: ~/.ssh/known_hosts)",
    )


def local_ssh_from_arguments(args: argparse.Namespace) -> LocalSsh | None:
    if args.local_ssh is None:
        if args.user or args.key:
            raise DevError("--user and --key only go with --local-ssh HOST:PORT")
        return None
    if not args.user or not args.key:
        raise DevError("--local-ssh needs --user U and --key FILE")
    if not args.key.is_file():
        raise DevError(f"--key {args.key}: no such file")
    address, port = args.local_ssh
    return LocalSsh(address, port, args.user, args.key, args.known_hosts)


class DevEnvironment:
    """The embedded control plane; a context manager that cleans up everything it started."""

    def __init__(self, workdir: Path, local_ssh: LocalSsh | None = None) -> None:
        self.workdir = workdir.resolve()
        self.local_ssh = local_ssh
        self.kubeconfig = self.workdir / "kubeconfig"
        self.shown_workdir = workdir  # as the user wrote it, for the instructions we print
        self.vm: NamespaceVM | None = None
        self.emulator: EmulatorServer | None = None
        self.operator: OperatorProcess | None = None
        self._stack = contextlib.ExitStack()

    @property
    def host(self) -> dict[str, Any]:
        """The ``host:`` block that reaches the local VM (what the examples write, for a namespace VM)."""
        if self.local_ssh is not None:
            return {
                "address": DEV_HOST,
                "port": self.local_ssh.port,
                "user": self.local_ssh.user,
                "credentialsSecret": DEV_SECRET,
            }
        return {"address": DEV_HOST, "port": 22, "user": DEV_USER, "credentialsSecret": DEV_SECRET}

    @property
    def host_alias_argument(self) -> str:
        """``--host-alias`` of the operator and the console: the examples' VM name -> the VM."""
        return f"--host-alias={DEV_HOST}={self.vm_address}"

    @property
    def vm_address(self) -> str:
        if self.local_ssh is not None:
            return self.local_ssh.address
        assert self.vm is not None
        return self.vm.address

    def keep_agent_log(self) -> Path | None:
        """Copy the namespace VM's agent log into the workdir (the VM's home goes with its user at
        the clean-up); where it is now, or None without a namespace VM or an agent log."""
        if self.vm is None:
            return None
        text = self.vm.read_agent_log()
        if not text:
            return None
        kept = self.workdir / "agent.log"
        kept.write_text(text)
        return kept

    def __enter__(self) -> DevEnvironment:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        if self.local_ssh is None and (reason := missing_requirements()):
            raise DevError(
                f"cannot make the local VM: {reason}. Run as root after scripts/setup, or use an "
                "sshd you have: --local-ssh HOST:PORT --user U --key FILE"
            )
        if shutil.which("kubectl") is None:
            raise DevError("kubectl is not on PATH (https://kubernetes.io/docs/tasks/tools/)")
        if self.local_ssh is not None:  # refused before anything starts when the host key is unknown
            known_hosts, private_key = self.local_ssh.known_hosts_line(DEV_HOST), self.local_ssh.key_file.read_text()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "operator.log").unlink(missing_ok=True)
        self.emulator = self._stack.enter_context(
            EmulatorServer(self.workdir, load_crds=False, kubeconfig=self.kubeconfig)
        )
        # The CRDs straight from the models (the committed files are tested to be the same).
        self.emulator.call(self.emulator.api.load_crd_texts, generated_files().values())
        if self.local_ssh is None:
            try:
                self.vm = NamespaceVM(user=DEV_USER, label="jobnet dev").create()
            except VMError as error:
                raise DevError(f"cannot make the local VM: {error}") from None
            self._stack.callback(self.vm.destroy)
            known_hosts, private_key = self.vm.known_hosts_for(DEV_HOST), self.vm.client_key
        self.emulator.put(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": DEV_SECRET, "namespace": NAMESPACE},
                "data": {
                    key: base64.b64encode(value.encode()).decode()
                    for key, value in (("privateKey", private_key), ("knownHosts", known_hosts))
                },
            }
        )
        self.operator = OperatorProcess(
            self.emulator,
            self.workdir,
            ready_timeout=60.0,
            extra_args=(*DEV_RUNTIME_ARGS, self.host_alias_argument),
        )
        register_webhooks(self.emulator, self.operator.webhook_url)
        self._stack.callback(self._stop_operator)
        try:
            self.operator.start()
        except OperatorNotReady as error:
            raise DevError(f"the operator did not start: {error}") from None

    def _stop_operator(self) -> None:
        if self.operator is not None and self.operator.process is not None:
            self.operator.stop()

    # -------------------------------------------------------------- kubectl

    def kubectl_env(self) -> dict[str, str]:
        """The caller's environment with our kubeconfig, and this Python's scripts directory on
        PATH so that kubectl finds the ``kubectl-jobnet`` plugin."""
        path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "/usr/bin:/bin")])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run kubectl (plugin commands too: no flags before the command); a hung one is a DevError."""
        try:
            return subprocess.run(
                ["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout, env=self.kubectl_env()
            )
        except subprocess.TimeoutExpired:
            raise DevError(f"kubectl {' '.join(args)} did not finish within {timeout:.0f}s") from None

    def describe(self) -> list[str]:
        assert self.emulator is not None and self.operator is not None
        if self.vm is not None:
            where = f"namespace VM {self.vm.netns} at {self.vm.address}, user {DEV_USER}"
        else:
            assert self.local_ssh is not None
            where = f"your sshd at {self.local_ssh.address}:{self.local_ssh.port}, user {self.local_ssh.user}"
        return [
            f"  Kubernetes API  {self.emulator.url} (emulator); kubeconfig: {self.shown_workdir / 'kubeconfig'}",
            f"  operator        log: {self.shown_workdir / 'operator.log'}",
            f"  VM              {DEV_HOST} -> {where}; credentials Secret {DEV_SECRET}",
        ]


def _wait_for_interrupt(env: DevEnvironment) -> int:
    """Block until Ctrl-C or SIGTERM (returns 0) or until the operator dies (returns 1)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.wait(0.5):
            assert env.operator is not None and env.operator.process is not None
            if env.operator.process.poll() is not None:
                print(
                    f"jobnet dev: the operator exited with {env.operator.process.returncode}:\n"
                    f"{env.operator.log_tail()}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def run_dev(args: argparse.Namespace) -> int:
    from jobnet.devenv.demo import DemoFailed, run_demo

    try:
        local_ssh = local_ssh_from_arguments(args)
        if args.demo and not args.examples.is_dir():
            raise DevError(f"--examples {args.examples}: no such directory (run from the repository's root)")
        print("jobnet dev: starting the API emulator, the operator and the local VM ...", flush=True)
        with DevEnvironment(args.workdir, local_ssh) as env:
            print("jobnet dev: ready", *env.describe(), sep="\n", flush=True)
            if args.demo:
                try:
                    run_demo(env, args.examples)
                except DemoFailed as failure:
                    print(f"jobnet dev --demo: FAILED: {failure}", file=sys.stderr)
                    kept = env.keep_agent_log()
                    if kept is not None:
                        print(f"jobnet dev --demo: the VM's agent log is kept at {kept}", file=sys.stderr)
                    return EXIT_FAILED
                print("jobnet dev --demo: OK (cleaning up)", flush=True)
                return EXIT_OK
            kubeconfig = env.shown_workdir / "kubeconfig"
            print(
                f"\nTry (Ctrl-C stops everything and cleans up):\n"
                f"  export KUBECONFIG={kubeconfig}\n"
                f"  kubectl create -f examples/01-hello.yaml\n"
                f"  kubectl get jobruns\n"
                f"  kubectl jobnet tree <run>\n"
                f"(or kubectl --kubeconfig {kubeconfig} ...; JobNets reach the VM as host "
                f"{yaml.safe_dump(env.host, default_flow_style=True).strip()})",
                flush=True,
            )
            code = _wait_for_interrupt(env)
            print("\njobnet dev: stopping and cleaning up", flush=True)
            return code
    except DevError as error:
        print(f"jobnet dev: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
