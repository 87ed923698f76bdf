"""Load: a run of 400 jobs fanned out over 2 VMs completes with few API writes per job, and its
JobRun never grows past 1 MiB (docs/scale.md); launches queued in the operator longer than the
dispatch timeout are not taken as lost."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
from datetime import datetime

import pytest

from jobnet.core.runstatus import PLAIN_MAX_ENTRIES, decoded_status
from tests.support.apiwatch import JobRunWatch
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm, pytest.mark.slow]

MiB = 1024 * 1024
PER_VM = 200
#: Status writes per job, on average. A job moves Pending -> Starting -> Running -> Succeeded;
#: without coalescing that is 3 writes per job, with it many jobs share one write.
MAX_STATUS_WRITES_PER_JOB = 2.0


def test_load_400_jobs_over_2_vms_complete_with_few_writes_and_small_objects(scenario: Scenario) -> None:
    vm_a, vm_b = scenario.vm("a"), scenario.vm("b")
    fan = [{"name": f"a{i:03d}", "script": "/bin/true", "after": ["start"]} for i in range(PER_VM)]
    fan += [
        {"name": f"b{i:03d}", "script": "/bin/true", "after": ["start"], "host": scenario.host(vm_b)}
        for i in range(PER_VM)
    ]
    jobs = [
        {"name": "start", "script": "/bin/true"},
        *fan,
        {"name": "end", "script": "/bin/true", "after": [job["name"] for job in fan]},
    ]
    # The product's default deadlines: with the scenario tests' short ones (3 s per agent request)
    # a launch queued behind a hundred others on a loaded 2-core machine is taken as lost.
    scenario.start_operator("--agent-request-timeout=30", "--dispatch-timeout=60", "--heartbeat-deadline=30")

    with JobRunWatch(scenario.emulator, "load-1") as watch:
        scenario.run_jobnet("load", scenario.host(vm_a), jobs)
        status = scenario.wait_phase("load-1", "Succeeded", timeout=240)
        # The run's last Event may follow its last status write (launches and writes go first).
        scenario.wait_event("load-1", "RunSucceeded", timeout=60)
    job_count = len(jobs)
    stored = decoded_status(status)

    assert status["progress"] == f"{job_count}/{job_count}"
    assert "jobChunks" in status and job_count + 1 > PLAIN_MAX_ENTRIES  # a chunked run, as designed
    for job in jobs:
        entry = stored["jobs"][f"/load/{job['name']}"]
        assert entry["state"] == "Succeeded" and entry["attempt"] == 1 and entry["exitCode"] == 0, (job, entry)
    hosts = {stored["jobs"][f"/load/{name}"]["host"] for name in ("a000", "b000")}
    assert hosts == {f"{vm_a.user}@{vm_a.address}:22", f"{vm_b.user}@{vm_b.address}:22"}

    writes = len(watch.writes)
    reasons = scenario.event_reasons("load-1")
    events = len(reasons)
    print(
        f"\n{job_count} jobs: {writes} JobRun writes ({writes / job_count:.2f} per job), {events} Events, "
        f"largest object {watch.largest / 1024:.1f} KiB, "
        f"{job_count / (watch.writes[-1].at - watch.created_at):.0f} jobs/s end to end"
    )
    assert watch.writes and watch.largest < MiB
    assert writes / job_count <= MAX_STATUS_WRITES_PER_JOB, f"{writes} writes for {job_count} jobs"
    assert "cannot store the status" not in scenario.operator_log()
    assert reasons == ["RunSucceeded"], sorted(set(reasons))  # nothing went Stuck or was retried on the way

    # Every job is still visible to people: kubectl jobnet tree decodes the chunks.
    tree = subprocess.run(
        ["kubectl", "jobnet", "tree", "load-1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(scenario.emulator.kubeconfig)},
        check=False,
    )
    assert tree.returncode == 0, tree.stderr
    shown = set(re.findall(r"\b[ab]\d{3}\b|\bstart\b|\bend\b", tree.stdout))
    assert shown == {job["name"] for job in jobs}, sorted({job["name"] for job in jobs} - shown)
    assert tree.stdout.count("Succeeded") >= job_count


def test_load_operator_killed_mid_run_of_300_jobs_resumes_from_the_chunked_status(scenario: Scenario) -> None:
    """kill -9 of the operator while a chunked 302-job run is half done: the restarted operator
    rebuilds the run from the compressed chunks, launches nothing twice and collects what
    finished meanwhile."""
    vms = [scenario.vm("a"), scenario.vm("b")]
    scripts = [scenario.marker_script(vm, "fan", "sleep 0.2\n") for vm in vms]
    fan = [
        {"name": f"f{i:03d}", "script": scripts[i % 2], "after": ["start"], "host": scenario.host(vms[i % 2])}
        for i in range(300)
    ]
    jobs = [
        {"name": "start", "script": "/bin/true"},
        *fan,
        {"name": "end", "script": "/bin/true", "after": [job["name"] for job in fan]},
    ]
    operator = scenario.start_operator("--agent-request-timeout=30", "--dispatch-timeout=20", "--heartbeat-deadline=30")
    run = scenario.run_jobnet("load", scenario.host(vms[0]), jobs)

    wait_until(
        lambda: (scenario.status(run).get("counts") or {}).get("Succeeded", 0) >= 60,
        timeout=120,
        what="60 jobs Succeeded",
    )
    operator.kill()
    before = decoded_status(scenario.status(run))
    assert "jobChunks" in scenario.status(run) and len(before["jobs"]) == len(jobs) + 1
    unfinished = [path for path, entry in before["jobs"].items() if entry["state"] != "Succeeded"]
    assert unfinished, "the run ended before the kill"
    log_before_restart = len(operator.log_text())
    operator.start()

    settled = wait_until(
        lambda: scenario.status(run).get("phase") in ("Succeeded", "Failed", "Stuck"),
        timeout=180,
        what="the run settles after the restart",
    )
    status = decoded_status(scenario.status(run))
    unsucceeded = {path: entry for path, entry in status["jobs"].items() if entry["state"] != "Succeeded"}
    assert settled and status["phase"] == "Succeeded", (
        f"{json.dumps(unsucceeded, indent=1)}\n{operator.log_text()[log_before_restart:][-4000:]}"
    )

    for job in jobs:
        entry = status["jobs"][f"/load/{job['name']}"]
        assert entry["state"] == "Succeeded" and entry["attempt"] == 1, (job, entry)
    runs = collections.Counter(
        line.split("#")[0] for vm in vms for line in (vm.home / "markers" / "fan").read_text().splitlines()
    )
    assert runs == {f"/load/{job['name']}": 1 for job in fan}, {path: n for path, n in runs.items() if n != 1}
    for vm, count in zip(vms, (151 + 1, 150), strict=True):  # start and end run on the first VM
        assert len(re.findall(r"accepted: script", scenario.agent_log(vm))) == count
    restarted = operator.log_text()[log_before_restart:]
    assert re.search(rf"run=default/{run} runtime started \(phase Running\)", restarted), restarted[-3000:]


#: Seconds a launch may go unanswered once sent; the test's queue is far longer than that.
QUEUE_DISPATCH_TIMEOUT = 1.5


def test_load_launches_queued_longer_than_the_dispatch_timeout_are_not_taken_as_lost(scenario: Scenario) -> None:
    """One launch in flight per VM: 300 launches wait in the operator, the last ones far longer
    than the dispatch timeout. The timeout counts from each launch's send, so none is retried or
    goes Stuck, and every script runs once."""
    vm = scenario.vm()
    script = scenario.marker_script(vm, "queued")
    fan = [{"name": f"q{i:03d}", "script": script, "after": ["start"]} for i in range(300)]
    jobs = [{"name": "start", "script": "/bin/true"}, *fan]
    scenario.start_operator(
        "--max-inflight-launches-per-host=1", f"--dispatch-timeout={QUEUE_DISPATCH_TIMEOUT}", "--heartbeat-deadline=30"
    )
    run = scenario.run_jobnet("queue", scenario.host(vm), jobs)
    status = scenario.wait_phase(run, "Succeeded", timeout=240)

    stored = decoded_status(status)
    assert all(stored["jobs"][f"/queue/{job['name']}"]["attempt"] == 1 for job in jobs)
    scenario.wait_event(run, "RunSucceeded")  # posted after the status that says Succeeded
    assert scenario.event_reasons(run) == ["RunSucceeded"]  # no DeliveryRetried, JobStuck, LaunchDeduplicated
    runs = collections.Counter(line.split("#")[0] for line in (vm.home / "markers" / "queued").read_text().splitlines())
    assert runs == {f"/queue/{job['name']}": 1 for job in fan}, {path: n for path, n in runs.items() if n != 1}
    # The queue really outlasted the timeout (else nothing was checked): launches sent over
    # a span longer than it, one at a time.
    sent = [
        datetime.strptime(match, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for match in re.findall(
            r"\[(\S+ \S+)\] jobnet\.runtime .*job=/queue/q\d+ .*: launching", scenario.operator_log()
        )
    ]
    assert len(sent) == len(fan), len(sent)
    assert max(sent) - min(sent) > QUEUE_DISPATCH_TIMEOUT, f"the queue drained in {max(sent) - min(sent):.2f}s"
