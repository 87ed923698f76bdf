"""The chaos test's world: the scenario tests' ``scenario`` (a :class:`Scenario` with its VMs)."""

from tests.scenarios.conftest import scenario, vm_factory  # noqa: F401 (pytest fixtures, shared)
