"""Table tests of the end rule (jobnet_agent.endrule): how a job's end is decided from what the
wrapper and the supervisor recorded, and how a job whose supervisor is gone is settled."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jobnet_agent.endrule import (
    ADOPT,
    END,
    KEEP,
    End,
    Observation,
    WrapperExit,
    decide,
    end_of,
    parse_wrapper_exit,
    wrapper_command,
)
from jobnet_agent.protocol import JobKey, JobRecord

KEY = JobKey(run="r1", path="/net/a", attempt=1)

# -- the wrapper's record ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"0\n", WrapperExit(code=0, orphaned=False)),
        (b"3 orphaned\n", WrapperExit(code=3, orphaned=True)),
        (b"255\n", WrapperExit(code=255, orphaned=False)),
        (b"never\n", WrapperExit(code=None, orphaned=True)),  # its supervisor died before the go line
        (b"3", None),  # cut short before its newline: the wrapper died writing it
        (b"", None),
        (b"\n", None),
        (b"x\n", None),
        (b"-1\n", None),
    ],
)
def test_parse_wrapper_exit(content: bytes, expected: WrapperExit | None) -> None:
    assert parse_wrapper_exit(content) == expected


def run_wrapper(job_dir: Path, supervisor_pid: int, go: bytes = b"g\n", script: str = "exit 3") -> WrapperExit | None:
    """Run the job wrapper around ``script`` as a child of this test process, ``go`` on its stdin."""
    exit_file = job_dir / "exitcode"
    wrapper = wrapper_command(str(exit_file), supervisor_pid)
    subprocess.run(["/bin/sh", "-c", wrapper, "sh", "/bin/sh", "-c", script], input=go, timeout=10)
    return parse_wrapper_exit(exit_file.read_bytes())


def test_the_wrapper_runs_nothing_without_its_go_line(tmp_path: Path) -> None:
    """The supervisor died before the job's running record was durable: its go line never came
    (end of file), so the script never runs and the wrapper says so."""
    marker = tmp_path / "ran"

    assert run_wrapper(tmp_path, os.getpid(), go=b"", script=f"touch {marker}") == WrapperExit(code=None, orphaned=True)
    assert not marker.exists()


def test_the_script_gets_dev_null_and_none_of_the_wrappers_pipes(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = f"cat > {seen}; ls /proc/$$/fd >> {seen}"

    assert run_wrapper(tmp_path, os.getpid(), script=script) == WrapperExit(code=0, orphaned=False)
    fds = seen.read_text().split()
    assert "3" not in fds and "4" not in fds and "0" in fds, fds  # cat read nothing: /dev/null


def test_the_wrapper_records_a_supervised_end_as_a_fact(tmp_path: Path) -> None:
    assert run_wrapper(tmp_path, supervisor_pid=os.getpid()) == WrapperExit(code=3, orphaned=False)


def test_the_wrapper_records_an_end_under_another_parent_as_orphaned(tmp_path: Path) -> None:
    """E02 regression: a supervisor that died before its wrapper's shell started left ``$PPID``
    naming the new parent, so comparing with ``$PPID`` called the end supervised. The wrapper
    compares with the supervisor's own pid, whatever its parent was at start."""
    not_the_parent = os.getppid()

    assert run_wrapper(tmp_path, supervisor_pid=not_the_parent) == WrapperExit(code=3, orphaned=True)


# -- end_of: the supervisor records the end ------------------------------------------------------

SUPERVISED_3 = WrapperExit(code=3, orphaned=False)
SUPERVISED_0 = WrapperExit(code=0, orphaned=False)
ORPHANED_0 = WrapperExit(code=0, orphaned=True)
NEVER_STARTED = WrapperExit(code=None, orphaned=True)


@pytest.mark.parametrize(
    "wrapper_exit, status, kill_reason, state, reason, exit_code, signal",
    [
        # The wrapper's code is the fact, whatever else happened (F06-F09: ended before the kill).
        (SUPERVISED_3, 3, None, "exited", None, 3, None),
        (SUPERVISED_0, -15, "stop", "exited", None, 0, None),
        (SUPERVISED_0, -9, "timeout", "exited", None, 0, None),
        # Ended unsupervised: lost for a person to settle, even with exit code 0 (E02).
        (ORPHANED_0, None, None, "lost", "SupervisorLost", 0, None),
        (ORPHANED_0, 0, "stop", "lost", "SupervisorLost", 0, None),
        # The go line never came: the script never ran, whatever else is known.
        (NEVER_STARTED, 125, None, "failedToStart", "SupervisorLost", None, None),
        (NEVER_STARTED, -15, "stop", "failedToStart", "SupervisorLost", None, None),
        # No wrapper record: our kill explains the end.
        (None, -15, "stop", "killed", "StopRequested", None, 15),
        (None, -9, "timeout", "timedOut", "TimedOut", None, 9),
        (None, None, "stop", "killed", "StopRequested", None, None),
        # A signal we did not send is a failure, not a stop.
        (None, -9, None, "exited", "Signaled", 137, 9),
        # The wrapper exited without writing (killed alone): its status is what we know.
        (None, 4, None, "exited", None, 4, None),
        # Nothing known: never a success.
        (None, None, None, "lost", "SupervisorLost", None, None),
    ],
)
def test_end_of(
    wrapper_exit: WrapperExit | None,
    status: int | None,
    kill_reason: str | None,
    state: str,
    reason: str | None,
    exit_code: int | None,
    signal: int | None,
) -> None:
    end = end_of(wrapper_exit, status, kill_reason)

    assert (end.state, end.reason, end.exit_code, end.signal) == (state, reason, exit_code, signal)


def test_an_unsupervised_end_names_the_recorded_code_for_the_person_who_settles_it() -> None:
    assert "recorded exit code 0" in end_of(ORPHANED_0, None, None).message


def test_an_end_sets_every_end_field_of_the_record() -> None:
    running = JobRecord(key=KEY, state="running", pid=10, exit_code=None)
    end = End("exited", None, "exited with code 3", exit_code=3)

    ended = running.replace(**end.changes())

    assert (ended.state, ended.exit_code, ended.message, ended.signal) == ("exited", 3, "exited with code 3", None)


# -- decide: settling a job whose supervisor is gone ---------------------------------------------

RUNNING = JobRecord(key=KEY, state="running", pid=10, pgid=10, boot_id="boot-1", seq=2)
ACCEPTED = JobRecord(key=KEY, state="accepted", boot_id="boot-1", seq=1)
STARTING = RUNNING.replace(pid=None, pgid=None)  # started, its pid not yet recorded


def seen(
    supervisor_alive: bool = False,
    boot_id: str = "boot-1",
    process_alive: bool = False,
    wrapper_exit: WrapperExit | None = None,
    may_have_started: bool = True,
) -> Observation:
    return Observation(supervisor_alive, boot_id, process_alive, wrapper_exit, may_have_started)


@pytest.mark.parametrize(
    "record, observation, action, state, reason",
    [
        (RUNNING, seen(supervisor_alive=True), KEEP, None, None),
        (RUNNING, seen(supervisor_alive=True, boot_id="boot-2"), KEEP, None, None),
        # E03: the wrapper recorded a supervised end, the supervisor died before reporting it.
        (RUNNING, seen(wrapper_exit=SUPERVISED_3), END, "exited", None),
        (RUNNING, seen(wrapper_exit=ORPHANED_0), END, "lost", "SupervisorLost"),
        # Its supervisor died after the running record, before the go line: it never ran.
        (RUNNING, seen(wrapper_exit=NEVER_STARTED), END, "failedToStart", "SupervisorLost"),
        (RUNNING, seen(wrapper_exit=NEVER_STARTED, boot_id="boot-2"), END, "failedToStart", "SupervisorLost"),
        (RUNNING, seen(boot_id="boot-2", process_alive=True), END, "interrupted", "HostRebooted"),
        (ACCEPTED, seen(boot_id="boot-2", may_have_started=False), END, "failedToStart", "HostRebooted"),
        (ACCEPTED, seen(may_have_started=False), END, "failedToStart", "SupervisorLost"),
        (ACCEPTED, seen(may_have_started=True), END, "lost", "SupervisorLost"),
        (STARTING, seen(process_alive=True), END, "lost", "SupervisorLost"),
        (RUNNING, seen(process_alive=True), ADOPT, None, None),
        (RUNNING, seen(), END, "lost", "SupervisorLost"),
        (RUNNING.replace(kill_requested="stop"), seen(), END, "killed", "StopRequested"),
        (RUNNING.replace(kill_requested="timeout"), seen(), END, "timedOut", "TimedOut"),
    ],
)
def test_decide(
    record: JobRecord, observation: Observation, action: str, state: str | None, reason: str | None
) -> None:
    verdict = decide(record, observation)

    assert verdict.action == action and verdict.why
    assert (verdict.end.state, verdict.end.reason) == (state, reason) if verdict.end else state is None


def test_a_recovered_result_says_who_recorded_it() -> None:
    verdict = decide(RUNNING, seen(wrapper_exit=SUPERVISED_3))

    assert verdict.end is not None and verdict.end.exit_code == 3
    assert "recorded by the job's wrapper" in verdict.end.message
