"""The import-linter contracts of pyproject.toml hold (run as `make lint` runs them, scripts/lint):
cli above the console, the console above the edges (kube, plugin, devenv), the edges above ssh,
ssh above the shared leaves, everything above the pure core; the core imports no I/O library;
the agent imports nothing but the standard library. A missing import-linter fails these tests:
it never skips them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]

#: Standard library modules newer than the agent's oldest Python (3.8).
NEWER_THAN_PYTHON_3_8 = {"graphlib", "zoneinfo", "tomllib", "_typeshed"}


def test_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(REPO / "scripts/lint"), "imports"],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_agent_imports_only_the_standard_library_of_python_3_8() -> None:
    # The forbidden contract names the libraries we know of; this catches any other.
    graph = grimp.build_graph("jobnet_agent", include_external_packages=True, cache_dir=None)
    external = {module for module in graph.modules if not module.startswith("jobnet_agent")}
    assert external, "grimp found no imports at all: the check would pass on nothing"
    not_stdlib = {m for m in external if m not in sys.stdlib_module_names or m in NEWER_THAN_PYTHON_3_8}
    assert not_stdlib == set()


#: A copy of the package layout, each module importing nothing.
LAYOUT = ("cli", "argtypes", "metrics", "crdgen", "manifests", "core/__init__", "kube/__init__", "ssh/__init__")
LAYOUT += ("plugin/__init__", "devenv/__init__")
LAYOUT += ("console/__init__", "console/views", "console/graphview", "console/i18n")  # named by a contract


@pytest.mark.parametrize(
    ("module", "imports", "broken"),
    [
        ("core/leaky", "import paramiko", "jobnet.core.leaky -> paramiko"),
        ("core/upward", "import jobnet.metrics", "jobnet.core.upward -> jobnet.metrics"),
        ("ssh/upward", "import jobnet.kube", "jobnet.ssh.upward -> jobnet.kube"),
        ("plugin/sideways", "import jobnet.devenv", "jobnet.plugin.sideways -> jobnet.devenv"),
        ("core/agent", "import jobnet_agent", "jobnet.core.agent -> jobnet_agent"),
    ],
)
def test_an_import_against_the_layers_breaks_a_contract(tmp_path: Path, module: str, imports: str, broken: str) -> None:
    # The same contracts on a copy of the layout with one bad import: proves the check above can fail.
    for name in LAYOUT:
        (tmp_path / "jobnet" / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "jobnet" / f"{name}.py").write_text("")
    (tmp_path / "jobnet/__init__.py").write_text("")
    (tmp_path / "jobnet_agent").mkdir()
    (tmp_path / "jobnet_agent/__init__.py").write_text("")
    (tmp_path / "jobnet" / f"{module}.py").write_text(imports + "\n")
    contracts = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[tool.importlinter]", 1)[1]
    (tmp_path / "pyproject.toml").write_text("[tool.importlinter]" + contracts, encoding="utf-8")
    lint_imports = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    result = subprocess.run(
        [sys.executable, "-c", lint_imports, "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout, result.stdout
