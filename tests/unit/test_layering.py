"""The import-linter contracts of pyproject.toml hold: the pure core imports no I/O edge, the
agent imports nothing but the standard library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))

pytestmark = pytest.mark.skipif(
    not Path(LINT_IMPORTS).exists(), reason="import-linter is not installed (pip install -e '.[test]')"
)


def lint_imports(cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_contracts_are_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_importing_an_edge_breaks_the_contract(tmp_path):
    # The same contracts on a copy of the layout in which the core imports paramiko: proves
    # the check above can fail.
    for package in ("jobnet", "jobnet/core", "jobnet/kube", "jobnet/ssh", "jobnet_agent"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "jobnet/cli.py").write_text("")
    (tmp_path / "jobnet/core/leaky.py").write_text("import paramiko\n")
    contracts = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[tool.importlinter]", 1)[1]
    (tmp_path / "pyproject.toml").write_text("[tool.importlinter]" + contracts, encoding="utf-8")
    result = lint_imports(tmp_path, extra_path=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "jobnet.core.leaky -> paramiko" in result.stdout, result.stdout
