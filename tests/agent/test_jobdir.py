"""The job directory (jobnet_agent.jobdir): each file by what it means, without serve."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobnet_agent.endrule import WrapperExit
from jobnet_agent.jobdir import JobDir, JournalError, job_dir_path, quote, sealed_record, unseal_record
from jobnet_agent.protocol import JobKey, JobRecord, LaunchSpec

KEY = JobKey(run="r1", path="/net/a b", attempt=2)


@pytest.fixture
def job(tmp_path: Path) -> JobDir:
    made = JobDir(job_dir_path(str(tmp_path), KEY))
    os.makedirs(os.path.dirname(made.path))
    assert made.make() and not made.make()  # the claim: once
    return made


def test_job_dirs_are_named_by_key_and_long_names_are_hashed(tmp_path: Path) -> None:
    assert job_dir_path(str(tmp_path), KEY) == str(tmp_path / "r1" / "%2Fnet%2Fa%20b#2")
    long_path = job_dir_path(str(tmp_path), JobKey(run="r", path="/" + "x" * 300, attempt=1))
    assert os.path.basename(long_path).startswith("h-") and long_path.endswith("#1")


def test_a_record_is_rewritten_in_place_and_reads_back(job: JobDir) -> None:
    long = JobRecord(key=KEY, state="running", message="x" * 300, seq=1)
    short = long.replace(state="exited", message="done", seq=2)

    job.write_record(long)
    inode = os.stat(os.path.join(job.path, "record.json")).st_ino
    job.write_record(short)

    assert job.read_record() == short
    assert os.stat(os.path.join(job.path, "record.json")).st_ino == inode  # no new inode per state


def test_a_torn_record_is_told_apart_and_discarded(job: JobDir) -> None:
    sealed = sealed_record(JobRecord(key=KEY, state="accepted", seq=1))
    assert unseal_record(sealed) is not None
    torn = sealed.replace(b"accepted", b"acceptex")
    assert unseal_record(torn) is None
    Path(job.path, "record.json").write_bytes(torn)

    assert job.read_record_if_intact() is None
    with pytest.raises(JournalError, match="torn"):
        job.read_record()
    assert job.discard_torn_record() == os.path.join(job.path, "record.json")
    assert job.read_record() is None and job.discard_torn_record() is None


def test_an_older_agents_started_marker_and_the_wrapper_exit(job: JobDir) -> None:
    assert not job.may_have_started() and job.read_wrapper_exit() is None
    Path(job.path, "started").touch()  # what an agent before 0.2 made before starting a script
    Path(job.path, "exitcode").write_bytes(b"7 orphaned\n")  # its wrapper wrote a file of its own

    assert job.may_have_started() and job.read_wrapper_exit() == WrapperExit(code=7, orphaned=True)


SPEC = LaunchSpec(script="/opt/run.sh", args=["a"], env={"TOKEN": "t"}, working_dir=None, timeout_seconds=5)


def test_the_supervisor_lock_tells_liveness(job: JobDir) -> None:
    held = job.create_supervisor_lock(SPEC)
    try:
        assert job.supervisor_alive() and job.try_take_supervisor_lock() is None
    finally:
        os.close(held)
    assert not job.supervisor_alive()


def test_a_kill_wakes_an_older_agents_supervisor_on_its_control_fifo(job: JobDir) -> None:
    job.wake_older_supervisor()  # none listens: nothing happens
    os.mkfifo(os.path.join(job.path, "control"), 0o600)
    listening = os.open(os.path.join(job.path, "control"), os.O_RDWR | os.O_NONBLOCK)
    try:
        job.wake_older_supervisor()
        assert os.read(listening, 16) == b"k"
    finally:
        os.close(listening)


def test_the_spec_travels_in_the_lock_file_after_the_supervisors_pid(job: JobDir) -> None:
    """One inode fewer per job: the launch spec is in supervisor.lock, after the pid field."""
    held = job.create_supervisor_lock(SPEC)
    lock_path = os.path.join(job.path, "supervisor.lock")
    try:
        assert JobDir.supervisor_pid_of(Path(lock_path).read_bytes()) is None  # no supervisor yet
        JobDir.note_supervisor_pid(held, 4242)
        assert JobDir.supervisor_pid_of(Path(lock_path).read_bytes()) == 4242
        assert job.read_spec(held) == SPEC and job.read_spec() == SPEC
    finally:
        os.close(held)
    assert os.stat(lock_path).st_mode & 0o077 == 0 and not os.path.exists(os.path.join(job.path, "spec.json"))


def test_the_spec_of_a_job_claimed_by_an_agent_before_0_3_is_read_from_spec_json(job: JobDir) -> None:
    Path(job.path, "spec.json").write_text('{"script":"/opt/old.sh","args":[],"env":{}}')
    Path(job.path, "supervisor.lock").write_bytes(b"77\n")

    assert job.read_spec().script == "/opt/old.sh"
    os.unlink(os.path.join(job.path, "spec.json"))
    with pytest.raises(JournalError, match="unreadable"):
        job.read_spec()


def test_the_wrapper_appends_its_line_to_the_lock_file_after_the_spec(job: JobDir) -> None:
    held = job.create_supervisor_lock(SPEC)
    try:
        JobDir.note_supervisor_pid(held, 4242)
        assert job.read_wrapper_exit() is None  # still running
        with open(job.exit_code_path, "ab") as wrapper:  # as the wrapper's >> does
            wrapper.write(b"3 orphaned\n")
        assert job.read_wrapper_exit() == WrapperExit(code=3, orphaned=True)
        assert job.read_spec(held) == SPEC
        assert JobDir.supervisor_pid_of(Path(job.exit_code_path).read_bytes()) == 4242
    finally:
        os.close(held)


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_a_name_is_quoted_as_urllib_quotes_it(part: str) -> None:
    # The job directories of earlier agents were named by urllib.parse.quote: the same names.
    assert quote(part) == urllib.parse.quote(part, safe="")
