"""F01: force-stop a running job, a running sub-jobnet, the whole run
(``kubectl annotate jobrun R jobnet.dev/stop=PATH --overwrite``).

Everything under the stopped path ends Stopped, nothing new starts under it, and the whole
process tree of each killed job is gone from the VM (the script and the child it forked).
What is outside the stopped path goes on as usual.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, process_gone

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

STOP = "jobnet.dev/stop"
#: A long job with a process tree: a forked child, and the script waiting for it.
TREE_BODY = 'sleep 300 &\necho $! > "$HOME/markers/$(basename "$0" .sh).child"\nwait\n'


def tree_script(scenario: Scenario, vm: NamespaceVM, name: str) -> str:
    return scenario.marker_script(vm, name, TREE_BODY)


def process_tree(vm: NamespaceVM, name: str) -> list[int]:
    """The pids of the tree script ``name`` once it runs: the script itself and its child."""
    child = vm.home / "markers" / f"{name}.child"
    wait_until(child.exists, timeout=30, what=f"{name} forked its child")
    marker = (vm.home / "markers" / name).read_text()
    script_pid = int(re.search(r" pid (\d+)", marker).group(1))  # type: ignore[union-attr]
    pids = [script_pid, int(child.read_text())]
    assert not any(process_gone(pid) for pid in pids), f"{name}'s processes should be running: {pids}"
    return pids


def assert_tree_dead(pids: list[int]) -> None:
    wait_until(lambda: all(process_gone(pid) for pid in pids), timeout=15, what=f"processes {pids} gone from the VM")


def assert_stopped(job: dict[str, Any], what: str) -> None:
    assert job["state"] == "Stopped" and job["reason"] == "StopRequested", (what, job)


def test_F01_stop_a_running_job(scenario: Scenario) -> None:
    vm = scenario.vm()
    run = scenario.run_jobnet(
        "f01j",
        scenario.host(vm),
        [
            {"name": "long", "script": tree_script(scenario, vm, "long")},
            {"name": "side", "script": scenario.marker_script(vm, "side", "echo side\n")},
            {"name": "next", "script": scenario.marker_script(vm, "next"), "after": ["long"]},
        ],
    )
    scenario.wait_job_state(run, "/f01j/long", "Running", timeout=60)
    pids = process_tree(vm, "long")

    # exactly as documented for people
    result = scenario.kubectl("annotate", "jobrun", run, f"{STOP}=/f01j/long", "--overwrite")
    assert result.rc == 0, result.stderr

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    assert_stopped(status["jobs"]["/f01j/long"], "the stopped job")
    assert status["jobs"]["/f01j/next"]["state"] == "Skipped", status["jobs"]["/f01j/next"]
    assert status["jobs"]["/f01j/side"]["state"] == "Succeeded"  # outside the stopped path
    assert_tree_dead(pids)
    assert scenario.script_runs(vm, "next") == 0
    assert scenario.script_runs(vm, "long") == 1
    scenario.wait_agent_log(vm, r"/f01j/long#1 kill requested \(stop")
    scenario.wait_event(run, "StopRequested")
    scenario.wait_event(run, "JobStopped", contains="/f01j/long")
    scenario.wait_event(run, "RunStopped")
    assert "job=/f01j/long" in scenario.operator_log()
    assert STOP not in (scenario.get_run(run)["metadata"].get("annotations") or {})


def test_F01_stop_a_running_sub_jobnet(scenario: Scenario) -> None:
    vm = scenario.vm()
    host = scenario.host(vm)
    scenario.apply(
        [
            {
                "apiVersion": "jobnet.dev/v1alpha1",
                "kind": "JobNet",
                "metadata": {"name": "f01inner"},
                "spec": {
                    "host": host,
                    "jobs": [
                        {"name": "first", "script": tree_script(scenario, vm, "first")},
                        {"name": "second", "script": scenario.marker_script(vm, "second"), "after": ["first"]},
                    ],
                },
            },
        ]
    )
    run = scenario.run_jobnet(
        "f01s",
        host,
        [
            {"name": "sub", "expand": "f01inner"},
            {"name": "side", "script": scenario.marker_script(vm, "side", "echo side\n")},
            {"name": "after-sub", "script": scenario.marker_script(vm, "after-sub"), "after": ["sub"]},
        ],
    )
    scenario.wait_job_state(run, "/f01s/sub/first", "Running", timeout=60)
    pids = process_tree(vm, "first")

    scenario.annotate(run, STOP, "/f01s/sub")

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    jobs = status["jobs"]
    assert_stopped(jobs["/f01s/sub/first"], "the running job of the sub-jobnet")
    assert_stopped(jobs["/f01s/sub/second"], "the job of the sub-jobnet that had not started")
    assert jobs["/f01s/sub"]["state"] == "Stopped", jobs["/f01s/sub"]
    assert jobs["/f01s/after-sub"]["state"] == "Skipped", jobs["/f01s/after-sub"]
    assert jobs["/f01s/side"]["state"] == "Succeeded"
    assert_tree_dead(pids)
    assert scenario.script_runs(vm, "second") == 0
    assert scenario.script_runs(vm, "after-sub") == 0
    assert "/f01s/sub" in (status.get("stopScopes") or []), status.get("stopScopes")
    scenario.wait_agent_log(vm, r"/f01s/sub/first#1 kill requested \(stop")
    scenario.wait_event(run, "JobStopped", contains="/f01s/sub/first")
    scenario.wait_event(run, "RunStopped")


def test_F01_stop_the_whole_run(scenario: Scenario) -> None:
    vm = scenario.vm()
    finally_jobs: dict[str, Any] = {"finally": [{"name": "cleanup", "script": scenario.marker_script(vm, "cleanup")}]}
    run = scenario.run_jobnet(
        "f01r",
        scenario.host(vm),
        [
            {"name": "left", "script": tree_script(scenario, vm, "left")},
            {"name": "right", "script": tree_script(scenario, vm, "right")},
            {"name": "join", "script": scenario.marker_script(vm, "join"), "after": ["left", "right"]},
        ],
        **finally_jobs,
    )
    scenario.wait_job_state(run, "/f01r/left", "Running", timeout=60)
    scenario.wait_job_state(run, "/f01r/right", "Running", timeout=60)
    pids = process_tree(vm, "left") + process_tree(vm, "right")

    scenario.annotate(run, STOP, "/")

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    jobs = status["jobs"]
    for path in ("/f01r/left", "/f01r/right", "/f01r/join", "/f01r/cleanup"):
        assert_stopped(jobs[path], path)
    assert_tree_dead(pids)
    for name in ("join", "cleanup"):
        assert scenario.script_runs(vm, name) == 0, f"{name} must not start under a stopped run"
    for name in ("left", "right"):
        assert scenario.script_runs(vm, name) == 1
    scenario.wait_agent_log(vm, r"/f01r/left#1 kill requested \(stop")
    scenario.wait_agent_log(vm, r"/f01r/right#1 kill requested \(stop")
    scenario.wait_event(run, "RunStopped")
    table = scenario.get_runs_table()
    assert re.search(rf"{run}\s.*Stopped", table), table
