"""B09: a job exceeding its ``timeoutSeconds`` is force-stopped like a user stop: its whole process
tree on the VM is killed (SIGTERM, grace, SIGKILL to the process group), the job is Failed with
reason TimedOut, an Event says so, and its downstream does not start."""

from __future__ import annotations

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def test_B09_timeout_kills_the_process_tree_and_fails_timed_out(scenario: Scenario) -> None:
    vm = scenario.vm()
    pids_file = vm.home / "tree.pids"
    # A tree: the script, a background child, and a grandchild that ignores SIGTERM (so the
    # agent's SIGKILL after the grace period is needed too).
    slow = scenario.marker_script(
        vm,
        "slow",
        f"""\
        sleep 300 &
        echo $! >> {pids_file}
        sh -c 'trap "" TERM; sleep 300 & echo $! >> {pids_file}; wait' &
        echo $! >> {pids_file}
        echo $$ >> {pids_file}
        wait
        """,
    )
    downstream = scenario.marker_script(vm, "after-slow")
    run = scenario.run_jobnet(
        "b09",
        scenario.host(vm),
        [
            {"name": "slow", "script": slow, "timeoutSeconds": 2},
            {"name": "next", "script": downstream, "after": ["slow"]},
        ],
    )
    scenario.wait_job_state(run, "/b09/slow", "Running", timeout=60)
    tree = wait_until(
        lambda: len(pids_file.read_text().split()) == 4 if pids_file.exists() else False,
        timeout=30,
        what="the job's process tree written to the pids file",
    )
    assert tree
    pids = [int(pid) for pid in pids_file.read_text().split()]

    status = scenario.wait_phase(run, "Failed", timeout=60)

    job = status["jobs"]["/b09/slow"]
    assert job["state"] == "Failed" and job["reason"] == "TimedOut", job
    assert status["jobs"]["/b09/next"]["state"] == "Skipped"
    assert scenario.script_runs(vm, "slow") == 1 and scenario.script_runs(vm, "after-slow") == 0
    timed_out = scenario.wait_event(run, "JobTimedOut", contains="/b09/slow")
    assert "timeout of 2s" in timed_out["message"] and timed_out["type"] == "Warning", timed_out
    failed = scenario.wait_event(run, "JobFailed", contains="/b09/slow")
    assert "TimedOut" in failed["message"], failed
    # Killed the way a user stop kills: through the agent, the whole process group, on the VM.
    # Seen from inside the VM; a zombie waiting for its reaper runs nothing any more.
    listing = vm.exec(f"ps -o pid=,stat= -p {','.join(map(str, pids))}", check=False)
    assert listing.returncode in (0, 1) and not listing.stderr, listing  # 1: none of them exists
    alive = [line.split()[0] for line in listing.stdout.splitlines() if not line.split()[1].startswith("Z")]
    assert alive == [], f"processes of the timed-out job still alive on the VM: {alive} (tree {pids})"
    agent_log = scenario.agent_log(vm)
    assert "/b09/slow#1 kill requested (timeout" in agent_log, agent_log
    assert "/b09/slow#1 sent SIGTERM to process group" in agent_log, agent_log
    assert "/b09/slow#1 sent SIGKILL to process group" in agent_log, agent_log
    assert "job=/b09/slow" in scenario.operator_log() and "killing (timeout" in scenario.operator_log()
