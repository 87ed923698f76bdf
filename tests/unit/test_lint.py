"""`jobnet lint`: multi-document files, cross-file expansions, one line per problem, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobnet.cli import main

REPO = Path(__file__).resolve().parents[2]
HOST = "{address: vm1.batch.example, user: batch, credentialsSecret: vm1-ssh}"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["lint", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


NIGHTLY = f"""
    apiVersion: jobnet.dev/v1alpha1
    kind: JobNet
    metadata: {{name: nightly}}
    spec:
      host: {HOST}
      jobs:
        - {{name: extract, script: /opt/extract.sh}}
        - {{name: load, expand: loader, after: [extract]}}
    ---
    apiVersion: jobnet.dev/v1alpha1
    kind: JobRun
    metadata: {{generateName: nightly-}}
    spec: {{jobNetRef: nightly}}
    """

LOADER = """
    apiVersion: v1
    kind: Secret
    metadata: {name: vm1-ssh}
    ---
    apiVersion: jobnet.dev/v1alpha1
    kind: JobNet
    metadata: {name: loader}
    spec:
      jobs:
        - {name: step1, script: /opt/step1.sh}
    """


def test_expansions_resolve_across_files(tmp_path, capsys):
    nightly = write(tmp_path, "nightly.yaml", NIGHTLY)
    loader = write(tmp_path, "loader.yml", LOADER)
    assert run(capsys, str(nightly), str(loader))[:2] == (0, [])
    code, out, err = run(capsys, str(tmp_path))
    assert (code, out) == (0, [])
    assert "3 manifests OK" in err


def test_every_problem_on_its_own_line_with_file_document_kind_and_path(tmp_path, capsys):
    nightly = write(tmp_path, "nightly.yaml", NIGHTLY)
    code, out, _ = run(capsys, str(nightly))
    assert code == 1
    assert out == [
        f"{nightly}:1 JobNet/nightly spec.jobs[1].expand: job 'load' expands JobNet 'loader', which does not exist",
        f"{nightly}:2 JobRun/nightly-* JobNet/nightly spec.jobs[1].expand: job 'load' expands JobNet 'loader', "
        "which does not exist",
    ]


def test_cycle_dangling_and_unknown_field_are_all_reported(tmp_path, capsys):
    path = write(
        tmp_path,
        "bad.yaml",
        f"""
        apiVersion: jobnet.dev/v1alpha1
        kind: JobNet
        metadata: {{name: bad}}
        spec:
          host: {HOST}
          jobs:
            - {{name: a, script: /a, after: [b]}}
            - {{name: b, script: /b, after: [a, ghost]}}
            - {{name: c, script: /c, timeout: 5}}
        """,
    )
    code, out, err = run(capsys, str(path))
    assert code == 1
    assert out == [
        f"{path}:1 JobNet/bad spec.jobs[2].timeout: unknown field",
        f"{path}:1 JobNet/bad spec.jobs[1].after[1]: job 'b' depends on 'ghost', which is not a job of this JobNet",
        f"{path}:1 JobNet/bad spec.jobs[1].after[0]: dependency cycle: a -> b -> a",
    ]
    assert "3 problems in 1 manifests" in err


def test_envelope_problems_and_duplicate_jobnets(tmp_path, capsys):
    first = write(tmp_path, "a.yaml", LOADER.replace("spec:", f"spec:\n      host: {HOST}"))
    second = write(
        tmp_path,
        "b.yaml",
        """
        apiVersion: jobnet.dev/v1alpha1
        kind: JobNet
        metadata: {name: loader}
        spec: {jobs: [{name: x, script: /x}]}
        ---
        apiVersion: jobnet.dev/v1beta9
        kind: JobNet
        metadata: {name: future}
        spec: {jobs: [{name: x, script: /x}]}
        ---
        apiVersion: jobnet.dev/v1alpha1
        kind: JobGraph
        metadata: {name: typo}
        spec: {}
        """,
    )
    code, out, _ = run(capsys, str(first), str(second))
    assert code == 1
    assert out == [
        f"{second}:1 JobNet/loader metadata.name: JobNet 'loader' is also defined at {first}:2",
        f"{second}:2 JobNet/future apiVersion: unsupported 'jobnet.dev/v1beta9', use 'jobnet.dev/v1alpha1'",
        f"{second}:3 JobGraph/typo kind: unknown kind 'JobGraph', expected JobNet, JobRun, JobSchedule, JobCalendar",
    ]


def test_root_jobnet_without_host_is_reported_but_expanded_one_is_not(tmp_path, capsys):
    loader = write(tmp_path, "loader.yaml", LOADER)
    code, out, _ = run(capsys, str(loader))
    assert code == 1
    assert out == [
        f"{loader}:2 JobNet/loader spec.jobs[0]: job 'step1' has no host: set host on the job, "
        "spec.host on JobNet 'loader', or a host on a JobNet or job that expands it"
    ]
    assert run(capsys, str(loader), str(write(tmp_path, "n.yaml", NIGHTLY)))[0] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "a manifest must be a mapping, got list"),
    ],
)
def test_unreadable_input_exits_2_with_a_clear_message(tmp_path, capsys, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    code, out, err = run(capsys, str(path))
    assert (code, out) == (2, [])
    assert str(path) in err and expected in err


def test_missing_file_exits_2(tmp_path, capsys):
    code, _, err = run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: no such file or directory" in err


def test_tree_shows_the_expanded_run(tmp_path, capsys):
    write(tmp_path, "nightly.yaml", NIGHTLY)
    write(tmp_path, "loader.yaml", LOADER)
    code, out, _ = run(capsys, "--tree", str(tmp_path))
    assert code == 0
    assert out == [
        f"{tmp_path / 'nightly.yaml'}:2 JobRun/nightly-*: 2 jobs",
        "  /nightly  [JobNet nightly]",
        "    extract  /opt/extract.sh  on batch@vm1.batch.example:22",
        "    load  [JobNet loader]  after extract",
        "      step1  /opt/step1.sh  on batch@vm1.batch.example:22",
    ]


def test_lint_never_imports_the_kubernetes_or_ssh_edges():
    probe = textwrap.dedent(
        """
        import json, sys
        from jobnet.cli import main
        code = main(["lint", "--tree", "examples"])
        edges = ("kopf", "kubernetes", "paramiko", "aiohttp", "jobnet.kube", "jobnet.ssh")
        heavy = sorted(m for m in edges if m in sys.modules)
        print(json.dumps({"code": code, "heavy": heavy}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) == {"code": 0, "heavy": []}


def test_console_script_exit_code(tmp_path):
    path = write(tmp_path, "nightly.yaml", NIGHTLY)
    result = subprocess.run(
        [sys.executable, "-m", "jobnet.cli", "lint", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "which does not exist" in result.stdout


def test_operator_subcommand_is_registered_from_the_kube_edge():
    result = subprocess.run(
        [sys.executable, "-m", "jobnet.cli", "operator", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--namespace" in result.stdout
