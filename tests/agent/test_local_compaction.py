"""A compacted event log: a watcher that received every event counts as caught up.

The operator counts a heartbeat as "hearing the agent" only when its ``lastSeq`` is at most the
last event seq it received (``HostAgent.synced_heartbeat_age``); otherwise the Running jobs on that
host go Stuck HeartbeatLost after the deadline. A compaction ends the event log with a seq-only
marker that is never sent as an event, so heartbeats must not announce it.
"""

from __future__ import annotations

import json
import queue

from tests.agent.conftest import Agent, AgentDirs, new_key, wait_until


def _event_log_entries(dirs: AgentDirs) -> list[dict]:
    return [json.loads(line) for line in (dirs.state / "events.log").read_text().splitlines() if line]


def _heartbeat_after(agent: Agent, seconds: float = 5.0) -> dict:
    while True:
        try:
            agent.heartbeats.get_nowait()
        except queue.Empty:
            break
    return agent.heartbeats.get(timeout=seconds)


def test_heartbeats_after_a_compaction_announce_only_seqs_sent_as_events(dirs: AgentDirs) -> None:
    first = Agent(dirs, retention_seconds=0)
    done, running = new_key("/net/done"), new_key("/net/running")
    first.launch(running, dirs.script("sleep.sh", "exec sleep 1000\n"))
    first.launch(done, dirs.script("ok.sh", "exit 0\n"))
    first.wait_state(done, "exited")
    first.call("ack", key=done)  # the last journal entry: its job is removed below
    first.close()

    # Serve collects garbage when it starts: the acknowledged job goes, the log is compacted.
    agent = Agent(dirs, retention_seconds=0, compact_threshold_bytes=0)
    try:
        journal_seq = agent.call("hello", protocol=1, client="test")["lastSeq"]
        entries = _event_log_entries(dirs)
        watch = agent.call("watch", fromSeq=0)
        replayed = [agent.next_event()]
        beat = _heartbeat_after(agent)
        wait_until(lambda: agent.events.empty(), what="nothing more to replay")
        agent.call("kill", key=running, graceSeconds=0)
    finally:
        agent.close()

    assert [e["key"]["path"] for e in replayed] == ["/net/running"] and replayed[0]["state"] == "running"
    assert entries[-1] == {"seq": journal_seq} and len(entries) == 2, "the log was compacted"
    assert replayed[0]["seq"] < journal_seq
    # Caught up after receiving every event: the marker's seq is never announced.
    assert beat["lastSeq"] == watch["lastSeq"] == replayed[0]["seq"]
