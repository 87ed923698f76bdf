"""``kubectl jobnet override RUN PATH STATE -m TEXT`` end to end: the real plugin writes the
annotations, the real operator applies the override and keeps the person's reason."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

PLUGIN_DIR = Path(sysconfig.get_path("scripts"))
REASON = "checked on the VM: the export is complete, exit 3 is a known false alarm"


def test_override_message_is_recorded_and_its_annotation_removed(scenario: Scenario) -> None:
    vm, run = scenario.run_failed_export_chain()

    environment = {
        "PATH": f"{PLUGIN_DIR}:/usr/bin:/bin",
        "HOME": str(scenario.workdir),
        "KUBECONFIG": str(scenario.emulator.kubeconfig),
        "XDG_CACHE_HOME": str(scenario.workdir / "cache"),
    }
    override = subprocess.run(
        ["kubectl", "jobnet", "override", run, "/chain/export", "Succeeded", "-m", REASON],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert override.returncode == 0, override.stderr

    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    [record] = status["overrides"]
    assert record["path"] == "/chain/export" and record["toState"] == "Succeeded", record
    assert record["message"].endswith(": " + REASON), record
    assert status["jobs"]["/chain/export"]["message"] == record["message"]
    assert scenario.script_runs(vm, "report") == 1
    event = scenario.wait_event(run, "Overridden", contains=REASON)
    assert event["message"] == f"/chain/export: {record['message']}"

    def annotations_removed() -> bool:
        annotations = scenario.get_run(run)["metadata"].get("annotations") or {}
        return not {"jobnet.dev/override", "jobnet.dev/override-message"} & set(annotations)

    wait_until(annotations_removed, timeout=15, what="the override annotations removed by the operator")
