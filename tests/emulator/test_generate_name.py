"""generateName as a real API server handles it: the base is cut to 58 characters, then 5 random
characters follow, so the name of a generated Event or JobRun is never longer than 63."""

from __future__ import annotations

import pytest
import yaml

from tests.support.emulator import EmulatorServer

pytestmark = [pytest.mark.emulator]


@pytest.mark.parametrize("base", ["short-", "x" * 57 + "-", "y" * 70 + "-"])
def test_generate_name_is_cut_like_the_api_servers(emulator: EmulatorServer, base: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": base}}
    result = emulator.kubectl("create", "-f", "-", "-o", "jsonpath={.metadata.name}", input=yaml.safe_dump(manifest))
    assert result.rc == 0, result.stderr
    name = result.stdout
    assert name.startswith(base[:58]) and len(name) == min(len(base), 58) + 5
