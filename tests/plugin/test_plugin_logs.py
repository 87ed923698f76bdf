"""kubectl jobnet logs: a job's full output read from the real agent in a namespace VM over real
SSH (host key verified, credentials from the Secret in the API emulator). The job is launched
through the operator's own SSH client, as the runtime would launch it, under the JobRun's key."""

from __future__ import annotations

import base64
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobnet.core.agentproto import JobKey
from jobnet.ssh import AgentInstaller
from tests.plugin.conftest import PLUGIN, Cli
from tests.support.emulator import EmulatorServer
from tests.support.kube import GROUP_VERSION, jobnet, jobrun, kubectl_apply, script_job
from tests.support.vm import NamespaceVM, missing_requirements
from tests.vm.harness import AgentHarness

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(missing_requirements() is not None, reason=f"no namespace VMs: {missing_requirements()}"),
]

RUN = "etl-1"
LINES = 40_000  # ~430 KB of stdout: more than one read request
STATUS_TAIL = f"line {LINES - 1}\nline {LINES}\n"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHarness]:
    """One VM for the module, its agent reached through the operator's SSH client."""
    import jobnet_agent
    from jobnet_agent.bundle import build_zipapp

    zipapp = build_zipapp(tmp_path_factory.mktemp("agent") / "jobnet-agent.pyz")
    with NamespaceVM(label="plugin-logs") as vm:
        agent = AgentHarness(vm, AgentInstaller(zipapp, jobnet_agent.__version__))
        agent.connect()
        try:
            yield agent
        finally:
            agent.close()


def _secret(vm: NamespaceVM, known_hosts: str) -> dict[str, object]:
    data = {"privateKey": vm.client_key, "knownHosts": known_hosts}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "vm-ssh", "namespace": "default"},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


class LogsSetup:
    def __init__(self, cli: Cli, harness: AgentHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.cli, self.harness, self.vm = cli, harness, harness.vm
        host = {"address": self.vm.address, "user": self.vm.user, "credentialsSecret": "vm-ssh"}
        net = jobnet("etl", script_job("extract"), script_job("follow", "extract"))
        net["spec"]["host"] = host
        result = kubectl_apply(cli.emulator, net, jobrun("etl", RUN), verb="create")
        assert result.rc == 0, result.stderr
        cli.emulator.put(_secret(self.vm, self.vm.known_hosts))
        body = cli.emulator.get(GROUP_VERSION, "jobruns", "default", RUN)
        assert body is not None
        self.uid = body["metadata"]["uid"]
        # The operator's serve options for this VM (its boot id file) and a private zipapp cache.
        self.serve_args = shlex.join(["--state-dir", str(self.vm.state_dir), *self.vm.agent_serve_args()])
        monkeypatch.setenv("JOBNET_AGENT_SERVE_ARGS", self.serve_args)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        self.cache = tmp_path / "cache"

    def key(self, name: str) -> JobKey:
        return JobKey(run=self.uid, path=f"/etl/{name}", attempt=1)

    def set_job(self, name: str, state: str, tail: str | None = None) -> None:
        entry = {"state": state, "attempt": 1, "host": self.vm.address, **({"outputTail": tail} if tail else {})}
        self.cli.set_status(
            {"phase": "Running", "jobs": {"/etl": {"state": "Running"}, f"/etl/{name}": entry}}, name=RUN
        )

    def environment(self) -> dict[str, str]:
        return self.cli.environment(JOBNET_AGENT_SERVE_ARGS=self.serve_args, XDG_CACHE_HOME=str(self.cache))


@pytest.fixture
def setup(cli: Cli, harness: AgentHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LogsSetup:
    if harness.chan.closed_error is not None:
        # An earlier test cut the VM's link for longer than the channel's deadlines (a slow
        # `kubectl jobnet logs` on a loaded machine): this test gets a channel of its own.
        harness.reconnect()
    return LogsSetup(cli, harness, monkeypatch, tmp_path)


@pytest.fixture
def finished_job(setup: LogsSetup) -> LogsSetup:
    """/etl/extract ran on the VM: LINES lines on stdout, two on stderr, exit 0."""
    script = setup.harness.script(
        "extract.sh",
        f'i=1; while [ $i -le {LINES} ]; do echo "line $i"; i=$((i+1)); done\necho warn1 >&2\necho warn2 >&2\n',
    )
    key = setup.key("extract")
    setup.harness.launch(key, script)
    record = setup.harness.wait_state(key, "exited", timeout=30)
    assert record.exit_code == 0
    setup.set_job("extract", "Succeeded", STATUS_TAIL)
    return setup


def test_full_output_stdout_and_stderr(finished_job: LogsSetup) -> None:
    cli = finished_job.cli
    code, out, err = cli.run("logs", RUN, "/etl/extract")
    assert code == 0, err
    assert out == "".join(f"line {i}\n" for i in range(1, LINES + 1))
    code, out, err = cli.run("logs", RUN, "/etl/extract", "--stderr")
    assert code == 0, err
    assert out == "warn1\nwarn2\n"
    code, out, err = cli.run("logs", RUN, "/etl/extract", "--tail", "3")
    assert code == 0, err
    assert out == f"line {LINES - 2}\nline {LINES - 1}\nline {LINES}\n"


def test_follow_streams_a_running_job_until_it_ends(setup: LogsSetup) -> None:
    release = setup.vm.home / "release-follow"
    script = setup.harness.script(
        "follow.sh", f"echo first\nwhile [ ! -e {shlex.quote(str(release))} ]; do sleep 0.05; done\necho second\n"
    )
    key = setup.key("follow")
    setup.harness.launch(key, script)
    setup.harness.wait_state(key, "running", timeout=10)
    setup.set_job("follow", "Running")
    process = subprocess.Popen(
        [
            str(PLUGIN),
            "logs",
            RUN,
            "/etl/follow",
            "--follow",
            "--timeout",
            "30",
            "--kubeconfig",
            str(setup.cli.emulator.kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=setup.environment(),
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "first\n"  # streamed while the job still runs
        assert process.poll() is None
        setup.vm.put_file(release.name, "")
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert process.returncode == 0, err
    assert out == "second\n"


def test_unreachable_vm_falls_back_to_the_status_tail(finished_job: LogsSetup) -> None:
    cli, vm = finished_job.cli, finished_job.vm
    vm.cut()
    try:
        code, out, err = cli.run("logs", RUN, "/etl/extract", "--ssh-timeout", "1")
    finally:
        vm.restore()
    assert code == 3
    assert f"kubectl jobnet logs: cannot read the output from the VM: cannot reach sshd at {vm.address}:22" in err
    assert "showing the output tail kept in the JobRun status instead" in err
    assert out == STATUS_TAIL


def test_wrong_host_key_never_connects_and_says_so(finished_job: LogsSetup, tmp_path: Path) -> None:
    cli, vm = finished_job.cli, finished_job.vm
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key_type, key_b64 = (other.with_suffix(".pub")).read_text().split()[:2]
    cli.emulator.put(_secret(vm, f"{vm.address} {key_type} {key_b64}\n"))
    code, out, err = cli.run("logs", RUN, "/etl/extract")
    assert code == 3
    assert "does not match knownHosts: refusing to authenticate" in err
    assert "PRIVATE KEY" not in err + out
    assert out == STATUS_TAIL


def test_jobs_never_launched_and_jobnet_paths_are_refused(setup: LogsSetup) -> None:
    setup.set_job("extract", "Succeeded", STATUS_TAIL)
    code, _, err = setup.cli.run("logs", RUN, "/etl/follow")
    assert code == 1 and "/etl/follow is Pending and was never launched: it has no output yet" in err
    code, _, err = setup.cli.run("logs", RUN, "/etl")
    assert code == 1 and "/etl is a jobnet, not a job" in err
    code, _, err = setup.cli.run("logs", RUN, "/etl/extrct")
    assert code == 1 and "did you mean '/etl/extract'?" in err


def test_a_job_the_agent_no_longer_has(setup: LogsSetup, emulator: EmulatorServer) -> None:
    """The agent removed the job's output (retention): said so, then the status tail."""
    setup.set_job("extract", "Succeeded", STATUS_TAIL)  # the status says attempt 1 ran; this agent never saw it
    code, out, err = setup.cli.run("logs", RUN, "/etl/extract")
    assert code == 3
    assert f"has no output of {setup.key('extract')}" in err
    assert out == STATUS_TAIL
