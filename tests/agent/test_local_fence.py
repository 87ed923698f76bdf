"""``fence``: a key the agent never saw is claimed as ended, so a late launch of it never runs."""

from __future__ import annotations

from pathlib import Path

from tests.agent.conftest import Agent, AgentDirs, key_text, new_key, wait_until


def _log_lines(dirs: AgentDirs, key: dict, needle: str) -> list[str]:
    def found() -> list[str]:
        return [line for line in dirs.log_text().splitlines() if key_text(key) in line and needle in line]

    wait_until(lambda: len(found()) >= 1, timeout=5, what=f"{needle!r} in the agent log")
    return found()


def test_fence_of_an_unseen_key_refuses_a_later_launch(agent: Agent, dirs: AgentDirs) -> None:
    marker = dirs.work / "ran.txt"
    script = dirs.script("late.sh", f"echo ran >> {marker}\n")
    key = new_key("/net/late")

    fence = agent.call("fence", key=key)
    again = agent.call("fence", key=key)
    late = agent.launch(key, script)

    assert fence["fenced"] is True
    record = fence["record"]
    assert record["state"] == "failedToStart" and record["reason"] == "Fenced"
    assert record["message"] == "fenced before it was launched: a newer attempt replaced it"
    assert record["pid"] is None and record["seq"] > 0
    assert again["fenced"] is True and again["record"]["seq"] == record["seq"]
    assert late["deduplicated"] is True and late["record"] == record
    assert agent.call("get", key=key)["record"] == record
    assert not marker.exists()
    assert _log_lines(dirs, key, "launch ignored: key was fenced")
    assert _log_lines(dirs, key, "fenced: never launched here")


def test_fence_of_a_running_key_answers_its_record_and_does_not_kill_it(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    launched = agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))

    fence = agent.call("fence", key=key)

    assert fence["fenced"] is False
    assert fence["record"]["state"] == "running" and fence["record"]["pid"] == launched["record"]["pid"]
    assert fence["record"]["killRequested"] is None
    assert agent.call("get", key=key)["record"]["state"] == "running"
    agent.call("kill", key=key, reason="stop")
    agent.wait_state(key, "killed")


def test_fence_of_an_ended_key_answers_its_end(agent: Agent, dirs: AgentDirs) -> None:
    key = new_key()
    agent.launch(key, dirs.script("ok.sh", "exit 0\n"))
    agent.wait_state(key, "exited")

    fence = agent.call("fence", key=key)

    assert fence["fenced"] is False and fence["record"]["state"] == "exited" and fence["record"]["exitCode"] == 0
    assert _log_lines(dirs, key, "fence found the key already exited with code 0")


def test_a_fence_survives_a_restart_of_serve(dirs: AgentDirs) -> None:
    key = new_key()
    first = Agent(dirs)
    first.call("fence", key=key)
    assert first.close() == 0
    second = Agent(dirs)
    try:
        late = second.launch(key, dirs.script("never.sh", "exit 0\n"))
    finally:
        second.close()

    assert late["deduplicated"] is True and late["record"]["reason"] == "Fenced"


def test_a_stops_kill_of_an_unseen_key_and_its_fence_refuse_a_later_launch_after_a_restart(dirs: AgentDirs) -> None:
    """What the operator does when a stop's kill finds no job (issue 10): kill answered NotFound,
    then fence; a launch of the key arriving later, even on a new serve, never runs."""
    marker = dirs.work / "ran.txt"
    key = new_key("/net/stopped")
    first = Agent(dirs)
    try:
        assert first.error("kill", key=key, reason="stop")["code"] == "NotFound"
        fence = first.call("fence", key=key)
    finally:
        assert first.close() == 0
    second = Agent(dirs)
    try:
        late = second.launch(key, dirs.script("late.sh", f"echo ran >> {marker}\n"))
    finally:
        second.close()

    assert fence["fenced"] is True
    assert late["deduplicated"] is True and late["record"] == fence["record"]
    assert not marker.exists()


def test_a_launch_held_on_its_way_is_refused_once_another_channel_fenced_its_key(dirs: AgentDirs) -> None:
    """The launch reached one serve, which has not taken it yet (pause point held by a file);
    meanwhile the restarted operator's kill, on a new serve, finds no job and fences the key."""
    marker = dirs.work / "ran.txt"
    hold = dirs.work / "hold"
    key = new_key("/net/held")
    old = Agent(dirs, pause_at=f"serve:launch-before-claim=@{hold}")
    new = Agent(dirs)
    try:
        script = dirs.script("held.sh", f"echo ran >> {marker}\n")
        held = old.send("launch", key=key, script=script, args=[], env={}, workingDir=None, timeoutSeconds=None)
        wait_until(Path(f"{hold}.reached").exists, timeout=10, what="the launch held before it is taken")
        assert new.error("kill", key=key, reason="stop")["code"] == "NotFound"
        fence = new.call("fence", key=key)
        hold.write_text("")
        late = old.response(held)
    finally:
        old.close()
        new.close()

    assert fence["fenced"] is True
    assert late["ok"] and late["result"]["deduplicated"] is True and late["result"]["record"] == fence["record"]
    assert _log_lines(dirs, key, "launch ignored: key was fenced")
    assert not marker.exists()
