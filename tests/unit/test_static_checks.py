"""Static checks that guard the engineering standards: the pure core and the agent are fully
typed (mypy --strict), and no module has an undefined name, an unused import or a syntax error
(ruff's pyflakes rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def _require(module: str) -> None:
    if _run(module, "--version").returncode != 0:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")


@pytest.mark.parametrize("package", ["operator/jobnet/core", "agent/jobnet_agent"])
def test_typed_packages_pass_mypy_strict(package: str) -> None:
    _require("mypy")
    result = _run("mypy", "--strict", "--ignore-missing-imports", "--no-incremental", package)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_pyflakes_errors_anywhere() -> None:
    _require("ruff")
    result = _run("ruff", "check", "--no-cache", "--select", "F,E9", "operator", "agent", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr
