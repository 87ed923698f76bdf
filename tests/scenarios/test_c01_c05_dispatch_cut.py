"""C01–C05: the network between the operator and a VM breaks while a launch is being dispatched.

The fault must hit an SSH connection that is already open (a fresh connection that cannot be made
proves the launch never left: that is B06, a Failed job). So every run here has two VMs:

* ``net`` (the VM under test) runs ``warmup`` first, which opens the operator's agent channel to
  it and keeps it open for the rest of the run;
* ``ctl`` runs ``gate``, a job that waits for a ``go`` file the test writes straight onto ``ctl``'s
  disk (no network involved) after injecting the fault on ``net``;
* ``target`` (on ``net``, after ``warmup`` and ``gate``) is then launched over the broken
  connection, and ``downstream`` (on ``net``) follows it.

The faults: ``cut()`` (the host side of the link goes down: the launch request never reaches the
agent), ``drop("out")`` (the request reaches the agent, which starts the job, but no answer
comes back) and ``drop("in")`` (the request is held: TCP keeps retransmitting it, so it may still
reach the agent once the VM accepts packets again). All are undone only once the scenario's point
is proven.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from jobnet.core.agentproto import key_text
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM, operator_connections, wait_connections_gone

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

Fault = Literal["cut", "drop-out", "drop-in"]

#: How long a script waits for a file at most (polls every 0.05 s: 2 minutes).
WAIT_POLLS = 2400


@dataclass
class CutRun:
    """One run of the two-VM JobNet described in the module docstring."""

    scenario: Scenario
    name: str
    net: NamespaceVM
    ctl: NamespaceVM
    run: str
    #: the operator log's length when the fault was injected (its lines come after)
    log_at_fault: int = 0

    def path(self, job: str) -> str:
        return f"/{self.name}/{job}"

    @property
    def uid(self) -> str:
        return str(self.scenario.get_run(self.run)["metadata"]["uid"])

    def key(self, job: str, attempt: int = 1) -> str:
        """The agent's key text ``run:path#attempt`` (as in the agent log)."""
        return key_text(self.uid, self.path(job), attempt)

    def agent_lines(self, job: str, attempt: int = 1) -> list[str]:
        """The agent log lines of ``net`` about one launch of ``job``."""
        key = self.key(job, attempt)
        return [line for line in self.scenario.agent_log(self.net).splitlines() if key in line]

    def launch_over_broken_link(self, fault: Fault) -> None:
        """Once ``warmup`` ran (the channel to ``net`` is open) and ``gate`` runs: break the
        link to ``net`` (``cut``, ``drop-out`` or ``drop-in``), then let ``gate`` end so that ``target`` is
        launched at once, well before the operator can notice the dead connection."""
        self.scenario.wait_job_state(self.run, self.path("warmup"), "Succeeded", timeout=60)
        self.scenario.wait_job_state(self.run, self.path("gate"), "Running", timeout=60)
        assert operator_connections(self.net), f"no open connection to {self.net.netns} to break"
        self.log_at_fault = len(self.scenario.operator_log())
        if fault == "cut":
            self.net.cut()
        else:
            self.net.drop(fault.removeprefix("drop-"))
        self.ctl.put_file("go", "", 0o644)
        first = self.scenario.wait_operator_log(
            rf"job={re.escape(self.path('target'))} .*(launch outcome unknown|cannot reach the agent for launch)",
            timeout=30,
        )
        assert first.group(1) == "launch outcome unknown", (
            "the operator had already given up the connection when the launch left (the machine was too slow "
            f"for the dead-connection deadline), so the fault did not hit an open connection: {first.group(0)}"
        )

    def wait_old_connection_gone(self) -> None:
        """Until the kernel has given up the connection the launch left on: after that, nothing
        queued before the cut can reach the VM when the link comes back."""
        wait_connections_gone(self.net)

    @property
    def net_host(self) -> str:
        """How the operator log names ``net``: ``user@address:22``."""
        return f"{self.net.user}@{self.net.address}:22"

    def wait_reconnected(self, log_offset: int) -> None:
        """Until the operator log, from ``log_offset`` on, shows a new agent channel to ``net``."""
        opened = re.compile(rf"agent channel to {re.escape(self.net_host)} open")
        wait_until(
            lambda: opened.search(self.scenario.operator_log()[log_offset:]),
            timeout=60,
            what=f"a new agent channel to {self.net_host}",
            describe=lambda: self.scenario.operator_log()[log_offset:][-4000:],
        )


def start_cut_run(
    scenario: Scenario,
    name: str,
    *,
    target_body: Callable[[NamespaceVM], str] = lambda net: "exit 0\n",
    retry: dict[str, Any] | None = None,
    stuck_resolution: str = "Auto",
) -> CutRun:
    net = scenario.vm("net")
    ctl = scenario.vm("ctl")
    gate = scenario.marker_script(ctl, "gate", wait_for_file(ctl.home / "go"))
    jobs: list[dict[str, Any]] = [
        {"name": "warmup", "script": scenario.marker_script(net, "warmup")},
        {"name": "gate", "script": gate, "host": scenario.host(ctl)},
        {
            "name": "target",
            "script": scenario.marker_script(net, "target", target_body(net)),
            "after": ["warmup", "gate"],
        },
        {"name": "downstream", "script": scenario.marker_script(net, "downstream"), "after": ["target"]},
    ]
    spec: dict[str, Any] = {"stuckResolution": stuck_resolution}
    if retry is not None:
        spec["retry"] = retry
    run = scenario.run_jobnet(name, scenario.host(net), jobs, **spec)
    return CutRun(scenario, name, net, ctl, run)


def wait_for_file(path: Path) -> str:
    """Shell lines that wait (bounded) until ``path`` exists, and fail if it never does."""
    return f"""\
        n=0
        while [ ! -e {path} ] && [ $n -lt {WAIT_POLLS} ]; do sleep 0.05; n=$((n+1)); done
        [ -e {path} ]
        """


def overrides(status: dict[str, Any], path: str) -> list[dict[str, Any]]:
    return [entry for entry in status.get("overrides") or [] if entry["path"] == path]


# ---------------------------------------------------------------------- C01


def test_C01_cut_before_launch_reaches_agent_no_retry_stuck_then_annotate_ready_runs(scenario: Scenario) -> None:
    cut = start_cut_run(scenario, "c01")
    target = cut.path("target")

    cut.launch_over_broken_link("cut")
    try:
        job = scenario.wait_job_state(cut.run, target, "Stuck", timeout=60)
        # The launch left on the open connection and no answer came: the operator cannot know
        # whether the agent got it, so it does not guess Failed.
        assert job["reason"] == "LaunchOutcomeUnknown" and job["attempt"] == 1, job
        scenario.wait_connection_given_up(cut.net, since=cut.log_at_fault)  # the SSH failure
        cut.wait_old_connection_gone()
    finally:
        log_offset = len(scenario.operator_log())
        cut.net.restore()
    event = scenario.wait_event(cut.run, "JobStuck", contains=target)
    assert "LaunchOutcomeUnknown" in event["message"] and event["type"] == "Warning", event
    scenario.wait_phase(cut.run, "Stuck")
    # The agent is reachable again but has no record of the launch: nothing settles it by itself.
    cut.wait_reconnected(log_offset)
    assert scenario.job(cut.run, target)["state"] == "Stuck"
    assert "Stuck" in scenario.get_runs_table()
    assert cut.agent_lines("target") == [], "the agent never saw the launch"
    assert scenario.script_runs(cut.net, "target") == 0

    scenario.annotate(cut.run, "jobnet.dev/override", f"{target}=Ready")

    status = scenario.wait_phase(cut.run, "Succeeded", timeout=60)
    job = status["jobs"][target]
    assert job["state"] == "Succeeded" and job["attempt"] == 2 and job["exitCode"] == 0, job
    assert status["jobs"][cut.path("downstream")]["state"] == "Succeeded"
    runs = (cut.net.home / "markers" / "target").read_text().splitlines()
    assert len(runs) == 1 and runs[0].startswith(f"{target}#2 "), runs  # ran once: the new attempt
    # Before the re-run, attempt 1 was fenced on the agent: it can never start late.
    first = cut.agent_lines("target", 1)
    assert any("fenced: never launched here" in line for line in first), first
    assert not any("accepted" in line for line in first), first
    assert sum("accepted" in line for line in cut.agent_lines("target", 2)) == 1
    overridden = scenario.wait_event(cut.run, "Overridden", contains=target)
    assert "re-run" in overridden["message"] and "attempt 2" in overridden["message"], overridden
    assert [(o["fromState"], o["toState"]) for o in overrides(status, target)] == [("Stuck", "Ready")]
    scenario.wait_steering_removed(cut.run)


@pytest.mark.parametrize("connection", ["abandoned", "kept"])
def test_C01_override_ready_fences_a_late_launch(scenario: Scenario, connection: str) -> None:
    """C01 where the launch request is held in TCP, not lost: a person's re-run must not let the
    old request start attempt 1 next to attempt 2 when it finally arrives. The override first
    fences attempt 1 (impossible while the VM drops packets: the job stays Stuck, nothing starts);
    once packets flow, the held request and the fence race, and the script runs exactly once.

    ``abandoned``: the operator gives the dead connection up within seconds and fences over a new
    one, so the fence comes first (the held request, if the kernel still delivers it, is refused).
    ``kept``: with the product's long dead-connection deadline the fences queue on the same
    connection behind the held launch, which arrives first and runs: the re-run is not applied."""
    if connection == "kept":
        scenario.start_operator(*C05_DEADLINES)
    cut = start_cut_run(scenario, f"c01f-{connection}", retry={"intervalSeconds": 1})
    target = cut.path("target")

    cut.launch_over_broken_link("drop-in")
    try:
        job = scenario.wait_job_state(cut.run, target, "Stuck", timeout=60)
        assert job["reason"] == "LaunchOutcomeUnknown" and job["attempt"] == 1, job
        scenario.annotate(cut.run, "jobnet.dev/override", f"{target}=Ready")
        requested = scenario.wait_event(cut.run, "FenceRequested", contains=target)
        assert "attempt 1" in requested["message"] and "attempt 2" in requested["message"], requested
        retried = scenario.wait_event(cut.run, "FenceRetried", contains=target, timeout=60)
        assert retried["type"] == "Warning" and "stays Stuck" in retried["message"], retried
        job = scenario.job(cut.run, target)
        assert job["state"] == "Stuck" and job["reason"] == "LaunchOutcomeUnknown" and job["attempt"] == 1, job
        assert job["dispatch"]["op"] == "fence", job
        assert cut.agent_lines("target") == [] and cut.agent_lines("target", 2) == [], "nothing reached the agent"
        assert scenario.script_runs(cut.net, "target") == 0
    finally:
        cut.net.undrop("in")

    status = scenario.wait_phase(cut.run, "Succeeded", timeout=90)
    job = status["jobs"][target]
    assert job["state"] == "Succeeded" and job["exitCode"] == 0, job
    assert status["jobs"][cut.path("downstream")]["state"] == "Succeeded"
    runs = (cut.net.home / "markers" / "target").read_text().splitlines()
    assert len(runs) == 1 and runs[0].startswith(f"{target}#{job['attempt']} "), runs  # exactly once in total
    first, second = cut.agent_lines("target", 1), cut.agent_lines("target", 2)
    settled = [(o["fromState"], o["toState"]) for o in overrides(status, target)]
    assert job["attempt"] == (2 if connection == "abandoned" else 1), job
    if job["attempt"] == 2:
        # The fence came first: attempt 1 is claimed as never to run; the held request, if it still
        # arrived, was refused.
        assert any("fenced: never launched here" in line for line in first), first
        assert not any("accepted: script" in line for line in first), first
        known = (
            "fenced: never launched here",
            "fence found the key already failedToStart",  # a retried fence
            "launch ignored: key was fenced",
            "acknowledged (failedToStart)",
        )
        assert [line for line in first if not any(what in line for what in known)] == [], first
        assert sum("accepted: script" in line for line in second) == 1, second
        assert settled == [("Stuck", "Ready")], settled
        overridden = scenario.wait_event(cut.run, "Overridden", contains=target)
        assert "attempt 2" in overridden["message"], overridden
    else:
        # The held request came first and ran attempt 1: the fence found it, the re-run was not applied.
        assert sum("accepted: script" in line for line in first) == 1, first
        assert any("fence found the key already" in line for line in first), first
        assert second == [], second
        assert settled == [("Stuck", "Running")] or settled == [("Stuck", "Succeeded")], settled
        warning = scenario.wait_event(cut.run, "OverrideNotApplied", contains=target)
        assert "attempt 1 was found" in warning["message"] and warning["type"] == "Warning", warning
    scenario.wait_steering_removed(cut.run)


# ---------------------------------------------------------------------- C02, C03


def launch_with_lost_answer(scenario: Scenario, name: str, exit_code: int, resolution: str) -> CutRun:
    """The launch of ``target`` reaches the agent, which runs it to ``exit_code``, but its answer
    never comes back and there is no retry: the job is Stuck. Returns once the network is back."""
    cut = start_cut_run(scenario, name, target_body=lambda net: f"exit {exit_code}\n", stuck_resolution=resolution)
    target = cut.path("target")
    cut.launch_over_broken_link("drop-out")
    try:
        job = scenario.wait_job_state(cut.run, target, "Stuck", timeout=60)
        assert job["reason"] == "LaunchOutcomeUnknown" and job["attempt"] == 1, job
        event = scenario.wait_event(cut.run, "JobStuck", contains=target)
        assert "LaunchOutcomeUnknown" in event["message"], event
        scenario.wait_phase(cut.run, "Stuck")
        # Meanwhile, on the VM, the job ran to its end: the agent log says so.
        scenario.wait_agent_log(cut.net, rf"{re.escape(cut.key('target'))} exited with code {exit_code}\b")
        assert scenario.script_runs(cut.net, "target") == 1
        assert scenario.job(cut.run, target)["state"] == "Stuck"
    finally:
        cut.net.undrop("out")
    return cut


def settle_lost_answer(scenario: Scenario, name: str, exit_code: int, resolution: str) -> tuple[CutRun, dict[str, Any]]:
    """C02/C03 up to the run's end: with ``Auto`` the agent's journal settles the Stuck job once the
    network is back; with ``Manual`` a person does (after the operator said what the agent knows).
    Returns the run and its final status, having checked that ``target`` was launched once."""
    final, phase = ("Succeeded", "Succeeded") if exit_code == 0 else ("Failed", "Failed")
    cut = launch_with_lost_answer(scenario, name, exit_code, resolution)
    target = cut.path("target")
    if resolution == "Auto":
        scenario.wait_event(cut.run, "StuckResolved", contains=target, timeout=60)
    else:
        # The agent may first report it running; what settles it is its end.
        scenario.wait_event(
            cut.run,
            "StuckOutcomeKnown",
            timeout=60,
            contains=f"{target}: the agent reports the job exited with code {exit_code}",
        )
        job = scenario.job(cut.run, target)
        assert job["state"] == "Stuck" and "settle it with an override" in job["message"], job
        assert scenario.script_runs(cut.net, "downstream") == 0
        scenario.annotate(cut.run, "jobnet.dev/override", f"{target}={final}")

    status = scenario.wait_phase(cut.run, phase, timeout=60)
    job = status["jobs"][target]
    assert job["state"] == final and job["attempt"] == 1, job
    # Launched once: one accepted launch, never a repeated one, never a second attempt.
    lines = cut.agent_lines("target")
    assert sum("accepted" in line for line in lines) == 1, lines
    assert not any("launch ignored" in line for line in lines), lines
    assert cut.agent_lines("target", 2) == []
    assert scenario.script_runs(cut.net, "target") == 1
    settled = overrides(status, target)
    if resolution == "Auto":
        # Straight to the end, or through Running when an older journal entry (accepted, running) came first.
        assert (
            len(settled) == 1 and settled[0]["fromState"] == "Stuck" and settled[0]["toState"] in (final, "Running")
        ), settled
        assert settled[0]["by"] == "jobnet-operator (auto)", settled
        assert job["exitCode"] == exit_code, job
    else:
        assert [(o["fromState"], o["toState"]) for o in settled] == [("Stuck", final)], settled
        assert settled[0].get("by") != "jobnet-operator (auto)", settled
        scenario.wait_event(cut.run, "Overridden", contains=target)
        assert "StuckResolved" not in scenario.event_reasons(cut.run)
    return cut, status


@pytest.mark.parametrize("resolution", ["Auto", "Manual"])
def test_C02_cut_after_start_exit0_stuck_then_resolved_or_annotated_succeeded(
    scenario: Scenario, resolution: str
) -> None:
    cut, status = settle_lost_answer(scenario, "c02", 0, resolution)

    assert status["jobs"][cut.path("downstream")]["state"] == "Succeeded"
    assert scenario.script_runs(cut.net, "downstream") == 1
    scenario.wait_event(cut.run, "RunSucceeded")


@pytest.mark.parametrize("resolution", ["Auto", "Manual"])
def test_C03_cut_after_start_exit_nonzero_stuck_then_resolved_or_annotated_failed(
    scenario: Scenario, resolution: str
) -> None:
    cut, status = settle_lost_answer(scenario, "c03", 3, resolution)

    if resolution == "Auto":
        job = status["jobs"][cut.path("target")]
        assert job["reason"] == "NonZeroExit" and job["exitCode"] == 3, job
    assert status["jobs"][cut.path("downstream")]["state"] == "Skipped"
    assert scenario.script_runs(cut.net, "downstream") == 0
    scenario.wait_event(cut.run, "RunFailed")


# ---------------------------------------------------------------------- C04, C05


def test_C04_cut_before_launch_reaches_agent_retried_after_reconnect_runs_once(scenario: Scenario) -> None:
    cut = start_cut_run(scenario, "c04", retry={"dispatchAttempts": 30, "intervalSeconds": 1})
    target = cut.path("target")

    cut.launch_over_broken_link("cut")
    try:
        scenario.wait_event(cut.run, "DeliveryRetried", contains=target, timeout=60)
        cut.wait_old_connection_gone()  # so the first request can never arrive late
        assert scenario.job(cut.run, target)["state"] == "Starting"
    finally:
        cut.net.restore()

    status = scenario.wait_phase(cut.run, "Succeeded", timeout=60)
    job = status["jobs"][target]
    assert job["state"] == "Succeeded" and job["attempt"] == 1 and job["exitCode"] == 0, job
    assert scenario.script_runs(cut.net, "target") == 1
    assert status["jobs"][cut.path("downstream")]["state"] == "Succeeded"
    # The agent saw the launch once: from a retry, after the reconnect.
    lines = cut.agent_lines("target")
    assert sum("accepted" in line for line in lines) == 1 and not any("launch ignored" in line for line in lines), lines
    reasons = scenario.event_reasons(cut.run)
    assert "JobStuck" not in reasons and "JobFailed" not in reasons, reasons
    # Operator log, from the cut on (the set-up's channels end with the same lines): the disconnect
    # (the kernel gave the connection up, or the heartbeat's drop came first) and the retry, then
    # the reconnect and the retried launch.
    log = scenario.operator_log()[cut.log_at_fault :]
    host = re.escape(cut.net_host)
    disconnect = re.search(
        rf"agent channel to {host} lost|host={host} no heartbeat for \S+: dropping the connection", log
    )
    retry = re.search(rf"job={re.escape(target)} .*DeliveryRetried: .*retrying with the same key", log)
    assert disconnect and retry, log[-5000:]
    position = max(disconnect.end(), retry.end())
    for what, pattern in (
        ("the reconnect", rf"SSH connected to {host}"),
        ("the new agent channel", rf"agent channel to {host} open"),
        ("the retried launch", rf"job={re.escape(target)} .*launching"),
    ):
        found = re.compile(pattern).search(log, position)
        assert found, (
            f"{what} ({pattern}) is missing from the operator log after the disconnect:\n{log[position:][-5000:]}"
        )
        position = found.end()


#: C05's connection must outlive the loss of the answers, as it does with the default deadlines (a
#: request timeout far below the dead-connection timeout): while the VM's answers are lost, TCP
#: holds back the retried requests; when they flow again, the retries reach the agent.
C05_DEADLINES = ("--ssh-dead-connection-timeout=40", "--heartbeat-deadline=40")


def test_C05_cut_after_start_retried_launch_ignored_by_agent_job_succeeds_once(scenario: Scenario) -> None:
    scenario.start_operator(*C05_DEADLINES)
    cut = start_cut_run(
        scenario,
        "c05",
        retry={"dispatchAttempts": 30, "intervalSeconds": 1},
        target_body=lambda net: wait_for_file(net.home / "release"),
    )
    target = cut.path("target")
    key = re.escape(cut.key("target"))

    cut.launch_over_broken_link("drop-out")
    try:
        scenario.wait_agent_log(cut.net, rf"{key} started pid", timeout=30)
        # The answer is lost; the operator repeats the launch by the same key (twice at least).
        scenario.wait_event(cut.run, "DeliveryRetried", contains=f"{target}: launch attempt 2 to", timeout=30)
        assert scenario.job(cut.run, target)["state"] == "Starting"
    finally:
        cut.net.undrop("out")
    ignored = scenario.wait_agent_log(cut.net, rf"{key} launch ignored: already started \(pid (\d+)\)", timeout=30)
    scenario.wait_job_state(cut.run, target, "Running", timeout=60)
    cut.net.put_file("release", "", 0o644)

    status = scenario.wait_phase(cut.run, "Succeeded", timeout=60)
    job = status["jobs"][target]
    assert job["state"] == "Succeeded" and job["attempt"] == 1 and job["exitCode"] == 0, job
    assert job["pid"] == int(ignored.group(1)), (job, ignored.group(0))
    assert scenario.script_runs(cut.net, "target") == 1
    assert status["jobs"][cut.path("downstream")]["state"] == "Succeeded"
    lines = cut.agent_lines("target")
    assert sum("accepted" in line for line in lines) == 1 and sum("started pid" in line for line in lines) == 1, lines
    assert cut.agent_lines("target", 2) == []
    reasons = scenario.event_reasons(cut.run)
    assert "JobStuck" not in reasons and "JobFailed" not in reasons, reasons
