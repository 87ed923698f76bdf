"""B02: a job inside a nested expansion (``/rjn0008/rjn0001/j11``, examples/03-nested-expansion.yaml)
receives exactly the documented ``MM_*`` and ``JOBNET_*`` variables (docs/api.md), values checked
from what the script itself saw on the VM; plus the JobNet/job/JobRun env with its precedence."""

from __future__ import annotations

import os

import pytest

from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

#: Set by the test VM's sshd for every session (tests/support/vm.py), not by jobnet.
VM_SESSION_VARIABLES = {"JOBNET_AGENT_BOOT_ID_FILE"}


def _seen_environment(vm: NamespaceVM, job: str) -> dict[str, str]:
    """The environment job ``job``'s script saw (``env -0`` written on the VM)."""
    text = (vm.home / "env" / job).read_text()
    return dict(line.split("=", 1) for line in text.split("\0") if "=" in line)


def _jobnet_variables(env: dict[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in env.items()
        if name.startswith(("MM_", "JOBNET_")) and name not in VM_SESSION_VARIABLES
    }


def test_B02_nested_expansion_job_gets_the_documented_variables(scenario: Scenario) -> None:
    vm = scenario.vm()
    (vm.home / "env").mkdir()
    os.chown(vm.home / "env", vm.uid, vm.gid)
    dump = scenario.write_script(vm, "bin/dump-env.sh", f'env -0 > {vm.home}/env/"$(basename "$JOBNET_JOB_PATH")"\n')
    scenario.apply(f"""
        apiVersion: jobnet.dev/v1alpha1
        kind: JobNet
        metadata: {{name: rjn0001}}
        spec:
          env: {{LAYER: inner-jobnet, INNER_ONLY: "yes"}}
          jobs:
          - {{name: j11, script: {dump}, env: {{LAYER: j11-job}}}}
          - {{name: j12, script: {dump}, after: [j11]}}
        ---
        apiVersion: jobnet.dev/v1alpha1
        kind: JobNet
        metadata: {{name: rjn0008}}
        spec:
          host: {scenario.host(vm)}
          env: {{LAYER: outer-jobnet, OUTER_ONLY: "yes", RUN_WINS: jobnet}}
          jobs:
          - {{name: j1, script: {dump}}}
          - {{name: rjn0001, expand: rjn0001, after: [j1]}}
          - {{name: j2, script: {dump}, after: [rjn0001]}}
        ---
        apiVersion: jobnet.dev/v1alpha1
        kind: JobRun
        metadata: {{name: rjn0008-b02}}
        spec: {{jobNetRef: rjn0008, env: {{RUN_WINS: run}}}}
        """)

    status = scenario.wait_phase("rjn0008-b02", "Succeeded", timeout=60)
    uid = scenario.get_run("rjn0008-b02")["metadata"]["uid"]

    j11 = _seen_environment(vm, "j11")
    assert _jobnet_variables(j11) == {
        "MM_ACTUAL_JOB_ID": f"{uid}:/rjn0008/rjn0001/j11",
        "MM_ACTUAL_JOB_NAME_PATH": "/rjn0008/rjn0001/j11",
        "MM_ACTUAL_JOB_ANCESTOR_IDS": f"{uid}:/rjn0008/rjn0001",
        "MM_FULL_ACTUAL_JOB_ANCESTOR_IDS": f"{uid}:/rjn0008;{uid}:/rjn0008/rjn0001",
        "MM_TEMPLATE_JOB_ID": "rjn0001/j11",
        "MM_TEMPLATE_JOB_ANCESTOR_IDS": "rjn0001",
        "MM_ROOT_JOBNET_ID": f"{uid}:/rjn0008",
        "MM_TARGET_JOBNET_ID": f"{uid}:/rjn0008/rjn0001",
        "MM_SCHEDULE_ID": uid,
        "MM_SERVER_NAME": vm.address,  # the host the job runs on (its JobNet's host address)
        "JOBNET_RUN": "rjn0008-b02",
        "JOBNET_RUN_UID": uid,
        "JOBNET_JOB_PATH": "/rjn0008/rjn0001/j11",
        "JOBNET_ATTEMPT": "1",
        "JOBNET_NAMESPACE": "default",
    }
    # env precedence: outer JobNet < inner JobNet < job < JobRun
    assert (j11["LAYER"], j11["INNER_ONLY"], j11["OUTER_ONLY"], j11["RUN_WINS"]) == ("j11-job", "yes", "yes", "run")
    assert _seen_environment(vm, "j12")["LAYER"] == "inner-jobnet"

    # A job of the root JobNet: both ancestor lists are the root alone.
    j1 = _jobnet_variables(_seen_environment(vm, "j1"))
    assert j1["MM_ACTUAL_JOB_ANCESTOR_IDS"] == j1["MM_FULL_ACTUAL_JOB_ANCESTOR_IDS"] == f"{uid}:/rjn0008"
    assert (j1["MM_TEMPLATE_JOB_ID"], j1["MM_TEMPLATE_JOB_ANCESTOR_IDS"]) == ("rjn0008/j1", "rjn0008")
    assert j1["MM_TARGET_JOBNET_ID"] == f"{uid}:/rjn0008" and j1["JOBNET_JOB_PATH"] == "/rjn0008/j1"
    assert set(j1) == set(_jobnet_variables(j11)), "every job gets the same documented set"
    assert status["progress"] == "4/4"
