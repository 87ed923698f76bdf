"""Fixtures of the console's browser tests: the scenario world (emulator, real operator, namespace
VMs; tests/scenarios/conftest.py), the console process acting as a named person (kubeconfig
impersonation), and headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.console.browser import ConsoleProcess, Page, chromium, missing_browser
from tests.scenarios.conftest import scenario, vm_factory  # noqa: F401 (the fixtures, shared)
from tests.support.emulator import grant
from tests.support.scenario import Scenario
from tests.support.stuck import after_the_cut, cut_until_stuck

#: The person the console acts as in the tests (the kubeconfig's ``as``).
PERSON = "alice@example.com"


def impersonating_kubeconfig(kubeconfig: Path, workdir: Path, user: str, groups: tuple[str, ...] = ()) -> Path:
    """A copy of ``kubeconfig`` whose user acts as ``user`` (``users[].user.as``, like ``kubectl --as``)."""
    document = yaml.safe_load(kubeconfig.read_text())
    for entry in document["users"]:
        entry["user"]["as"] = user
        if groups:
            entry["user"]["as-groups"] = list(groups)
    path = workdir / f"kubeconfig-as-{re.sub(r'[^a-z0-9]+', '-', user)}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = missing_browser()
    if reason:
        pytest.skip(f"browser tests need headless Chromium: {reason}")
    with chromium() as driver:
        yield driver


@pytest.fixture
def console(scenario: Scenario, tmp_path: Path) -> Iterator[Callable[..., ConsoleProcess]]:  # noqa: F811
    """``console(user=PERSON, rules=CONSOLE_USER_RULES)``: start ``jobnet console`` acting as that
    person, who is granted ``rules`` in namespace default first."""
    started: list[ConsoleProcess] = []

    def start(
        user: str = PERSON, rules: list[dict[str, list[str]]] | None = None, groups: tuple[str, ...] = ()
    ) -> ConsoleProcess:
        grant(
            scenario.emulator, f"console-{re.sub(r'[^a-z0-9]+', '-', user)}", rules or CONSOLE_USER_RULES, users=[user]
        )
        kubeconfig = impersonating_kubeconfig(scenario.emulator.kubeconfig, tmp_path, user, groups)
        process = ConsoleProcess(kubeconfig, tmp_path).start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def page(browser: Any, console: Callable[..., ConsoleProcess]) -> Page:
    """The browser on the console acting as :data:`PERSON`."""
    return Page(browser, console().url)


def stuck_run(scenario: Scenario, jobnet: str) -> tuple[Any, str, str]:  # noqa: F811
    """A run of ``work`` then ``next`` (``stuckResolution: Manual``) whose ``work`` is Stuck
    HeartbeatLost: the link to its VM was cut while it ran, and restored once it was Stuck (the
    job stays Stuck: a person decides). Returns the VM, the run's name and the job's path."""
    # 3 s from the cut on (a 3 s sleep from the start could end before a loaded test cut the link)
    vm, run, path = cut_until_stuck(scenario, jobnet, after_the_cut("sleep 3\n"), "Manual")
    scenario.wait_phase(run, "Stuck", timeout=30)
    return vm, run, path


#: What a person needs to use every screen and action of the console (docs/console.md).
CONSOLE_USER_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": ["jobnet.dev"], "resources": ["jobruns"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["jobnet.dev"], "resources": ["jobnets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    # The full output of a job: the credentials Secret of its host (as `kubectl jobnet logs`).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]
