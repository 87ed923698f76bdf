"""scripts/kind-up and scripts/kind-down, checked without Docker: shellcheck, ``bash -n``, the
``--dry-run`` plan (every step, in order), the stop with install hints when a tool is missing,
and the helpers kind-up runs on the examples (sourced from the script itself)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.emulator import EmulatorServer

REPO = Path(__file__).resolve().parents[2]
KIND_UP = REPO / "scripts" / "kind-up"
KIND_DOWN = REPO / "scripts" / "kind-down"
LIB = REPO / "deploy" / "kind" / "lib.sh"
ENTRYPOINT = REPO / "deploy" / "kind" / "vm" / "entrypoint.sh"
STEP_SCRIPT = REPO / "deploy" / "kind" / "vm" / "batch" / "step.sh"
SHELL_FILES = (KIND_UP, KIND_DOWN, LIB, ENTRYPOINT, STEP_SCRIPT)
KIND_TOOLS = ("docker", "kind", "helm", "kubectl", "kubectl-jobnet", "ssh-keygen")
KIND_UP_EXAMPLES = ("01-hello", "02-nightly", "03-nested-expansion")

#: What a first kind-up runs, in this order (one pattern per command line of the dry run).
KIND_UP_PLAN = (
    r"mkdir -p -m 0700 STATE$",
    r"kind create cluster --name jobnet --config deploy/kind/cluster\.yaml --kubeconfig STATE/kubeconfig",
    r"docker build -t jobnet-operator:kind \.$",
    r"kind load docker-image jobnet-operator:kind --name jobnet$",
    r"docker build -t jobnet-demo-vm:kind deploy/kind/vm$",
    r"kind load docker-image jobnet-demo-vm:kind --name jobnet$",
    r"kubectl apply -f deploy/kind/namespace\.yaml$",
    r"ssh-keygen .*-t ed25519 .*-f STATE/vm1_ssh_host_ed25519_key$",
    r"ssh-keygen .*-t ed25519 .*-f STATE/operator_id_ed25519$",
    r"known_hosts_line vm1\.batch\.example STATE/vm1_ssh_host_ed25519_key\.pub > STATE/vm1\.known_hosts$",
    r"kubectl create secret generic vm1-sshd .*--from-file=ssh_host_ed25519_key=.*--from-file=authorized_keys=.*"
    r"\| kubectl apply",
    r"kubectl create secret generic vm1-ssh .*--from-file=privateKey=.*--from-file=knownHosts=.*\| kubectl apply",
    r"kubectl apply --server-side -f charts/jobnet-operator/crds/$",
    r"helm upgrade --install jobnet-operator charts/jobnet-operator --namespace jobnet-system --create-namespace "
    r"--values deploy/kind/values\.yaml --wait",
    r"kubectl apply -f deploy/kind/vm\.yaml$",
    r"kubectl --namespace jobnet-demo rollout status deployment/vm1",
    *(
        pattern
        for example in KIND_UP_EXAMPLES
        for pattern in (
            rf"documents_of_kind JobNet examples/{example}\.yaml \| kubectl apply --namespace jobnet-demo -f -$",
            rf"documents_of_kind JobRun examples/{example}\.yaml \| kubectl create --namespace jobnet-demo -f - "
            r"-o name$",
        )
    ),
    r"kubectl --namespace jobnet-demo wait --for=jsonpath=.*Succeeded --timeout=300s( jobrun\.jobnet\.dev/\S+){3}$",
    r"kubectl --namespace jobnet-demo get jobruns$",
    *(rf"kubectl jobnet tree --namespace jobnet-demo \S*{example}$" for example in KIND_UP_EXAMPLES),
)
KIND_DOWN_PLAN = (
    r"kind delete cluster --name jobnet --kubeconfig STATE/kubeconfig$",
    r"docker image rm jobnet-operator:kind$",
    r"docker image rm jobnet-demo-vm:kind$",
    r"rm -rf STATE$",
)


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})}
    )


def commands_of(output: str) -> list[str]:
    """The command lines a run printed (``+ ...``)."""
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def assert_plan(commands: list[str], plan: tuple[str, ...], state: Path) -> None:
    """Each command matches its pattern of ``plan`` (STATE: the state directory), in order, and
    nothing else is run."""
    assert len(commands) == len(plan), "\n".join(commands)
    for command, pattern in zip(commands, plan, strict=True):
        assert re.search(pattern.replace("STATE", re.escape(str(state))), command), (
            f"expected {pattern!r}, the plan has {command!r}"
        )


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (scripts/setup installs it)"
)
@pytest.mark.parametrize("script", SHELL_FILES, ids=lambda path: path.name)
def test_shellcheck_finds_nothing(script: Path) -> None:
    result = subprocess.run(
        ["shellcheck", "--external-sources", "--severity=info", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_FILES, ids=lambda path: path.name)
def test_scripts_parse(script: Path) -> None:
    shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", (KIND_UP, KIND_DOWN, ENTRYPOINT, STEP_SCRIPT), ids=lambda path: path.name)
def test_scripts_are_executable(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"


def test_kind_up_dry_run_prints_every_step_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run_script(str(KIND_UP), "--dry-run", env={"JOBNET_KIND_STATE": str(state)})
    assert result.returncode == 0, result.stderr
    assert_plan(commands_of(result.stdout), KIND_UP_PLAN, state)
    assert not state.exists(), "a dry run must not create anything"
    announced = re.findall(r"^== (.*)$", result.stdout, re.MULTILINE)
    assert announced[0].startswith("Checking for docker kind helm kubectl kubectl-jobnet ssh-keygen"), announced


def test_kind_down_dry_run_prints_every_step_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    result = run_script(str(KIND_DOWN), "--dry-run", env={"JOBNET_KIND_STATE": str(state)})
    assert result.returncode == 0, result.stderr
    assert_plan(commands_of(result.stdout), KIND_DOWN_PLAN, state)
    assert state.exists(), "a dry run must not remove anything"


def path_with_only(tmp_path: Path, tools: tuple[str, ...]) -> str:
    """A PATH holding the commands the scripts use besides the kind tools, plus ``tools``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename", *tools):
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run this test"
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("script", "tools"), [(KIND_UP, KIND_TOOLS), (KIND_DOWN, ("docker", "kind"))], ids=["kind-up", "kind-down"]
)
def test_missing_tools_stop_the_script_each_named_with_an_install_hint(
    tmp_path: Path, script: Path, tools: tuple[str, ...]
) -> None:
    present = ("kubectl",) if "kubectl" in tools else ()
    state = tmp_path / "state"
    result = subprocess.run(
        [shutil.which("bash") or "bash", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": path_with_only(tmp_path, present), "JOBNET_KIND_STATE": str(state), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    missing = [tool for tool in tools if tool not in present]
    for tool in missing:
        assert re.search(rf"^\s*missing: {re.escape(tool)}\s+install: \S", result.stderr, re.MULTILINE), result.stderr
    assert f"missing {' '.join(missing)}:" in result.stderr
    assert "missing: kubectl " not in result.stderr
    assert commands_of(result.stdout) == [], "nothing may run before every tool is there"
    assert not state.exists()


@pytest.mark.parametrize("script", (KIND_UP, KIND_DOWN), ids=lambda path: path.name)
def test_unknown_argument_is_a_usage_error(script: Path) -> None:
    result = run_script(str(script), "--yes")
    assert result.returncode == 2
    assert "usage:" in result.stderr and "--dry-run" in result.stderr
    assert commands_of(result.stdout) == []


@pytest.mark.parametrize("example", ["01-hello", "02-nightly", "03-nested-expansion", "05-stuck-demo"])
def test_examples_split_into_jobnets_to_apply_and_jobruns_to_create(example: str) -> None:
    path = REPO / "examples" / f"{example}.yaml"
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for kind in ("JobNet", "JobRun"):
        result = run_script("-c", f'source "{KIND_UP}" && documents_of_kind {kind} "{path}"')
        assert result.returncode == 0, result.stderr
        selected = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        assert selected == [doc for doc in documents if doc["kind"] == kind]  # same documents, same order


def test_known_hosts_line_is_the_host_key_under_the_examples_name(tmp_path: Path) -> None:
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "a comment", "-f", str(key)], check=True)
    result = run_script("-c", f'source "{KIND_UP}" && known_hosts_line vm1.batch.example "{key}.pub"')
    assert result.returncode == 0, result.stderr
    key_type, key_b64 = Path(f"{key}.pub").read_text().split()[:2]
    assert result.stdout == f"vm1.batch.example {key_type} {key_b64}\n"


def test_vm_entrypoint_without_the_secret_stops_naming_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ssh_host_ed25519_key").write_text("a key\n")
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.defpath, "JOBNET_VM_KEYS": str(tmp_path / "keys"), "JOBNET_VM_RUN_DIR": str(tmp_path / "run")},
    )
    assert result.returncode == 1
    assert f"{tmp_path}/keys/authorized_keys is missing or empty" in result.stderr
    assert "Secret vm1-sshd" in result.stderr
    assert not (tmp_path / "run").exists(), "nothing is written before the keys are there"


#: Stand-ins for docker and kind that keep what exists (clusters, images) in the file $FAKE_WORLD:
#: enough to see which steps kind-down takes, and that a second run finds nothing left to do.
FAKE_KIND = """#!/bin/sh
case "$1 $2" in
  "get clusters") sed -n 's/^cluster://p' "$FAKE_WORLD" ;;
  "delete cluster") sed -i "/^cluster:$4\\$/d" "$FAKE_WORLD" ;;
  *) exit 3 ;;
esac
"""
FAKE_DOCKER = """#!/bin/sh
case "$1 $2" in
  "info ") ;;
  "image inspect") grep -qx "image:$3" "$FAKE_WORLD" ;;
  "image rm") sed -i "/^image:$3\\$/d" "$FAKE_WORLD" ;;
  *) exit 3 ;;
esac
"""


def test_kind_down_removes_what_exists_and_a_second_run_finds_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("kind", FAKE_KIND), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    world = tmp_path / "world"
    world.write_text("cluster:other\ncluster:jobnet\nimage:jobnet-operator:kind\n")
    state = tmp_path / "state"
    (state / "keys").mkdir(parents=True)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_WORLD": str(world), "JOBNET_KIND_STATE": str(state)}

    first = run_script(str(KIND_DOWN), env=env)
    assert first.returncode == 0, first.stderr
    assert commands_of(first.stdout) == [
        f"kind delete cluster --name jobnet --kubeconfig {state}/kubeconfig",
        "docker image rm jobnet-operator:kind",
        f"rm -rf {state}",
    ]
    assert "jobnet-demo-vm:kind: not there" in first.stdout
    assert world.read_text() == "cluster:other\n" and not state.exists()

    second = run_script(str(KIND_DOWN), env=env)
    assert second.returncode == 0, second.stderr
    assert commands_of(second.stdout) == []
    assert "no such cluster: nothing to delete" in second.stdout


def test_generate_keys_makes_the_keys_once_and_keeps_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    env = {"JOBNET_KIND_STATE": str(state)}
    first = run_script("-c", f'source "{KIND_UP}" && generate_keys', env=env)
    assert first.returncode == 0, first.stderr
    assert [command.split()[0] for command in commands_of(first.stdout)] == [
        "ssh-keygen",
        "ssh-keygen",
        "known_hosts_line",
    ]
    made = {path.name: path.read_bytes() for path in state.iterdir()}
    assert sorted(made) == [
        "operator_id_ed25519", "operator_id_ed25519.pub", "vm1.known_hosts",
        "vm1_ssh_host_ed25519_key", "vm1_ssh_host_ed25519_key.pub",
    ]  # fmt: skip

    second = run_script("-c", f'source "{KIND_UP}" && generate_keys', env=env)
    assert second.returncode == 0, second.stderr
    assert [command.split()[0] for command in commands_of(second.stdout)] == ["known_hosts_line"]
    assert second.stdout.count("exists: kept") == 2
    assert {path.name: path.read_bytes() for path in state.iterdir()} == made


def test_runs_that_do_not_succeed_in_time_stop_kind_up_with_their_trees(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    # No operator: the run is created but never starts, so the bounded wait must give up.
    assert emulator.kubectl("apply", "-f", str(REPO / "deploy" / "kind" / "namespace.yaml")).rc == 0
    env = {"KUBECONFIG": str(emulator.kubeconfig), "HOME": str(tmp_path), "JOBNET_KIND_TIMEOUT": "2s"}
    result = run_script(
        "-c", f'source "{KIND_UP}" && apply_examples examples/01-hello.yaml && wait_for_runs "${{CREATED_RUNS[@]}}"',
        env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    (run,) = re.findall(r"^   jobrun\.jobnet\.dev/(hello-\w+)$", result.stdout, re.MULTILINE)
    assert f"+ kubectl jobnet tree --namespace jobnet-demo {run}" in result.stdout
    assert f"JobRun {run} (namespace jobnet-demo, JobNet hello)" in result.stdout
    assert "the runs did not all succeed within 2s" in result.stderr
    assert "Done" not in result.stdout
