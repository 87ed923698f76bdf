"""F06-F09: a stop arrives just after the script exited by itself; the real exit decides.

How the "just exited" race is made deterministic (no luck involved): each watched job's script
blocks until the test creates a gate file. Once the job is Running, the test drops every packet
leaving the VM (``vm.drop("out")``: requests still reach the agent, its answers and events never
come back), opens the gate, and waits until the *agent log* says the script exited. At that
moment the operator provably does not know (the job's status still says Running), and the test
annotates the stop. The kill reaches the agent after the exit (its log says the kill was not
needed); only then are the answers let through again (``vm.undrop("out")``) and TCP delivers the
held-back exit event and kill answer. This operator runs with long heartbeat, dispatch, request
and dead-connection deadlines, so nothing times out while the answers are held back and the
window lasts exactly as long as the test keeps it open; and with no SSH keepalives the kill is the
only thing the operator sends meanwhile (an unanswered keepalive would put TCP into loss recovery,
which holds back every later segment: the kill would only leave after the undrop).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

STOP = "jobnet.dev/stop"
#: Nothing may time out while the test holds the agent's answers back (see the module docstring).
PATIENT_OPERATOR = (
    "--heartbeat-deadline=60",
    "--dispatch-timeout=60",
    "--agent-request-timeout=60",
    "--ssh-dead-connection-timeout=60",
    "--ssh-keepalive=600",
)


def gated_script(scenario: Scenario, vm: NamespaceVM, name: str, exit_code: int) -> str:
    """A marker script that waits for the gate file ``gates/<name>``, then exits ``exit_code``."""
    gate = vm.home / "gates" / name
    gate.parent.mkdir(exist_ok=True)
    return scenario.marker_script(vm, name, f"while [ ! -e {gate} ]; do sleep 0.05; done\nexit {exit_code}\n")


def open_gate(vm: NamespaceVM, name: str) -> None:
    (vm.home / "gates" / name).touch()


def wait_agent_line(scenario: Scenario, vm: NamespaceVM, run: str, pattern: str, timeout: float = 30) -> None:
    """Wait for ``pattern`` in the agent log; a failure shows the agent log, the run and the operator log."""
    regex = re.compile(pattern)
    wait_until(
        lambda: regex.search(scenario.agent_log(vm)),
        timeout=timeout,
        what=f"{pattern!r} in the agent log",
        describe=lambda: f"agent log:\n{scenario.agent_log(vm)[-3000:]}\n{scenario.describe(run)}",
    )


def stop_just_after_exit(
    scenario: Scenario, vm: NamespaceVM, run: str, job: str, stop_path: str, exit_code: int
) -> None:
    """Let ``job`` (gate named after its last path segment) exit with ``exit_code`` while the
    operator cannot hear it, then stop ``stop_path``; returns once the agent has ignored the kill
    and the answers flow again."""
    scenario.wait_job_state(run, job, "Running", timeout=60)
    vm.drop("out")
    try:
        open_gate(vm, job.rsplit("/", 1)[1])
        wait_agent_line(scenario, vm, run, rf"{re.escape(job)}#1 exited with code {exit_code}\b")
        assert scenario.job(run, job)["state"] == "Running", "the operator must not know of the exit yet"

        scenario.annotate(run, STOP, stop_path)

        wait_agent_line(scenario, vm, run, rf"{re.escape(job)}#1 kill ignored: already exited with code {exit_code}\b")
        # The decision is stored before the kill leaves: the operator stopped a job it believed running.
        assert scenario.job(run, job)["state"] == "Stopping", scenario.job(run, job)
    finally:
        vm.undrop("out")


def sub_jobnet_manifests(
    scenario: Scenario, vm: NamespaceVM, name: str, first: str, second: str
) -> list[dict[str, Any]]:
    """JobNet ``<name>`` = [sub-jobnet ``inner`` (expanding ``<name>-inner``: first -> second),
    ``tail`` after it], and the JobRun ``<name>-1``."""
    tail = scenario.marker_script(vm, f"{name}-tail")
    return [
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobNet",
            "metadata": {"name": f"{name}-inner"},
            "spec": {
                "jobs": [{"name": "first", "script": first}, {"name": "second", "script": second, "after": ["first"]}]
            },
        },
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobNet",
            "metadata": {"name": name},
            "spec": {
                "host": scenario.host(vm),
                "jobs": [
                    {"name": "inner", "expand": f"{name}-inner"},
                    {"name": "tail", "script": tail, "after": ["inner"]},
                ],
            },
        },
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobRun",
            "metadata": {"name": f"{name}-1"},
            "spec": {"jobNetRef": name},
        },
    ]


def test_F06_stop_job_that_just_exited_0_keeps_success_and_downstream_starts(scenario: Scenario) -> None:
    vm = scenario.vm()
    scenario.start_operator(*PATIENT_OPERATOR)
    first = gated_script(scenario, vm, "first", 0)
    second = gated_script(scenario, vm, "second", 0)
    run = scenario.run_jobnet(
        "f06",
        scenario.host(vm),
        [
            {"name": "first", "script": first},
            {"name": "second", "script": second, "after": ["first"]},
        ],
    )

    stop_just_after_exit(scenario, vm, run, "/f06/first", "/f06/first", 0)

    job = scenario.wait_job_state(run, "/f06/first", "Succeeded", timeout=60)
    assert job["exitCode"] == 0, job
    # Its downstream starts, and the run keeps running.
    scenario.wait_job_state(run, "/f06/second", "Running", timeout=60)
    assert scenario.status(run)["phase"] == "Running"
    scenario.wait_operator_log(r"job=/f06/first .*kill not needed: the job had already ended")
    assert "JobStopped" not in scenario.event_reasons(run)
    scenario.wait_event(run, "StopRequested", contains="/f06/first")

    open_gate(vm, "second")
    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    assert status["jobs"]["/f06/second"]["state"] == "Succeeded"
    assert scenario.script_runs(vm, "first") == 1 and scenario.script_runs(vm, "second") == 1


@pytest.mark.parametrize("stop_path", ["/", "/f07/inner"], ids=["run", "sub-jobnet"])
def test_F07_stop_run_or_sub_jobnet_whose_job_just_exited_0_succeeded_downstream_never_starts(
    scenario: Scenario, stop_path: str
) -> None:
    vm = scenario.vm()
    scenario.start_operator(*PATIENT_OPERATOR)
    first = gated_script(scenario, vm, "first", 0)
    second = scenario.marker_script(vm, "second")
    scenario.apply(sub_jobnet_manifests(scenario, vm, "f07", first, second))
    run = "f07-1"

    stop_just_after_exit(scenario, vm, run, "/f07/inner/first", stop_path, 0)

    status = scenario.wait_phase(run, "Stopped", timeout=60)
    jobs = status["jobs"]
    assert jobs["/f07/inner/first"]["state"] == "Succeeded" and jobs["/f07/inner/first"]["exitCode"] == 0, jobs
    assert jobs["/f07/inner/second"]["state"] == "Stopped", jobs["/f07/inner/second"]
    assert jobs["/f07/inner/second"]["reason"] == "StopRequested"
    # Under a stopped run the tail is Stopped; after a stopped sub-jobnet it is Skipped.
    assert jobs["/f07/tail"]["state"] == ("Stopped" if stop_path == "/" else "Skipped"), jobs["/f07/tail"]
    assert jobs["/f07/inner"]["state"] == "Stopped", jobs["/f07/inner"]  # the sub-jobnet ends as a unit
    assert scenario.script_runs(vm, "first") == 1
    assert scenario.script_runs(vm, "second") == 0 and scenario.script_runs(vm, "f07-tail") == 0
    assert "/f07/inner/second" not in scenario.agent_log(vm), "the downstream job must never reach the agent"
    scenario.wait_operator_log(r"job=/f07/inner/first .*kill not needed: the job had already ended")
    scenario.wait_event(run, "RunStopped")


def test_F08_stop_job_that_just_exited_non_zero_fails_and_downstream_never_starts(scenario: Scenario) -> None:
    vm = scenario.vm()
    scenario.start_operator(*PATIENT_OPERATOR)
    first = gated_script(scenario, vm, "first", 3)
    second = scenario.marker_script(vm, "second")
    run = scenario.run_jobnet(
        "f08",
        scenario.host(vm),
        [
            {"name": "first", "script": first},
            {"name": "second", "script": second, "after": ["first"]},
        ],
    )

    stop_just_after_exit(scenario, vm, run, "/f08/first", "/f08/first", 3)

    status = scenario.wait_phase(run, "Failed", timeout=60)
    job = status["jobs"]["/f08/first"]
    assert job["state"] == "Failed" and job["exitCode"] == 3 and job["reason"] == "NonZeroExit", job
    assert status["jobs"]["/f08/second"]["state"] == "Skipped", status["jobs"]["/f08/second"]
    assert scenario.script_runs(vm, "first") == 1 and scenario.script_runs(vm, "second") == 0
    assert "/f08/second" not in scenario.agent_log(vm), "the downstream job must never reach the agent"
    event = scenario.wait_event(run, "JobFailed", contains="/f08/first")
    assert "exited with code 3" in event["message"]
    assert "JobStopped" not in scenario.event_reasons(run)
    scenario.wait_operator_log(r"job=/f08/first .*kill not needed: the job had already ended")


@pytest.mark.parametrize("stop_path", ["/", "/f09/inner"], ids=["run", "sub-jobnet"])
def test_F09_stop_run_or_sub_jobnet_whose_job_just_exited_non_zero_fails_the_run(
    scenario: Scenario, stop_path: str
) -> None:
    vm = scenario.vm()
    scenario.start_operator(*PATIENT_OPERATOR)
    first = gated_script(scenario, vm, "first", 3)
    second = scenario.marker_script(vm, "second")
    scenario.apply(sub_jobnet_manifests(scenario, vm, "f09", first, second))
    run = "f09-1"

    stop_just_after_exit(scenario, vm, run, "/f09/inner/first", stop_path, 3)

    status = scenario.wait_phase(run, "Failed", timeout=60)
    jobs = status["jobs"]
    assert jobs["/f09/inner/first"]["state"] == "Failed" and jobs["/f09/inner/first"]["exitCode"] == 3, jobs
    assert jobs["/f09/inner/second"]["state"] == "Stopped", jobs["/f09/inner/second"]
    assert jobs["/f09/tail"]["state"] == ("Stopped" if stop_path == "/" else "Skipped"), jobs["/f09/tail"]
    assert jobs["/f09/inner"]["state"] == "Failed", jobs["/f09/inner"]  # the real failure wins over the stop
    assert scenario.script_runs(vm, "first") == 1
    assert scenario.script_runs(vm, "second") == 0 and scenario.script_runs(vm, "f09-tail") == 0
    assert "/f09/inner/second" not in scenario.agent_log(vm), "the downstream job must never reach the agent"
    scenario.wait_event(run, "JobFailed", contains="/f09/inner/first")
    event = scenario.wait_event(run, "RunFailed")
    assert "Failed" in event["message"]
