"""The kind quick start's demo VM, end to end without Docker: its entrypoint runs inside a
namespace VM, with the keys kind-up generates put into Secrets by kind-up's own functions; the
real operator (host alias vm1.batch.example -> the VM, as the kind chart values set it) installs
the agent over SFTP, and kind-up's own example and wait steps run the examples to Succeeded.

What is not here is what needs Docker: the cluster, the images, Helm, the Service's DNS name."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from jobnet.devenv.net import tcp_port_open, wait_until
from tests.kind.support import ENTRYPOINT, KIND_DIR, KIND_UP, REPO, manifests, script_value
from tests.support.emulator import EmulatorServer
from tests.support.scenario import Scenario
from tests.support.vm import SSH_PORT, NamespaceVM, vm_factory  # noqa: F401 (fixture)

pytestmark = [pytest.mark.vm, pytest.mark.emulator]

EXAMPLES = ("01-hello.yaml", "03-nested-expansion.yaml")  # 02 needs the image's /opt/batch
SSHD_START_TIMEOUT = 15.0


class KindUp:
    """Runs functions of scripts/kind-up (sourced) against the emulator, as kind-up would against kind."""

    def __init__(self, emulator: EmulatorServer, state: Path) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(emulator.kubeconfig),
            "HOME": str(state.parent),
            "JOBNET_KIND_STATE": str(state),
            "JOBNET_KIND_TIMEOUT": "90s",
        }

    def __call__(self, commands: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-c", f'source "{KIND_UP}"\n{commands}'],
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env,
        )
        assert result.returncode == 0, f"{commands} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result


def examples_for(vm: NamespaceVM, target: Path) -> list[Path]:
    """The examples as written, but for the login user: the image's is ``batch``, a namespace VM's
    is its own (a user ``batch`` on this machine would collide with ``jobnet dev``)."""
    target.mkdir()
    copies = []
    for name in EXAMPLES:
        documents = manifests(REPO / "examples" / name)
        for document in documents:
            host = document["spec"].get("host")
            if host is not None:
                assert host["user"] == "batch", host
                host["user"] = vm.user
        copies.append(target / name)
        copies[-1].write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return copies


def fingerprint(key: Path) -> str:
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


def mount_secret(emulator: EmulatorServer, name: str, target: Path) -> None:
    """Write a Secret's keys as files into ``target``, as the kubelet mounts a Secret volume."""
    secret = emulator.get("v1", "secrets", script_value("DEMO_NAMESPACE"), name)
    assert secret is not None, f"Secret {name} was not created"
    target.mkdir(mode=0o700)
    for key, value in secret["data"].items():
        (target / key).write_bytes(base64.b64decode(value))
        (target / key).chmod(0o400)


@pytest.fixture
def kind_vm(vm_factory: Callable[..., NamespaceVM], tmp_path: Path) -> Iterator[tuple[NamespaceVM, Path]]:  # noqa: F811
    """A namespace VM whose own sshd is off: its sshd is the one the test starts with the entrypoint."""
    vm = vm_factory(label="kind demo VM")
    # Every process of the VM dies (a power-off): the entrypoint's sshd then has port 22 to
    # itself, as in the pod.
    vm.crash()
    yield vm, tmp_path / "entrypoint.log"


def test_demo_vm_entrypoint_serves_the_operator_and_the_examples_succeed(
    emulator: EmulatorServer, kind_vm: tuple[NamespaceVM, Path], tmp_path: Path
) -> None:
    vm, entrypoint_log = kind_vm
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    kind_up = KindUp(emulator, state)
    assert emulator.kubectl("apply", "-f", str(KIND_DIR / "namespace.yaml")).rc == 0
    kind_up("generate_keys && create_secrets")

    keys = tmp_path / "vm1-sshd"
    mount_secret(emulator, "vm1-sshd", keys)
    with open(entrypoint_log, "wb") as output:
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", vm.netns, "env", f"JOBNET_VM_USER={vm.user}", f"JOBNET_VM_KEYS={keys}",
             f"JOBNET_VM_RUN_DIR={vm.dir / 'kind-vm'}", "sh", str(ENTRYPOINT)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        )  # fmt: skip
    # The scenario harness runs the real operator (fast deadlines, webhooks registered); the
    # one VM is the fixture's.
    world = Scenario(emulator, tmp_path, make_vm=lambda **_: pytest.fail("the test has its one VM"))
    try:
        wait_until(
            lambda: tcp_port_open(vm.address, SSH_PORT) or sshd.poll() is not None,
            timeout=SSHD_START_TIMEOUT,
            what="the entrypoint's sshd listening",
        )
        assert sshd.poll() is None, f"the entrypoint exited {sshd.returncode}: {entrypoint_log.read_text()}"
        world.start_operator(f"--host-alias={script_value('VM_HOST', KIND_UP)}={vm.address}")

        examples = " ".join(str(path) for path in examples_for(vm, tmp_path / "examples"))
        shown = kind_up(f'apply_examples {examples} && wait_for_runs "${{CREATED_RUNS[@]}}"').stdout
    finally:
        world.close()
        sshd.kill()
        sshd.wait(timeout=10)

    runs = emulator.list_objects("jobnet.dev/v1alpha1", "jobruns", script_value("DEMO_NAMESPACE"))
    assert sorted(run["spec"]["jobNetRef"] for run in runs) == ["hello", "rjn0008"]
    assert {run["status"]["phase"] for run in runs} == {"Succeeded"}
    assert len(re.findall(r"\bSucceeded\b", shown)) >= len(runs), shown  # kubectl get jobruns and the trees
    (nested,) = [run for run in runs if run["spec"]["jobNetRef"] == "rjn0008"]
    assert nested["status"]["jobs"]["/rjn0008/rjn0001/j11"]["state"] == "Succeeded"
    assert re.search(r"^ +j11 +Succeeded +\S+@vm1\.batch\.example:22 ", shown, re.MULTILINE), shown  # the tree

    log = entrypoint_log.read_text()
    host_key, client_key = (fingerprint(state / name) for name in ("vm1_ssh_host_ed25519_key", "operator_id_ed25519"))
    assert f"host key {host_key}" in log, log
    assert f"Accepted publickey for {vm.user} from {vm.host_address} port" in log, log
    assert re.search(rf"Accepted publickey for {vm.user} .* ED25519 {re.escape(client_key)}$", log, re.MULTILINE), log
    assert f"Starting session: subsystem 'sftp' for {vm.user}" in log, log
    assert list((vm.home / ".jobnet").glob("jobnet-agent-*.pyz")), "the agent was not installed over SFTP"
