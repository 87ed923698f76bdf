"""An agent whose event log was compacted: after an operator restart its heartbeats still count,
so a job running there stays Running past the heartbeat deadline (it went Stuck HeartbeatLost
when heartbeats announced the compaction's seq-only marker, which is never sent as an event)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.scenario import Scenario

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

#: FAST_RUNTIME_ARGS' --heartbeat-deadline.
HEARTBEAT_DEADLINE = 4.0


def test_a_running_job_stays_running_after_its_agents_log_was_compacted(scenario: Scenario) -> None:
    vm = scenario.vm()
    # Serve collects garbage when it starts: acknowledged jobs go at once, and any log is compacted.
    operator = scenario.start_operator(*(f"--agent-serve-arg={arg}" for arg in (
        "--retention-seconds", "0", "--compact-threshold-bytes", "0")))  # fmt: skip
    # long runs until the test lets it end (bounded: 60 s), however slow the restart under load
    gate = vm.home / "long-may-end"
    long = scenario.marker_script(
        vm, "long", f"for i in $(seq 600); do [ -e {gate} ] && exit 0; sleep 0.1; done; exit 1\n"
    )
    quick = scenario.marker_script(vm, "quick", "sleep 0.5\n")
    run = scenario.run_jobnet("compacted", scenario.host(vm), [
        {"name": "long", "script": long},
        {"name": "quick", "script": quick},
    ])  # fmt: skip
    scenario.wait_job_state(run, "/compacted/long", "Running", timeout=60)
    scenario.wait_job_state(run, "/compacted/quick", "Succeeded", timeout=60)
    # quick's acknowledgement is the agent's last journal entry; its job goes in the compaction.
    scenario.wait_agent_log(vm, r"/compacted/quick#1 acknowledged", timeout=15)

    operator.kill()
    operator.start()
    scenario.wait_agent_log(vm, r"/compacted/quick#1 removed: acknowledged", timeout=30)
    entries = [json.loads(line) for line in (vm.state_dir / "events.log").read_text().splitlines() if line]
    assert "record" not in entries[-1], f"the event log was not compacted: {entries[-1]}"

    restarted = time.monotonic()
    state = scenario.job(run, "/compacted/long")["state"]
    while time.monotonic() - restarted < HEARTBEAT_DEADLINE + 2 and state == "Running":
        time.sleep(0.2)  # watching for a wrong state change, not synchronising
        state = scenario.job(run, "/compacted/long")["state"]
    assert state == "Running", scenario.describe(run)

    gate.touch()

    status = scenario.wait_phase(run, "Succeeded", timeout=30)
    assert status["jobs"]["/compacted/long"]["attempt"] == 1 and scenario.script_runs(vm, "long") == 1
    assert not re.search(r"HeartbeatLost", scenario.operator_log()), scenario.operator_log()[-3000:]
