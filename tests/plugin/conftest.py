"""Fixtures of the plugin tests: a JobRun with a written status in the API emulator, and the
plugin run in-process or as a real command (directly or through the real kubectl)."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobnet.cli import kubectl_plugin_main
from tests.support.emulator import EmulatorServer
from tests.support.kube import (
    GROUP_VERSION,
    expand_job,
    jobnet,
    jobrun,
    kubectl_apply,
    script_job,
)

SCRIPTS_DIR = Path(sysconfig.get_path("scripts"))
PLUGIN = SCRIPTS_DIR / "kubectl-jobnet"
RUN = "nightly-1"
T0 = "2026-11-22T03:00:00.000Z"


def stuck_status() -> dict[str, Any]:
    """A run in the middle of trouble: two jobs done, step1 Stuck, the rest waiting."""
    done = {"host": "vm1.internal", "attempt": 1, "exitCode": 0}
    return {
        "phase": "Stuck",
        "progress": "2/6",
        "startedAt": T0,
        "counts": {"Succeeded": 2, "Stuck": 1, "Pending": 3},
        "jobs": {
            "/nightly": {"state": "Stuck"},
            "/nightly/extract": {
                "state": "Succeeded",
                **done,
                "startedAt": T0,
                "finishedAt": "2026-11-22T03:00:02.500Z",
            },
            "/nightly/transform": {
                "state": "Succeeded",
                **done,
                "startedAt": "2026-11-22T03:00:02.510Z",
                "finishedAt": "2026-11-22T03:01:07.510Z",
            },
            "/nightly/load": {"state": "Stuck"},
            "/nightly/load/step1": {
                "state": "Stuck",
                "host": "vm1.internal",
                "attempt": 1,
                "pid": 4242,
                "startedAt": "2026-11-22T03:01:07.520Z",
                "reason": "HeartbeatLost",
                "message": (
                    "no heartbeat from the agent on vm1.internal for 30s; "
                    "the job may still be running or may have ended"
                ),
                "outputTail": "loading partition 7\n",
            },
            "/nightly/load/step2": {"state": "Pending"},
            "/nightly/report": {"state": "Pending"},
        },
    }


@dataclass
class Cli:
    """Runs the plugin against the emulator: in-process (``run``) or as the installed command."""

    emulator: EmulatorServer
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = kubectl_plugin_main([*args, "--kubeconfig", str(self.emulator.kubeconfig)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def environment(self, **extra: str) -> dict[str, str]:
        return {"PATH": f"{SCRIPTS_DIR}:/usr/bin:/bin", "HOME": str(self.emulator.workdir), **extra}

    def command(self, argv: list[str], timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=timeout, env=self.environment(**env)
        )

    def annotations(self, name: str = RUN, namespace: str = "default") -> dict[str, str]:
        body = self.emulator.get(GROUP_VERSION, "jobruns", namespace, name)
        assert body is not None
        return body["metadata"].get("annotations") or {}

    def set_status(self, status: dict[str, Any], name: str = RUN, namespace: str = "default") -> None:
        """Write the status through the API's /status subresource, as the operator does."""
        result = self.emulator.kubectl(
            "patch",
            "jobrun",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
        assert result.rc == 0, result.stderr


def nightly_objects(namespace: str = "default") -> list[dict[str, Any]]:
    report = script_job("report")
    nightly = jobnet(
        "nightly",
        script_job("extract"),
        script_job("transform", "extract"),
        expand_job("load", "load-net", "transform"),
        namespace=namespace,
        **{"finally": [report]},
    )
    load = jobnet("load-net", script_job("step1"), script_job("step2", "step1"), namespace=namespace)
    return [nightly, load, jobrun("nightly", RUN, namespace=namespace)]


@pytest.fixture
def cli(emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """JobNets nightly (extract -> transform -> load[load-net: step1 -> step2], finally report) and
    JobRun nightly-1 with a Stuck status, in namespace default."""
    assert PLUGIN.exists(), f"{PLUGIN} is missing: pip install -e . installs the kubectl-jobnet command"
    result = kubectl_apply(emulator, *nightly_objects(), verb="create")
    assert result.rc == 0, result.stderr
    helper = Cli(emulator, capsys)
    helper.set_status(stuck_status())
    yield helper


def write_kubeconfig(emulator: EmulatorServer, path: Path, namespace: str) -> Path:
    path.write_text(yaml.safe_dump(emulator.kubeconfig_dict(namespace)))
    os.chmod(path, 0o600)
    return path
