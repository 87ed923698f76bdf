"""``serve`` over pipes with real job processes: launch, kill, timeout, failures, watch, output."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from jobnet_agent.procfs import SUPERVISING_PROCESS_NAME
from tests.agent.conftest import (
    AGENT_PYTHON,
    Agent,
    AgentDirs,
    agent_env,
    agent_process_pids,
    key_text,
    new_key,
    pid_alive,
    supervisor_pids,
    wait_until,
)


def _lines(dirs: AgentDirs, key: dict, needle: str, count: int = 1) -> list[str]:
    """Agent log lines of ``key`` containing ``needle``, once there are ``count`` (lines are
    written just after the journal, so a test may look a moment before they land)."""

    def found() -> list[str]:
        return [line for line in dirs.log_text().splitlines() if key_text(key) in line and needle in line]

    wait_until(lambda: len(found()) >= count, timeout=5, what=f"{needle!r} in the agent log")
    return found()


def test_hello_reports_versions_and_boot_id(agent: Agent, dirs: AgentDirs) -> None:
    result = agent.call("hello", protocol=1, client="test")

    assert result["protocol"] == 1 and result["agentVersion"]
    assert result["bootId"] == dirs.boot_id_file.read_text().strip()
    assert result["pid"] == agent.proc.pid and result["lastSeq"] == 0


def test_hello_with_another_protocol_is_refused(agent: Agent) -> None:
    assert agent.error("hello", protocol=2, client="test")["code"] == "UnsupportedProtocol"


def test_bad_requests_get_clear_errors_and_the_channel_stays_usable(agent: Agent) -> None:
    assert (
        agent.error("launch", key={"run": "r", "path": "/p", "attempt": 0}, script="/bin/true")["code"] == "BadRequest"
    )
    error = agent.error("launch", key=new_key(), script="relative/script")
    assert error["code"] == "BadRequest" and "absolute" in error["message"]
    assert agent.error("frobnicate")["code"] == "BadRequest"
    assert agent.error("get", key=new_key())["code"] == "NotFound"
    assert "time" in agent.call("ping")


def test_launch_runs_once_and_repeated_launch_is_deduplicated(agent: Agent, dirs: AgentDirs) -> None:
    marker = dirs.work / "ran.txt"
    script = dirs.script("once.sh", f'echo "$JOBNET_JOB_PATH $GREETING" >> {marker}\nsleep 0.3\n')
    key = new_key("/net/once")

    first = agent.launch(key, script, env={"GREETING": "hi"})
    repeats = [agent.launch(key, script) for _ in range(3)]
    ended = agent.wait_state(key, "exited")
    after_end = agent.launch(key, script)

    assert first["deduplicated"] is False and first["record"]["state"] == "running"
    assert first["record"]["pid"] > 0 and first["record"]["pgid"] == first["record"]["pid"]
    assert all(r["deduplicated"] and r["record"]["pid"] == first["record"]["pid"] for r in repeats)
    assert after_end["deduplicated"] and after_end["record"]["state"] == "exited"
    assert ended["exitCode"] == 0
    assert marker.read_text() == "/net/once hi\n"
    assert len(_lines(dirs, key, f"launch ignored: already started (pid {first['record']['pid']})", 3)) == 3
    assert len(_lines(dirs, key, "launch ignored: already exited with code 0")) == 1


def test_concurrent_serves_launching_the_same_key_start_it_once(dirs: AgentDirs) -> None:
    marker = dirs.work / "ran.txt"
    script = dirs.script("once.sh", f"echo ran >> {marker}\n")
    key = new_key("/net/race")
    agents = [Agent(dirs) for _ in range(3)]
    try:
        ids = [(a, a.send("launch", key=key, script=script, args=[], env={})) for a in agents]
        results = [a.response(i)["result"] for a, i in ids]
        agents[0].wait_state(key, "exited")
    finally:
        for a in agents:
            a.close()

    assert sorted(r["deduplicated"] for r in results) == [False, True, True]
    assert marker.read_text() == "ran\n"


def test_exit_code_and_output_are_recorded(agent: Agent, dirs: AgentDirs) -> None:
    script = dirs.script("out.sh", 'echo "out $1"; echo "err $2" >&2; exit 3\n')
    key = new_key()
    agent.launch(key, script, ["a", "b"])

    record = agent.wait_state(key, "exited")
    tail = agent.call("tail", key=key, stream="stdout", maxBytes=100)
    err = agent.call("read", key=key, stream="stderr", offset=0, length=100)

    assert record["exitCode"] == 3 and record["stdoutBytes"] == 6 and record["stderrBytes"] == 6
    assert tail == {"data": "out a\n", "totalBytes": 6, "droppedBytes": 0}
    assert base64.b64decode(err["data"]) == b"err b\n" and err["eof"] is True
    assert _lines(dirs, key, "exited with code 3")


def test_working_dir_and_environment(agent: Agent, dirs: AgentDirs) -> None:
    script = dirs.script("env.sh", 'pwd; echo "$JOBNET_RUN|$JOBNET_ATTEMPT|$X"\n')
    key = new_key(attempt=2)
    agent.launch(key, script, env={"X": "y z"}, workingDir=str(dirs.root))
    agent.wait_state(key, "exited")

    data = agent.call("tail", key=key, stream="stdout", maxBytes=1000)["data"]

    assert data == "{}\n{}|2|y z\n".format(dirs.root, key["run"])


def test_kill_stops_the_whole_process_tree_including_children_ignoring_sigterm(agent: Agent, dirs: AgentDirs) -> None:
    pids = dirs.work / "pids"
    script = dirs.script(
        "tree.sh",
        f"sh -c 'trap \"\" TERM; echo $$ >> {pids}; while :; do sleep 0.05; done' &\n"
        f"sleep 1000 &\necho $! >> {pids}\nwait\n",
    )
    key = new_key()
    launched = agent.launch(key, script)["record"]

    def both_children() -> list[int] | None:
        found = pids.read_text().split() if pids.exists() else []
        return [int(p) for p in found] if len(found) == 2 else None

    children = wait_until(both_children, what="both children started")

    result = agent.call("kill", key=key, graceSeconds=0.3, reason="stop")
    record = agent.wait_state(key, "killed")

    assert result["deduplicated"] is False and result["alreadyEnded"] is False
    assert result["record"]["killRequested"] == "stop"
    assert record["reason"] == "StopRequested" and record["signal"] == 15
    wait_until(lambda: not any(pid_alive(p) for p in children + [launched["pid"]]), what="the whole tree to die")
    assert _lines(dirs, key, "sent SIGTERM") and _lines(dirs, key, "sent SIGKILL")


def test_repeated_kill_is_harmless_and_deduplicated(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))

    first = agent.call("kill", key=key, reason="stop")
    second = agent.call("kill", key=key, reason="stop")
    agent.wait_state(key, "killed")
    third = agent.call("kill", key=key, reason="stop")

    assert first["deduplicated"] is False
    assert second["deduplicated"] is True
    assert third["deduplicated"] is True and third["alreadyEnded"] is True and third["record"]["state"] == "killed"
    assert _lines(dirs, key, "kill ignored: already stopped")


def test_kill_of_a_job_that_exited_0_reports_the_exit(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("ok.sh", "exit 0\n"))
    agent.wait_state(key, "exited")

    result = agent.call("kill", key=key, reason="stop")

    assert result["alreadyEnded"] is True and result["deduplicated"] is False
    assert result["record"]["state"] == "exited" and result["record"]["exitCode"] == 0
    assert result["record"]["killRequested"] is None
    assert _lines(dirs, key, "kill ignored: already exited with code 0")


def test_kill_of_a_job_that_exited_non_zero_reports_the_exit(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("bad.sh", "exit 7\n"))
    agent.wait_state(key, "exited")

    result = agent.call("kill", key=key, reason="stop")

    assert result["alreadyEnded"] is True and result["record"]["exitCode"] == 7
    assert _lines(dirs, key, "kill ignored: already exited with code 7")


def test_a_script_that_exits_when_it_gets_sigterm_is_reported_stopped(agent: Agent, dirs: AgentDirs) -> None:
    """Only a script that ended *before* the kill keeps its exit code (F06-F09); one that ends
    because of our SIGTERM was stopped, whatever code its trap chose."""
    ready = dirs.work / "ready"
    script = dirs.script("trap.sh", f"trap 'exit 0' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n")
    key = new_key()
    agent.launch(key, script)
    wait_until(ready.exists, what="the trap to be installed")

    agent.call("kill", key=key, graceSeconds=5, reason="stop")
    record = agent.wait_state(key, "killed", "exited")

    assert record["state"] == "killed" and record["signal"] == 15 and record["exitCode"] is None


def test_timeout_is_enforced_and_reported(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("slow.sh", "exec sleep 1000\n"), timeoutSeconds=1)

    record = agent.wait_state(key, "timedOut", timeout=10)

    assert record["reason"] == "TimedOut" and record["killRequested"] == "timeout"
    assert not pid_alive(record["pid"])
    assert _lines(dirs, key, "timed out after 1s")


def test_missing_script_fails_to_start(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    result = agent.launch(key, str(dirs.work / "nope.sh"))
    record = result["record"]

    assert record["state"] == "failedToStart" and record["reason"] == "ScriptNotFound"
    assert "does not exist" in record["message"] and record["pid"] is None
    assert _lines(dirs, key, "ScriptNotFound")


def test_non_executable_script_fails_with_permission_denied(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    record = agent.launch(key, dirs.script("noexec.sh", "exit 0\n", executable=False))["record"]

    assert record["state"] == "failedToStart" and record["reason"] == "PermissionDenied"
    assert "not executable" in record["message"]
    assert _lines(dirs, key, "PermissionDenied")


def test_bad_working_directory_fails_to_start(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    record = agent.launch(key, dirs.script("ok.sh", "exit 0\n"), workingDir=str(dirs.root / "missing"))["record"]

    assert record["state"] == "failedToStart" and record["reason"] == "BadWorkingDirectory"
    assert str(dirs.root / "missing") in record["message"]


def test_watch_replays_then_streams_and_resumes_from_a_seq(dirs: AgentDirs) -> None:
    first = Agent(dirs)
    key = new_key()
    first.call("watch", fromSeq=0)
    first.launch(key, dirs.script("ok.sh", "exit 0\n"))
    seen = [first.next_event() for _ in range(3)]
    first.close()

    assert [e["state"] for e in seen] == ["accepted", "running", "exited"]
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)

    second = Agent(dirs)
    try:
        other = new_key()
        second.launch(other, dirs.script("ok.sh", "exit 0\n"))
        second.wait_state(other, "exited")
        result = second.call("watch", fromSeq=seen[1]["seq"])
        replayed = [second.next_event() for _ in range(4)]
    finally:
        second.close()

    # A record file is written (and readable by get) just before its event is logged.
    assert seen[1]["seq"] < result["lastSeq"] <= replayed[-1]["seq"]
    assert [(e["key"] == key, e["state"]) for e in replayed] == [
        (True, "exited"),
        (False, "accepted"),
        (False, "running"),
        (False, "exited"),
    ]
    assert second.events.empty()


def test_heartbeats_carry_the_last_seq(agent: Agent) -> None:
    beat = agent.heartbeats.get(timeout=5)

    assert beat["lastSeq"] == 0 and beat["time"] > 0


def test_ack_then_garbage_collection_after_retention(dirs: AgentDirs) -> None:
    agent = Agent(dirs, retention_seconds=0)
    key = new_key()
    agent.launch(key, dirs.script("ok.sh", "exit 0\n"))
    agent.wait_state(key, "exited")
    assert agent.error("ack", key=new_key())["code"] == "NotFound"

    acked = agent.call("ack", key=key)["record"]
    agent.close()
    job_dirs = list((dirs.state / "jobs").glob("*/*"))
    restarted = Agent(dirs, retention_seconds=0)  # GC runs when serve starts
    try:
        restarted.call("ping")
        gone = restarted.error("get", key=key)
    finally:
        restarted.close()

    assert acked["acknowledged"] is True and len(job_dirs) == 1
    assert gone["code"] == "NotFound" and not job_dirs[0].exists()


def test_ack_of_a_running_job_is_refused(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))

    error = agent.error("ack", key=key)
    agent.call("kill", key=key, graceSeconds=0)

    assert error["code"] == "BadRequest" and "running" in error["message"]


def test_list_filters_by_run(agent: Agent, dirs: AgentDirs) -> None:
    script = dirs.script("ok.sh", "exit 0\n")
    a, b = new_key(run="runa"), new_key(run="runb")
    agent.launch(a, script)
    agent.launch(b, script)

    assert [r["key"] for r in agent.call("list", run="runa")["records"]] == [a]
    assert len(agent.call("list")["records"]) == 2


def test_channel_close_ends_serve_but_not_the_job(dirs: AgentDirs) -> None:
    agent = Agent(dirs)
    key = new_key()
    pid = agent.launch(key, dirs.script("sleep.sh", "sleep 0.5\necho done\n"))["record"]["pid"]

    assert agent.close() == 0
    assert pid_alive(pid)
    after = Agent(dirs)
    try:
        record = after.wait_state(key, "exited")
    finally:
        after.close()
    assert record["exitCode"] == 0 and record["stdoutBytes"] == 5
    assert "serve disconnected: channel closed" in dirs.log_text()


@pytest.mark.parametrize("pause_at", ["serve:launch-after-accept", "serve:before-hand-over"])
def test_a_launch_accepted_just_before_the_channel_breaks_still_starts_its_job(dirs: AgentDirs, pause_at: str) -> None:
    """The operator dies (its SSH connection with it) while serve accepts a launch or hands the
    accepted job to a supervisor: serve, unable to write, still finishes that before it leaves,
    so the job runs once instead of ending failedToStart ("the agent died before starting it")."""
    key = new_key()
    marker = dirs.work / "ran"
    launch = {
        "id": 1,
        "op": "launch",
        "key": key,
        "script": dirs.script("job.sh", f"echo once >> {marker}\n"),
        "args": [],
        "env": {},
    }
    serve = subprocess.Popen(
        [AGENT_PYTHON, "-m", "jobnet_agent", "serve", *dirs.options(heartbeat_seconds=0.05)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=agent_env({"JOBNET_AGENT_PAUSE_AT": f"{pause_at}=1"}),
    )
    assert serve.stdin is not None and serve.stdout is not None
    serve.stdin.write((json.dumps(launch) + "\n").encode())
    serve.stdin.flush()
    wait_until(lambda: "accepted: script" in dirs.log_text(), timeout=10, what="the launch accepted")
    serve.stdout.close()  # the connection is gone: serve's next write (a heartbeat) fails

    try:
        assert serve.wait(timeout=20) == 0
    finally:
        serve.stdin.close()
    after = Agent(dirs)
    try:
        record = after.wait_state(key, "exited", "failedToStart")
    finally:
        after.close()
    assert record["state"] == "exited" and record["exitCode"] == 0, record
    assert marker.read_text() == "once\n"
    log = dirs.log_text()
    assert log.index("accepted: script") < log.index("serve disconnected: cannot write to the channel"), log


def test_output_files_are_private(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("ok.sh", "echo secret\n"), env={"TOKEN": "s3cr3t"})
    agent.wait_state(key, "exited")
    job_dir = next((dirs.state / "jobs").glob("*/*"))

    assert os.stat(job_dir / "supervisor.lock").st_mode & 0o077 == 0  # holds the spec, env and all
    assert not (job_dir / "spec.json").exists()
    assert os.stat(job_dir / "stdout").st_mode & 0o077 == 0
    assert "s3cr3t" not in dirs.log_text()
    assert "s3cr3t" not in Path(dirs.state / "events.log").read_text()


def test_the_job_survives_sighup_and_kill_9_of_serve_and_its_end_is_recorded(dirs: AgentDirs) -> None:
    go = dirs.work / "go"
    agent = Agent(dirs)
    key = new_key()
    pid = agent.launch(key, dirs.script("job.sh", f"while [ ! -e {go} ]; do sleep 0.02; done\nexit 9\n"))["record"][
        "pid"
    ]
    [supervisor] = supervisor_pids(dirs.state)

    os.kill(supervisor, signal.SIGHUP)  # what a closing SSH session sends
    agent.kill9()
    go.touch()
    after = Agent(dirs)
    try:
        record = after.wait_state(key, "exited")
    finally:
        after.close()

    assert record["exitCode"] == 9 and record["pid"] == pid
    assert "adopt" not in dirs.log_text()  # the original supervisor saw it through


def test_exit_is_reported_to_a_watcher_promptly(agent: Agent, dirs: AgentDirs) -> None:
    """Not a timing assertion: the exit event arrives while the channel is otherwise idle."""
    go = dirs.work / "go"
    key = new_key()
    agent.launch(key, dirs.script("job.sh", f"while [ ! -e {go} ]; do sleep 0.01; done\n"))
    agent.call("watch", fromSeq=agent.get(key)["seq"])
    go.touch()

    event = agent.next_event(timeout=5)

    assert event["key"] == key and event["state"] == "exited"


def test_pipelined_launches_are_all_answered_and_a_launch_is_visible_before_its_answer(
    agent: Agent, dirs: AgentDirs
) -> None:
    script = dirs.script("ok.sh", "exit 0\n")
    keys = [new_key(f"/fan/{i}") for i in range(8)]
    launches = [agent.send("launch", key=k, script=script, args=[], env={}) for k in keys]
    peek = agent.send("get", key=keys[-1])

    seen_early = agent.response(peek)
    answers = [agent.response(i) for i in launches]

    assert seen_early["ok"] and seen_early["result"]["record"]["key"] == keys[-1]
    assert all(a["ok"] and not a["result"]["deduplicated"] for a in answers)
    assert len({a["result"]["record"]["pid"] for a in answers}) == len(keys)
    for key in keys:
        assert agent.wait_state(key, "exited")["exitCode"] == 0


def test_launches_right_after_serve_starts_share_its_supervising_process(agent: Agent, dirs: AgentDirs) -> None:
    """The first launches of a fan-out come right after serve started: one supervising process
    takes them all, instead of each starting a Python process."""
    script = dirs.script("hold.sh", "sleep 30\n")
    keys = [new_key(f"/net/fan{i}") for i in range(4)]
    ids = [agent.send("launch", key=key, script=script, args=[], env={}) for key in keys]
    records = [agent.response(request_id)["result"]["record"] for request_id in ids]
    assert all(record["state"] == "running" for record in records), records
    assert len(set(supervisor_pids(dirs.state))) == 1
    for record in records:
        os.killpg(record["pgid"], signal.SIGKILL)


def test_launches_while_a_new_supervising_process_starts_wait_for_it(agent: Agent, dirs: AgentDirs) -> None:
    """The supervising process died: the next one is started as an interpreter of its own (serve
    has threads now, so no fork), and launches that come meanwhile wait for it (bounded) instead
    of each starting a Python process."""
    agent.call("hello", protocol=1, client="test")
    [forked] = wait_until(lambda: supervising_processes(dirs.state), what="serve's supervising process")
    os.kill(forked, signal.SIGKILL)
    wait_until(lambda: not pid_alive(forked), what="the supervising process to die")
    script = dirs.script("hold.sh", "sleep 30\n")
    keys = [new_key(f"/net/fan{i}") for i in range(4)]
    ids = [agent.send("launch", key=key, script=script, args=[], env={}) for key in keys]
    records = [agent.response(request_id)["result"]["record"] for request_id in ids]
    assert all(record["state"] == "running" for record in records), records
    [supervisor] = set(supervisor_pids(dirs.state))
    argv = Path(f"/proc/{supervisor}/cmdline").read_bytes().split(b"\0")
    assert b"supervise" in argv and b"--channel-fd" in argv, argv
    assert Path(f"/proc/{supervisor}/comm").read_text().strip() == SUPERVISING_PROCESS_NAME
    for record in records:
        os.killpg(record["pgid"], signal.SIGKILL)


def supervising_processes(state_dir: Path) -> list[int]:
    """The live supervising processes of a state dir, by their name."""
    return [
        pid
        for pid in agent_process_pids(state_dir)
        if Path(f"/proc/{pid}/comm").read_text().strip() == SUPERVISING_PROCESS_NAME
    ]


def _proc_status(pid: int, field: str) -> str:
    [line] = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":")]
    return line.split(":", 1)[1].strip()


def test_the_supervising_process_is_a_detached_fork_of_serve_with_a_name_of_its_own(
    agent: Agent, dirs: AgentDirs
) -> None:
    """serve forks its supervising process after its imports (no second interpreter start). The
    fork must not look like serve (the devenv, the chaos faults and a person's ps tell the two
    apart by name), and must hold nothing of serve's: not the channel (an SSH channel whose
    stdout a live process holds never sees its end), nor its session."""
    agent.launch(new_key(), dirs.script("hold.sh", "sleep 30\n"))
    [supervisor] = supervisor_pids(dirs.state)
    serve = agent.proc.pid

    assert Path(f"/proc/{supervisor}/comm").read_text().strip() == SUPERVISING_PROCESS_NAME
    argv = Path(f"/proc/{supervisor}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    # What serve runs from first (python3 -m jobnet_agent here; the zipapp's file on a VM).
    assert argv[0].endswith(b"/jobnet_agent/__main__.py"), argv
    assert argv[1:] == [b"supervise", f"(forked from serve {serve})".encode(), b"--state-dir", bytes(dirs.state)]
    assert b"serve" in Path(f"/proc/{serve}/cmdline").read_bytes().split(b"\0"), "serve's own is untouched"
    assert os.getsid(supervisor) not in (os.getsid(serve), os.getsid(0))
    assert int(_proc_status(supervisor, "PPid")) != serve
    # SIGHUP has a handler: SIG_IGN would be inherited by the jobs.
    assert int(_proc_status(supervisor, "SigCgt"), 16) & 1 << (signal.SIGHUP - 1)
    serve_channel = {os.readlink(f"/proc/{serve}/fd/{fd}") for fd in (0, 1, 2)}
    held = {os.readlink(f"/proc/{supervisor}/fd/{fd}") for fd in os.listdir(f"/proc/{supervisor}/fd")}
    assert os.readlink(f"/proc/{supervisor}/fd/0") == os.devnull
    assert os.readlink(f"/proc/{supervisor}/fd/2") == str(dirs.agent_log)
    assert not held & serve_channel, held


def test_the_supervising_process_outlives_serve_until_its_last_job_ended(dirs: AgentDirs) -> None:
    go = dirs.work / "go"
    agent = Agent(dirs)
    key = new_key()
    agent.launch(key, dirs.script("job.sh", f"while [ ! -e {go} ]; do sleep 0.02; done\n"))
    [supervisor] = supervisor_pids(dirs.state)
    agent.close()  # serve leaves; the job goes on, supervised

    assert pid_alive(supervisor)
    go.touch()
    wait_until(lambda: not pid_alive(supervisor), what="the supervising process to leave after its job")
    after = Agent(dirs)
    try:
        record = after.get(key)
    finally:
        after.close()
    assert record["state"] == "exited" and record["exitCode"] == 0
    assert "adopt" not in dirs.log_text()


def test_a_burst_of_launches_is_started_by_one_supervising_process(agent: Agent, dirs: AgentDirs) -> None:
    """Launches that arrive together are handed over together and started in few rounds (one
    fsync of their running records each): every one is answered with its pid and runs once."""
    script = dirs.script("ok.sh", "exit 0\n")
    keys = [new_key(f"/burst/{i}") for i in range(12)]
    assert agent.proc.stdin is not None
    agent.proc.stdin.write(
        b"".join(
            (
                json.dumps({"id": 100 + i, "op": "launch", "key": k, "script": script, "args": [], "env": {}}) + "\n"
            ).encode()
            for i, k in enumerate(keys)
        )
    )
    agent.proc.stdin.flush()
    answers = [agent.response(100 + i) for i in range(len(keys))]

    assert all(a["ok"] and a["result"]["record"]["pid"] for a in answers), answers
    for key in keys:
        assert agent.wait_state(key, "exited")["exitCode"] == 0
    assert len(set(supervisor_pids(dirs.state))) <= 1
