"""kill -9 of agent processes at every step, host reboots, dead supervisors: the journal stays
consistent, no job runs twice, no finished result is lost, nothing unknown is called a success.

Crash points (``JOBNET_AGENT_CRASH_AT``) make a process SIGKILL itself at exactly one step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import (
    AGENT_PYTHON,
    Agent,
    AgentDirs,
    agent_env,
    key_text,
    new_key,
    pid_alive,
    supervisor_pids,
    wait_until,
)


def journal_entries(dirs: AgentDirs) -> list[dict[str, Any]]:
    lines = (dirs.state / "events.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_journal_consistent(dirs: AgentDirs) -> None:
    """Seqs strictly increase; every record file's state is in the event log under its seq.

    A record file is written a moment before its event: give a live writer that moment."""
    deadline = time.monotonic() + 2
    while True:
        try:
            assert_journal_consistent_now(dirs)
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


def assert_journal_consistent_now(dirs: AgentDirs) -> None:
    entries = journal_entries(dirs)
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(set(seqs)), seqs
    logged = {e["seq"]: e["record"] for e in entries if "record" in e}
    for record_file in (dirs.state / "jobs").glob("*/*/record.json"):
        record = json.loads(record_file.read_text())
        assert logged.get(record["seq"], {}).get("state") == record["state"], record


def logged(dirs: AgentDirs, key: dict[str, Any], needle: str) -> list[str]:
    def found() -> list[str]:
        return [line for line in dirs.log_text().splitlines() if key_text(key) in line and needle in line]

    return wait_until(found, timeout=5, what=f"{needle!r} in the agent log")


def launch_crashing(dirs: AgentDirs, crash_at: str, body: str, key: dict[str, Any]) -> str:
    """Launch through a serve whose processes crash at ``crash_at``; return the script path."""
    script = dirs.script("job.sh", body)
    agent = Agent(dirs, crash_at=crash_at)
    request = agent.send("launch", key=key, script=script, args=[], env={})
    try:
        agent.response(request, timeout=10)
    except ConnectionError:
        pass  # serve itself was the one to crash
    agent.close()
    return script


def test_serve_killed_after_accepting_never_starts_the_job(dirs: AgentDirs) -> None:
    key = new_key()
    marker = dirs.work / "ran"
    launch_crashing(dirs, "serve:launch-after-accept", f"echo ran >> {marker}\n", key)

    agent = Agent(dirs)
    try:
        record = agent.get(key)
        again = agent.launch(key, str(dirs.work / "job.sh"))
    finally:
        agent.close()

    assert record["state"] == "failedToStart" and record["reason"] == "SupervisorLost"
    assert "never ran" in record["message"]
    assert again["deduplicated"] is True and not marker.exists()
    assert_journal_consistent(dirs)


def test_serve_killed_before_the_group_commit_of_launches_that_came_together_never_starts_them(
    dirs: AgentDirs,
) -> None:
    """Launches that arrive together are claimed in one group commit (one fsync for all), and no
    supervisor gets its job before that fsync: serve killed just before it starts none."""
    keys = [new_key("/fan/a"), new_key("/fan/b")]
    marker = dirs.work / "ran"
    script = dirs.script("job.sh", f"echo ran >> {marker}\n")
    agent = Agent(dirs, crash_at="serve:journal-before-group-sync")
    assert agent.proc.stdin is not None
    agent.proc.stdin.write(
        b"".join(
            (json.dumps({"id": i, "op": "launch", "key": key, "script": script, "args": [], "env": {}}) + "\n").encode()
            for i, key in enumerate(keys, 1)
        )
    )
    agent.proc.stdin.flush()  # one write: serve reads both at once
    assert agent.proc.wait(timeout=10) == -signal.SIGKILL
    agent.close()

    restarted = Agent(dirs)
    try:
        records = [restarted.get(key) for key in keys]
        again = [restarted.launch(key, script) for key in keys]
    finally:
        restarted.close()

    assert [(r["state"], r["reason"]) for r in records] == [("failedToStart", "SupervisorLost")] * 2
    assert all(a["deduplicated"] for a in again) and not marker.exists()
    assert_journal_consistent(dirs)


def test_a_failed_fsync_of_a_group_commit_acknowledges_nothing_and_starts_nothing(dirs: AgentDirs) -> None:
    """serve's fsync of a batch's journal writes fails (an I/O error, injected while a file
    exists): no request of the batch is answered as done (each gets an Internal error naming the
    journal), no job of it is handed to a supervisor, and the agent log says why. Once the disk
    is back, the launches are known never to have run (``failedToStart``) and a repeat of the key
    is deduplicated: the operator learns the truth without a second start."""
    keys = [new_key("/fan/a"), new_key("/fan/b")]
    marker = dirs.work / "ran"
    script = dirs.script("job.sh", f"echo ran >> {marker}\n")
    failing = dirs.work / "disk-fails"
    failing.touch()
    agent = Agent(dirs, fail_at=f"serve:journal-group-sync=@{failing}")
    try:
        assert agent.proc.stdin is not None
        agent.proc.stdin.write(
            b"".join(
                (
                    json.dumps({"id": i, "op": "launch", "key": key, "script": script, "args": [], "env": {}}) + "\n"
                ).encode()
                for i, key in enumerate(keys, 1)
            )
        )
        agent.proc.stdin.flush()  # one write: serve reads both at once, one group commit
        answers = [agent.response(request_id) for request_id in (1, 2)]
        assert all(not answer["ok"] for answer in answers), answers
        assert all(answer["error"]["code"] == "Internal" for answer in answers), answers
        assert all("could not make its journal durable" in answer["error"]["message"] for answer in answers)
        wait_until(lambda: "journal fsync failed" in dirs.log_text(), what="the fsync failure in the agent log")
        agent._next_id = 2  # the ids written by hand above

        failing.unlink()  # the disk is back
        records = [agent.wait_state(key, "failedToStart") for key in keys]
        again = [agent.launch(key, script) for key in keys]
    finally:
        agent.close()

    assert [(r["state"], r["reason"]) for r in records] == [("failedToStart", "SupervisorLost")] * 2, records
    assert all(a["deduplicated"] and a["record"]["state"] == "failedToStart" for a in again), again
    assert not marker.exists() and not supervisor_pids(dirs.state)
    assert_journal_consistent(dirs)


def test_serve_killed_between_record_and_event_gets_its_event_logged_on_restart(dirs: AgentDirs) -> None:
    key = new_key()
    launch_crashing(dirs, "serve:journal-after-record:accepted", "exit 0\n", key)
    assert journal_entries(dirs) == []  # the record file exists, its event does not yet

    agent = Agent(dirs)
    try:
        agent.call("watch", fromSeq=0)
        events = [agent.next_event(), agent.next_event()]
    finally:
        agent.close()

    assert [(e["seq"], e["state"]) for e in events] == [(1, "accepted"), (2, "failedToStart")]
    assert_journal_consistent(dirs)


@pytest.mark.parametrize(
    "crash_at",
    [
        "supervise:after-start",  # the wrapper forked, its running record not written
        "supervise:journal-after-record:running",  # written, its event not logged
        "supervise:journal-before-group-sync",  # logged, not yet fsynced
        "supervise:before-start",  # durable, the go line not yet written
    ],
)
def test_supervisor_killed_before_the_go_line_never_runs_the_script_and_says_so(dirs: AgentDirs, crash_at: str) -> None:
    """A script starts only once its running record is durable and its wrapper got the go line:
    a supervisor killed at any step before leaves a wrapper that sees end of file, runs nothing
    and writes ``never``, so the job is known never to have run (failedToStart, which the
    operator may run again), not lost."""
    key = new_key()
    marker = dirs.work / "ran"
    launch_crashing(dirs, crash_at, f"echo ran >> {marker}\n", key)
    wait_until(lambda: not supervisor_pids(dirs.state), what="the supervisor to crash")

    agent = Agent(dirs)
    try:
        record = agent.wait_state(key, "failedToStart")
        again = agent.launch(key, str(dirs.work / "job.sh"))
    finally:
        agent.close()

    assert record["reason"] == "SupervisorLost" and record["exitCode"] is None
    assert "never ran" in record["message"], record
    assert again["deduplicated"] is True and not marker.exists()
    assert_journal_consistent(dirs)


def test_supervisor_killed_after_starting_is_adopted_and_output_kept(dirs: AgentDirs) -> None:
    """E02: the job keeps running; a new supervisor adopts it (pumps output, honours kills);
    since it ran unsupervised for a while it ends ``lost`` with the recorded code in the message,
    however soon after starting the script the supervisor died."""
    key = new_key()
    go = dirs.work / "go"
    body = f"echo before\nwhile [ ! -e {go} ]; do sleep 0.02; done\necho after\nexit 4\n"
    launch_crashing(dirs, "supervise:after-running", body, key)

    agent = Agent(dirs)
    try:
        running = agent.get(key)
        logged(dirs, key, "adopting")
        logged(dirs, key, f"adopted pid {running['pid']}")
        go.touch()
        record = agent.wait_state(key, "lost", "exited")
        output = agent.call("tail", key=key, stream="stdout", maxBytes=100)
    finally:
        agent.close()

    assert running["state"] == "running"
    # the wrapper's code travels with the lost record: stuckResolution Auto settles the job from it
    assert record["state"] == "lost" and record["reason"] == "SupervisorLost" and record["exitCode"] == 4
    assert "recorded exit code 4" in record["message"]
    assert output["data"] == "before\nafter\n"
    assert_journal_consistent(dirs)


def test_adopted_job_can_still_be_killed(dirs: AgentDirs) -> None:
    key = new_key()
    launch_crashing(dirs, "supervise:after-running", "exec sleep 1000\n", key)

    agent = Agent(dirs)
    try:
        pid = agent.get(key)["pid"]
        logged(dirs, key, f"adopted pid {pid}")
        agent.call("kill", key=key, graceSeconds=1, reason="stop")
        record = agent.wait_state(key, "killed")
    finally:
        agent.close()

    assert record["signal"] is None and record["reason"] == "StopRequested"  # not our child: no status
    assert not pid_alive(pid)


def test_supervisor_killed_after_the_exit_before_recording_it_loses_nothing(dirs: AgentDirs) -> None:
    """E03 at the agent: the script ended (supervised), the supervisor died before the journal
    write; the wrapper's record gives the real result."""
    key = new_key()
    launch_crashing(dirs, "supervise:after-exit", "echo done\nexit 0\n", key)

    agent = Agent(dirs)
    try:
        record = agent.wait_state(key, "exited")
    finally:
        agent.close()

    assert record["exitCode"] == 0 and "recorded by the job's wrapper" in record["message"]
    assert logged(dirs, key, "result recovered")
    assert_journal_consistent(dirs)


def test_supervisor_killed_between_exit_record_and_event_loses_nothing(dirs: AgentDirs) -> None:
    key = new_key()
    launch_crashing(dirs, "supervise:journal-after-record:exited", "exit 6\n", key)
    wait_until(lambda: not supervisor_pids(dirs.state), what="the supervisor to crash")

    agent = Agent(dirs)
    try:
        agent.call("watch", fromSeq=0)
        events = [agent.next_event() for _ in range(3)]
    finally:
        agent.close()

    assert [e["state"] for e in events] == ["accepted", "running", "exited"] and events[2]["exitCode"] == 6
    assert_journal_consistent(dirs)


def test_serve_killed_after_recording_a_kill_still_gets_the_job_killed(dirs: AgentDirs) -> None:
    key = new_key()
    agent = Agent(dirs)
    agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))
    agent.close()
    crashing = Agent(dirs, crash_at="serve:kill-after-request")
    with pytest.raises(ConnectionError):
        crashing.call("kill", key=key, graceSeconds=0.5, reason="stop")
    crashing.close()

    restarted = Agent(dirs)  # its sweep reminds the supervisor of the recorded kill
    try:
        record = restarted.wait_state(key, "killed")
    finally:
        restarted.close()
    assert record["killRequested"] == "stop" and record["signal"] == 15


def test_supervisor_killed_after_sigterm_ends_killed_with_unknown_status(dirs: AgentDirs) -> None:
    key = new_key()
    agent = Agent(dirs, crash_at="supervise:after-sigterm")
    pid = agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))["record"]["pid"]
    agent.call("kill", key=key, graceSeconds=0.5, reason="stop")
    record = agent.wait_state(key, "killed")
    agent.close()

    assert record["reason"] == "StopRequested" and "unknown" in record["message"]
    assert not pid_alive(pid)
    assert_journal_consistent(dirs)


def test_real_kill_9_of_the_supervisor_mid_job_then_the_job_ends(dirs: AgentDirs) -> None:
    key = new_key()
    go = dirs.work / "go"
    agent = Agent(dirs)
    agent.launch(key, dirs.script("job.sh", f"while [ ! -e {go} ]; do sleep 0.02; done\n"))
    [supervisor] = supervisor_pids(dirs.state)
    os.kill(supervisor, signal.SIGKILL)
    logged(dirs, key, "adopted pid")
    go.touch()
    record = agent.wait_state(key, "lost", "exited")
    agent.close()

    assert record["state"] == "lost" and record["exitCode"] == 0  # the wrapper's, recorded unsupervised
    assert "died mid-run" in record["message"]


def test_job_and_supervisor_killed_together_end_lost_never_succeeded(dirs: AgentDirs) -> None:
    key = new_key()
    agent = Agent(dirs)
    pgid = agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))["record"]["pgid"]
    agent.close()
    for pid in supervisor_pids(dirs.state):
        os.kill(pid, signal.SIGKILL)
    os.killpg(pgid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pgid), what="the job to die")

    restarted = Agent(dirs)
    try:
        record = restarted.wait_state(key, "lost")
    finally:
        restarted.close()
    assert record["reason"] == "SupervisorLost" and record["exitCode"] is None
    assert logged(dirs, key, "lost: supervisor died")


def test_boot_id_change_reports_interrupted(dirs: AgentDirs) -> None:
    """E01: the host "rebooted": every process died and the boot id changed."""
    key = new_key()
    agent = Agent(dirs)
    record = agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))["record"]
    agent.kill9()
    for pid in supervisor_pids(dirs.state):
        os.kill(pid, signal.SIGKILL)
    os.killpg(record["pgid"], signal.SIGKILL)
    old_boot = record["bootId"]
    new_boot = dirs.reboot()

    restarted = Agent(dirs)
    try:
        hello = restarted.call("hello", protocol=1, client="test")
        after = restarted.get(key)
    finally:
        restarted.close()

    assert hello["bootId"] == new_boot != old_boot
    assert after["state"] == "interrupted" and after["reason"] == "HostRebooted" and after["exitCode"] is None
    assert old_boot in after["message"] and new_boot in after["message"]
    assert logged(dirs, key, "interrupted: host rebooted")


def test_lost_channel_with_unsent_events_is_logged_and_serve_leaves(dirs: AgentDirs) -> None:
    read_end, write_end = os.pipe()
    serve = subprocess.Popen(
        [AGENT_PYTHON, "-m", "jobnet_agent", "serve", *dirs.options(heartbeat_seconds=60)],
        stdin=subprocess.PIPE,
        stdout=write_end,
        stderr=subprocess.DEVNULL,
        env=agent_env(),
    )
    os.close(write_end)
    assert serve.stdin is not None
    serve.stdin.write(b'{"id": 1, "op": "watch", "fromSeq": 0}\n')
    serve.stdin.flush()
    with os.fdopen(read_end, "rb") as channel:
        assert json.loads(channel.readline())["result"] == {"lastSeq": 0}
    # The channel is now broken: whatever serve writes goes nowhere.
    other = Agent(dirs)
    try:
        key = new_key()
        other.launch(key, dirs.script("ok.sh", "exit 0\n"))
        other.wait_state(key, "exited")
        line = wait_until(
            lambda: [x for x in dirs.log_text().splitlines() if "could not report: connection lost" in x],
            what="the unsent events to be logged",
        )
        exit_code = serve.wait(10)
    finally:
        other.close()
        serve.kill()
        serve.wait()

    assert "events seq 1.." in line[0] and exit_code == 0


def test_serve_with_an_unusable_state_dir_says_why(dirs: AgentDirs, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = dirs.cli("serve", "--state-dir", str(blocker / "state"), "--boot-id-file", str(dirs.boot_id_file))
    missing_boot = dirs.cli("serve", "--state-dir", str(dirs.state), "--boot-id-file", str(tmp_path / "nope"))

    assert result.returncode == 2 and "state dir" in result.stderr and "not" in result.stderr
    assert missing_boot.returncode == 2 and "boot id file" in missing_boot.stderr
