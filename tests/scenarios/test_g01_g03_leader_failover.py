"""G01-G03: one driver per run across operator replicas (leader election over a Lease).

G01 the leader is killed (SIGKILL) mid-run: the other replica takes over within the lease
duration, collects what finished meanwhile, and the run Succeeds; no job runs twice.
G02 the leader is frozen (SIGSTOP) past its lease; once resumed it sends no request to any agent
and writes nothing to the API server (its requests are recorded by the emulator) while the other
replica drives the run.
G03 the leader is cut off from the API server but still reaches the VMs: it stops acting before
its lease can expire (before the other replica acquires it), and the other replica drives the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.netutil import wait_until
from tests.support.replicas import (
    ACQUIRED,
    LEADS,
    RENEW_DEADLINE,
    SLACK,
    STOPS,
    TAKEOVER,
    Replica,
    agent_requests,
    ledger,
    ledger_script,
    stamp_of,
    start_replicas,
    stop_replicas,
    wait_to_lead,
)
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm]


@dataclass
class MidRun:
    """Two replicas (``leader`` leads) and a run of the chain first -> second -> third whose
    ``first`` job is Running."""

    leader: Replica
    other: Replica
    vm: NamespaceVM
    run: str
    paths: list[str]


@contextlib.contextmanager
def mid_run(scenario: Scenario, name: str, first_seconds: int) -> Iterator[MidRun]:
    """See :class:`MidRun` (``first`` sleeps ``first_seconds``); the replicas stop afterwards."""
    vm = scenario.vm()
    replicas = start_replicas(scenario, 2)
    try:
        jobs = [
            {"name": "first", "script": ledger_script(scenario, vm, f"{name}-first", f"sleep {first_seconds}\n")},
            {"name": "second", "script": ledger_script(scenario, vm, f"{name}-second"), "after": ["first"]},
            {"name": "third", "script": ledger_script(scenario, vm, f"{name}-third"), "after": ["second"]},
        ]
        run = scenario.run_jobnet(name, scenario.host(vm), jobs)
        scenario.wait_job_state(run, f"/{name}/first", "Running", timeout=30)
        yield MidRun(replicas[0], replicas[1], vm, run, [f"/{name}/{job['name']}" for job in jobs])
    finally:
        stop_replicas(replicas)


def assert_each_ran_once(vm: NamespaceVM, paths: list[str]) -> None:
    lines = ledger(vm)
    assert {line: count for line, count in lines.items() if count != 1} == {}, lines
    assert set(lines) == {f"{edge} {path}" for path in paths for edge in ("start", "end")}, lines


def test_G01_leader_killed_mid_run_the_other_replica_takes_over(scenario: Scenario) -> None:
    with mid_run(scenario, "g01", first_seconds=2) as world:
        assert "is the leader now" not in world.other.log()
        world.leader.process.kill()
        took = wait_to_lead(world.other, timeout=TAKEOVER)
        assert took <= TAKEOVER
        status = scenario.wait_phase(world.run, "Succeeded", timeout=60)
    # The job that ended while nobody led was collected from the agent's journal, not re-run.
    assert status["jobs"]["/g01/first"]["exitCode"] == 0 and status["jobs"]["/g01/first"]["attempt"] == 1
    assert_each_ran_once(world.vm, world.paths)
    assert f"JobRun default/{world.run} expanded" in world.leader.log() and "launching" in world.leader.log()
    assert f"run=default/{world.run} runtime started" in world.other.log()
    assert stamp_of(world.other.log(), r"acquired Lease \S+ \(transition 1\)")  # the handover, in both logs
    assert stamp_of(world.leader.log(), LEADS)


def test_G02_a_leader_frozen_past_its_lease_does_nothing_once_resumed(scenario: Scenario) -> None:
    with mid_run(scenario, "g02", first_seconds=6) as world:
        frozen = world.leader
        frozen.freeze()
        wait_to_lead(world.other, timeout=TAKEOVER)
        # Resumed with everything due at once: its heartbeat deadline has passed, its link is
        # stale, its loop's timers fire. What it asks of the API server from now on is recorded.
        requests = scenario.emulator.record_requests(frozen.token)
        resumed_at = len(frozen.log())
        frozen.thaw()
        frozen.wait_log(STOPS, timeout=SLACK)
        scenario.wait_phase(world.run, "Succeeded", timeout=60)
        wait_until(lambda: len(requests) > 0, timeout=SLACK * 2, what="the resumed replica to talk to the API")
    writes = [(method, path) for method, path in requests if method != "GET" and "/leases" not in path]
    assert writes == [], f"the resumed replica wrote while not leading: {writes}"
    assert agent_requests(frozen.log(), resumed_at) == [], "the resumed replica sent requests to an agent"
    assert frozen.log().count("is the leader now") == 1
    assert_each_ran_once(world.vm, world.paths)


def test_G03_a_leader_cut_off_from_the_api_stops_before_its_lease_can_expire(scenario: Scenario) -> None:
    with mid_run(scenario, "g03", first_seconds=5) as world:
        cut = world.leader
        with scenario.emulator.cut_off(cut.token):
            cut.wait_log(STOPS, timeout=RENEW_DEADLINE + SLACK)
            wait_to_lead(world.other, timeout=TAKEOVER)
            scenario.wait_phase(world.run, "Succeeded", timeout=60)
        stopped = stamp_of(cut.log(), STOPS)
        taken = stamp_of(world.other.log(), ACQUIRED)
    # It stopped before the other replica could take over: the Lease was still its own then.
    assert stopped < taken, (stopped, taken)
    assert agent_requests(cut.log(), cut.log().index("stops leading")) == []
    assert cut.log().count("is the leader now") == 1  # never again while the other leads
    assert_each_ran_once(world.vm, world.paths)
