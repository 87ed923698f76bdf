"""Fixtures for tests over real SSH into namespace VMs (see tests/support/vm.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobnet.ssh import AgentInstaller
from tests.support.vm import NamespaceVM, missing_requirements, vm, vm_factory  # noqa: F401 (fixtures)
from tests.vm.harness import AgentHarness

_SKIP_REASON = missing_requirements()
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.vm)
            if _SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=_SKIP_REASON))


@pytest.fixture(scope="session")
def agent_installer(tmp_path_factory: pytest.TempPathFactory) -> AgentInstaller:
    """The operator's installer with the agent zipapp built from this checkout."""
    import jobnet_agent
    from jobnet_agent.bundle import build_zipapp

    zipapp = build_zipapp(tmp_path_factory.mktemp("agent") / "jobnet-agent.pyz")
    return AgentInstaller(zipapp, jobnet_agent.__version__)


@pytest.fixture
def agent(vm: NamespaceVM, agent_installer: AgentInstaller) -> Iterator[AgentHarness]:  # noqa: F811 (the vm fixture, imported above)
    """The real agent in a fresh VM, connected through the operator's SSH client."""
    harness = AgentHarness(vm, agent_installer)
    harness.connect()
    yield harness
    harness.close()
