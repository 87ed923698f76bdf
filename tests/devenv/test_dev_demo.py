"""``jobnet dev --demo`` end to end, as a user runs it: a subprocess with the real kubectl, the real
operator, the API emulator and a namespace VM; and ``--local-ssh`` against an sshd one already has
(here a namespace VM's, reached by address, its host key in a known_hosts file of the test's)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobnet.devenv.command import DEV_USER
from tests.support.netutil import DeadlineExceeded, wait_until
from tests.support.vm import NamespaceVM, missing_requirements

REPO = Path(__file__).resolve().parents[2]
#: The demo's own deadlines keep it under two minutes; this only catches a hang.
DEMO_TIMEOUT = 180
#: Both namespace-VM runs need the user `batch`: never at the same time (pytest -n ... --dist loadgroup).
ONE_DEV_VM_AT_A_TIME = pytest.mark.xdist_group("jobnet-dev-batch-user")

pytestmark = [
    pytest.mark.vm,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


def run_dev(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from jobnet.cli import main; sys.exit(main())", "dev", *args],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        cwd=cwd,
    )


def local_ssh_args(vm: NamespaceVM, known_hosts: Path) -> tuple[str, ...]:
    """``jobnet dev`` pointed at the test VM's sshd (``--local-ssh``), trusting ``known_hosts``."""
    return (
        "--local-ssh",
        f"{vm.address}:22",
        "--user",
        vm.user,
        "--key",
        str(vm.client_key_file),
        "--known-hosts",
        str(known_hosts),
    )


def user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True).returncode == 0


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def log_tail(path: Path, lines: int = 150) -> str:
    """A log's last lines without kopf's DEBUG chatter: what a failed demo did, kept in the
    message (pytest removes old tmp_paths; the demo keeps the VM's agent log beside its own)."""
    if not path.exists():
        return f"(no {path.name} at {path})"
    kept = [line for line in path.read_text(errors="replace").splitlines() if "[DEBUG" not in line]
    return f"{path.name}, last lines:\n" + "\n".join(kept[-lines:])


def skip_unless_a_dev_vm_can_run() -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    # The other dev-VM test of this group may still be removing the user it made.
    try:
        wait_until(lambda: not user_exists(DEV_USER), timeout=30, interval=0.5, what=f"user {DEV_USER} removed")
    except DeadlineExceeded:
        pytest.skip(f"user {DEV_USER} exists here (another `jobnet dev` running?): the dev VM needs it")


@ONE_DEV_VM_AT_A_TIME
def test_dev_demo_runs_the_examples_settles_a_stuck_job_and_cleans_up(tmp_path: Path) -> None:
    skip_unless_a_dev_vm_can_run()

    result = run_dev("--demo", "--workdir", str(tmp_path / "dev"), cwd=REPO)
    out = result.stdout

    assert result.returncode == 0, (
        f"exit {result.returncode}\n{out}\n{result.stderr}\n{log_tail(tmp_path / 'dev' / 'operator.log')}\n"
        f"{log_tail(tmp_path / 'dev' / 'agent.log')}"
    )
    assert "jobnet dev --demo: OK" in out
    assert re.search(r"^== Watch it in the browser: http://127\.0\.0\.1:\d+/ \(jobnet console", out, re.MULTILINE), out
    assert re.search(r"^hello-\w+ +hello +Succeeded +1/1 ", out, re.MULTILINE), out
    assert re.search(r"^rjn0008-\w+ +rjn0008 +Succeeded +4/4 ", out, re.MULTILINE), out
    # The tree of the nested expansion, on the aliased VM.
    assert re.search(r"^    j11 +Succeeded +batch@vm1\.batch\.example:22 ", out, re.MULTILINE), out
    # The Stuck job, what became known, the annotation (recorded with the kubeconfig's user as who),
    # and the run's success.
    assert re.search(r"^  work +Stuck .* HeartbeatLost +no heartbeat from the agent", out, re.MULTILINE), out
    assert "now known: the agent reports the job exited with code 0; settle it with an override" in out
    assert "jobrun.jobnet.dev/stuck-demo-1 annotated" in out
    assert re.search(
        r"^  work +Succeeded .* Overridden +set to Succeeded by kubernetes-admin \(was Stuck", out, re.MULTILINE
    ), out
    assert re.search(r"^  report +Succeeded ", out, re.MULTILINE), out
    assert re.search(r"^stuck-demo-1 +stuck-demo +Succeeded +2/2 ", out, re.MULTILINE), out
    # Everything it started is gone (the VM's user, the operator); the kubeconfig and log stay.
    assert not user_exists(DEV_USER)
    assert not processes_mentioning(str(tmp_path / "dev" / "kubeconfig"))
    assert "JobStuck" in (tmp_path / "dev" / "operator.log").read_text()


def test_dev_demo_with_an_sshd_one_already_has(tmp_path: Path, vm: NamespaceVM) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(vm.known_hosts)
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples", examples)

    result = run_dev(
        "--demo",
        "--workdir",
        str(tmp_path / "dev"),
        "--examples",
        str(examples),
        *local_ssh_args(vm, known_hosts),
        cwd=tmp_path,
    )
    out = result.stdout

    assert result.returncode == 0, f"exit {result.returncode}\n{out}\n{result.stderr}"
    assert f"your sshd at {vm.address}:22, user {vm.user}" in out
    assert re.search(rf"^  greet +Succeeded +{vm.user}@vm1\.batch\.example:22 ", out, re.MULTILINE), out
    assert re.search(r"^rjn0008-\w+ +rjn0008 +Succeeded +4/4 ", out, re.MULTILINE), out
    assert "Skipping the Stuck job: cutting the link needs the namespace VM" in out
    assert "jobnet dev --demo: OK" in out
    assert "greet" in vm.read_agent_log()  # the jobs ran on that sshd's machine


def test_local_ssh_refuses_a_host_key_it_has_never_seen(tmp_path: Path, vm: NamespaceVM) -> None:
    (tmp_path / "known_hosts").write_text("")
    result = run_dev(
        *local_ssh_args(vm, tmp_path / "known_hosts"),
        "--workdir",
        str(tmp_path / "dev"),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result
    assert f"no host key for {vm.address} in {tmp_path / 'known_hosts'}" in result.stderr
    assert "host keys are always verified" in result.stderr
    assert not (tmp_path / "dev").exists()  # refused before starting anything


def test_dev_runs_until_ctrl_c_serves_kubectl_and_then_cleans_up(tmp_path: Path, vm: NamespaceVM) -> None:
    # Against an sshd one already has (the test's own VM), so it never competes with the demo
    # test for the dev VM's user.
    workdir = tmp_path / "dev"
    output = tmp_path / "output"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(vm.known_hosts)
    manifest = tmp_path / "05-stuck-demo.yaml"
    manifest.write_text(
        (REPO / "examples" / "05-stuck-demo.yaml").read_text().replace("user: batch", f"user: {vm.user}")
    )
    with open(output, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from jobnet.cli import main; sys.exit(main())",
                "dev",
                "--workdir",
                str(workdir),
                "--local-ssh",
                f"{vm.address}:22",
                "--user",
                vm.user,
                "--key",
                str(vm.client_key_file),
                "--known-hosts",
                str(known_hosts),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_until(
            lambda: "Ctrl-C stops everything" in output.read_text(),
            timeout=60,
            what="jobnet dev ready",
            describe=output.read_text,
            interval=0.2,
        )
        assert f"export KUBECONFIG={workdir / 'kubeconfig'}" in output.read_text()

        def kubectl(*args: str) -> str:
            done = subprocess.run(
                ["kubectl", f"--kubeconfig={workdir / 'kubeconfig'}", *args], capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        kubectl("apply", "-f", str(manifest))
        wait_until(
            lambda: kubectl("get", "jobrun", "stuck-demo-1", "-o", "jsonpath={.status.phase}") == "Succeeded",
            timeout=60,
            what="stuck-demo-1 Succeeded (nothing cut)",
            describe=lambda: kubectl("get", "jobrun", "stuck-demo-1", "-o", "yaml"),
            interval=0.2,
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert "jobnet dev: stopping and cleaning up" in output.read_text()
    assert not processes_mentioning(str(workdir / "kubeconfig"))


def test_a_failing_demo_step_exits_1_naming_the_step(tmp_path: Path, vm: NamespaceVM) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(vm.known_hosts)
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples", examples)
    hello = examples / "01-hello.yaml"
    hello.write_text(hello.read_text().replace("script: /bin/echo", "script: /bin/false"))

    result = run_dev(
        "--demo",
        "--workdir",
        str(tmp_path / "dev"),
        "--examples",
        str(examples),
        *local_ssh_args(vm, known_hosts),
        cwd=tmp_path,
    )

    assert result.returncode == 1, f"{result.stdout}\n{result.stderr}"
    assert re.search(
        r"jobnet dev --demo: FAILED: run hello-\w+ ended Failed instead of Succeeded: .*/hello/greet Failed",
        result.stderr,
    ), result.stderr
    assert "jobnet dev --demo: OK" not in result.stdout
    assert not processes_mentioning(str(tmp_path / "dev" / "kubeconfig"))  # cleaned up all the same
