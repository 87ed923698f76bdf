"""The job directory (jobnet_agent.jobdir): each file by what it means, without serve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobnet_agent.endrule import WrapperExit
from jobnet_agent.jobdir import JobDir, JournalError, job_dir_path, sealed_record, unseal_record
from jobnet_agent.protocol import JobKey, JobRecord

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
    Path(job.exit_code_path).write_bytes(b"7 orphaned\n")

    assert job.may_have_started() and job.read_wrapper_exit() == WrapperExit(code=7, orphaned=True)


def test_the_supervisor_lock_tells_liveness(job: JobDir) -> None:
    held = job.create_supervisor_lock()
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
