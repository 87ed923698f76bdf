"""Paths of the kind quick start, and the names its scripts use (read from deploy/kind/lib.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KIND_DIR = REPO / "deploy" / "kind"
KIND_UP = REPO / "scripts" / "kind-up"
KIND_DOWN = REPO / "scripts" / "kind-down"
LIB = KIND_DIR / "lib.sh"
VM_DIR = KIND_DIR / "vm"
ENTRYPOINT = VM_DIR / "entrypoint.sh"


def script_value(name: str, script: Path = LIB) -> str:
    """The value of the shell variable ``name`` once ``script`` is sourced."""
    result = subprocess.run(
        ["bash", "-c", f'source "{script}" && printf %s "${{{name}}}"'],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def manifests(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
