"""D04: the operator process is killed (kill -9) mid-run and restarted: no job runs twice, results
that finished meanwhile are collected, jobs still running are followed to their end, the run
completes. Also the API server being unreachable for a while (the operator keeps running but
cannot store anything) while a job ends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


def wait_for(gate: Path) -> str:
    """Shell lines that wait (bounded: 60 s) until ``gate`` exists, and fail if it never does."""
    return f"for i in $(seq 600); do [ -e {gate} ] && break; sleep 0.1; done\n[ -e {gate} ]\n"


def test_D04_operator_killed_mid_run_collects_results_and_completes(scenario: Scenario) -> None:
    vm = scenario.vm()
    # Each job runs until the test lets it end (bounded: 60 s), whatever the load: quick once the
    # operator is dead (a fixed sleep could end before the test saw it Running, or before the
    # kill), long once the operator is back (it could end before the restart).
    quick_may_end, long_may_end = vm.home / "quick-may-end", vm.home / "long-may-end"
    quick = scenario.marker_script(vm, "quick", wait_for(quick_may_end) + "echo quick done\n")
    long = scenario.marker_script(vm, "long", wait_for(long_may_end))
    join = scenario.marker_script(vm, "join")
    run = scenario.run_jobnet(
        "d04",
        scenario.host(vm),
        [
            {"name": "quick", "script": quick},
            {"name": "long", "script": long},
            {"name": "join", "script": join, "after": ["quick", "long"]},
        ],
    )
    scenario.wait_job_state(run, "/d04/quick", "Running", timeout=60)
    scenario.wait_job_state(run, "/d04/long", "Running", timeout=60)
    operator = scenario.operator
    assert operator is not None

    operator.kill()
    # While nobody watches: quick ends (its result must not be lost), long keeps running.
    quick_may_end.touch()
    scenario.wait_agent_log(vm, r"/d04/quick#1 exited with code 0", timeout=30)
    assert scenario.job(run, "/d04/quick")["state"] == "Running"  # the status still says so
    assert not re.search(r"/d04/long#1 exited", scenario.agent_log(vm)), "long ended before the restart"
    log_before_restart = len(operator.log_text())
    operator.start()
    long_may_end.touch()

    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    for name in ("quick", "long", "join"):
        job = status["jobs"][f"/d04/{name}"]
        assert job["state"] == "Succeeded" and job["attempt"] == 1 and job["exitCode"] == 0, (name, job)
        assert scenario.script_runs(vm, name) == 1, f"{name} ran {scenario.script_runs(vm, name)} times"
    assert status["jobs"]["/d04/quick"]["outputTail"] == "quick done\n"
    assert status["jobs"]["/d04/join"]["startedAt"] >= status["jobs"]["/d04/long"]["finishedAt"]
    restarted = operator.log_text()[log_before_restart:]
    assert re.search(rf"run=default/{run} runtime started \(phase Running\)", restarted), restarted[-3000:]
    assert re.search(r"agent channel to \S+ open", restarted), restarted[-3000:]
    agent_log = scenario.agent_log(vm)
    assert len(re.findall(r"accepted: script", agent_log)) == 3, agent_log
    scenario.wait_event(run, "RunSucceeded")


def test_D04_operator_killed_right_after_a_launch_left_never_runs_it_twice(scenario: Scenario) -> None:
    vm = scenario.vm()
    first = scenario.marker_script(vm, "first")
    second = scenario.marker_script(vm, "second", "sleep 2\n")
    third = scenario.marker_script(vm, "third")
    run = scenario.run_jobnet(
        "d04l",
        scenario.host(vm),
        [
            {"name": "first", "script": first},
            {"name": "second", "script": second, "after": ["first"]},
            {"name": "third", "script": third, "after": ["second"]},
        ],
    )
    operator = scenario.operator
    assert operator is not None
    scenario.wait_operator_log(r"job=/d04l/second .*launching", timeout=60)
    operator.kill()  # the launch request may or may not have reached the agent
    operator.start()

    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    for name in ("first", "second", "third"):
        job = status["jobs"][f"/d04l/{name}"]
        assert job["state"] == "Succeeded" and job["attempt"] == 1, (name, job)
        assert scenario.script_runs(vm, name) == 1, f"{name} ran {scenario.script_runs(vm, name)} times"
    agent_log = scenario.agent_log(vm)
    assert len(re.findall(r"/d04l/second#1 accepted", agent_log)) == 1, agent_log
    assert len(re.findall(r"/d04l/second#1 started pid", agent_log)) == 1, agent_log


def test_D04_api_server_unreachable_while_a_job_ends_then_the_run_completes(scenario: Scenario) -> None:
    vm = scenario.vm()
    work_may_end = vm.home / "work-may-end"  # once the API server is unreachable, whatever the load
    work = scenario.marker_script(vm, "work", wait_for(work_may_end))
    downstream = scenario.marker_script(vm, "next")
    run = scenario.run_jobnet(
        "d04a",
        scenario.host(vm),
        [
            {"name": "work", "script": work},
            {"name": "next", "script": downstream, "after": ["work"]},
        ],
    )
    scenario.wait_job_state(run, "/d04a/work", "Running", timeout=60)

    log_before_outage = len(scenario.operator_log())  # a status write that failed before does not count
    with scenario.emulator.outage():
        work_may_end.touch()
        scenario.wait_agent_log(vm, r"/d04a/work#1 exited with code 0", timeout=30)
        # The operator knows the result but cannot store it; nothing acts before it is stored.
        scenario.wait_operator_log(rf"run=default/{run} cannot store the status", timeout=30, since=log_before_outage)
        assert scenario.script_runs(vm, "next") == 0

    status = scenario.wait_phase(run, "Succeeded", timeout=60)

    assert status["jobs"]["/d04a/work"]["exitCode"] == 0 and status["jobs"]["/d04a/work"]["attempt"] == 1
    assert scenario.script_runs(vm, "work") == 1 and scenario.script_runs(vm, "next") == 1
    assert scenario.operator is not None and scenario.operator.process is not None
    assert scenario.operator.process.poll() is None, "the operator survived the outage"
