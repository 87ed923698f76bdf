"""The static checks hold on this tree, run exactly as `make lint` runs them (scripts/lint, the one
definition): ruff's rules, ruff's formatting, mypy --strict on every package. A missing tool fails
these tests: it never skips them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lint(check: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        [str(REPO / "scripts/lint"), check], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


# mypy on the whole operator takes minutes on a busy machine (its cache makes repeats fast).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("check", ["ruff", "format", "mypy-operator", "mypy-agent"])
def test_check_passes(check: str) -> None:
    result = lint(check)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_tool_fails_the_check_instead_of_skipping_it(tmp_path: Path) -> None:
    # An interpreter that cannot import ruff: scripts/lint must say so and fail.
    no_tools = tmp_path / "python"
    no_tools.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    no_tools.chmod(0o755)
    env = {**os.environ, "PYTHON": str(no_tools)}
    result = subprocess.run(
        [str(REPO / "scripts/lint"), "ruff"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ruff is not installed" in result.stderr
    assert "lint: FAILED: ruff" in result.stderr


def test_make_lint_and_ci_run_the_same_checks() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "\nlint: setup\n\tPYTHON=$(PYTHON) scripts/lint\n" in makefile
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split()[1:]
    targets = re.findall(r"^([a-z][\w-]*):", makefile, flags=re.MULTILINE)
    assert sorted(phony) == sorted(targets), "every .PHONY name is a target, and every target is phony"
    ci = (REPO / ".ci/run").read_text(encoding="utf-8").splitlines()
    assert ci.index("make lint") < ci.index("make test")


def test_make_test_draws_the_same_property_examples_every_run() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "HYPOTHESIS_PROFILE=ci $(PYTHON) -m pytest" in makefile
    probe = "import tests.conftest; from hypothesis import settings; print(settings.default.derandomize)"
    for profile, derandomized in (("ci", "True"), ("explore", "False")):
        env = {**os.environ, "HYPOTHESIS_PROFILE": profile}
        result = subprocess.run(
            [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        assert result.stdout.strip() == derandomized, profile
