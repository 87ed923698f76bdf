"""The journal after a power loss: record files are not fsynced (the event log is the durable
copy), so a reboot may leave them stale, torn or missing; serve rebuilds them from the event log
before it answers anything, and a claim whose accepted event never became durable is forgotten."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from jobnet_agent.journal import Journal
from jobnet_agent.protocol import JobKey, JobRecord, LaunchSpec
from tests.agent.conftest import Agent, AgentDirs, key_text, new_key

BOOT = "boot-1"


def _journal(root: Path) -> Journal:
    journal = Journal(str(root / "state"), "test")
    journal.open()
    return journal


def _claim(journal: Journal, key: JobKey) -> JobRecord:
    record, lock_fd = journal.claim(
        key, LaunchSpec.from_json({"script": "/bin/true"}), lambda: JobRecord(key=key, state="accepted", boot_id=BOOT)
    )
    assert lock_fd is not None
    os.close(lock_fd)
    return record


def _record_path(journal: Journal, key: JobKey) -> Path:
    return Path(journal.job(key).path) / "record.json"


def test_the_same_boot_trusts_the_record_files(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    key = JobKey(run="r1", path="/a", attempt=1)
    _claim(journal, key)
    assert journal.repair(BOOT).restored == []
    accepted_text = _record_path(journal, key).read_text()
    journal.update(key, lambda r: r.replace(state="running", pid=42))
    # A record file set back behind the journal's back is not "repaired" without a reboot: the
    # event log is read in full only when a power loss may have hit the record files.
    _record_path(journal, key).write_text(accepted_text)

    report = journal.repair(BOOT)

    assert report.restored == [] and report.discarded == [] and _record_path(journal, key).read_text() == accepted_text


def test_a_new_boot_rebuilds_stale_torn_and_missing_record_files_from_the_event_log(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.repair(BOOT)
    stale, torn, missing, lost_dir, current = (
        JobKey(run="r1", path=f"/{name}", attempt=1) for name in ("stale", "torn", "missing", "dir", "ok")
    )
    for key in (stale, torn, missing, lost_dir, current):
        _claim(journal, key)
    accepted_text = _record_path(journal, stale).read_text()
    for key in (stale, torn, missing, lost_dir, current):
        _, committed = journal.update(key, lambda r: r.replace(state="running", pid=42))
        assert committed is not None
    # What a power loss may leave of record files that were renamed but never fsynced:
    _record_path(journal, stale).write_text(accepted_text)
    _record_path(journal, torn).write_bytes(b"")
    _record_path(journal, missing).unlink()
    shutil.rmtree(journal.job(lost_dir).path)
    last_seq = journal.last_seq()

    report = journal.repair("boot-2")

    assert sorted(r.key.path for r in report.restored) == ["/dir", "/missing", "/stale", "/torn"]
    for key in (stale, torn, missing, lost_dir, current):
        record = journal.read_record(key)
        assert record is not None and record.state == "running" and record.pid == 42, key
    assert report.relogged == [] and journal.last_seq() == last_seq  # nothing logged twice
    assert (Path(journal.state_dir) / "boot_id").read_text() == "boot-2\n"
    assert journal.repair("boot-2").restored == []  # once per boot


def test_a_torn_claim_whose_event_never_became_durable_is_forgotten_and_can_be_claimed_again(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.repair(BOOT)
    key = JobKey(run="r1", path="/never-logged", attempt=1)
    # The claim's directory survived (fsynced), its record file is torn and its event was lost.
    os.makedirs(journal.job(key).path)
    _record_path(journal, key).write_bytes(b'{"key": {"ru')

    report = journal.repair("boot-2")

    assert report.discarded == [str(_record_path(journal, key))] and report.restored == []
    assert journal.list_records() == []
    again = _claim(journal, key)
    assert again.state == "accepted" and again.seq == 1


def test_a_record_newer_than_the_event_log_is_logged_after_a_reboot(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.repair(BOOT)
    key = JobKey(run="r1", path="/a", attempt=1)
    record = _claim(journal, key)
    # The record file of seq 2 reached the disk, its event line did not.
    _record_path(journal, key).write_text(json.dumps(record.replace(seq=2, state="running", pid=7).to_stored()))

    report = journal.repair("boot-2")

    assert [r.seq for r in report.relogged] == [2] and report.restored == []
    assert journal.last_seq() == 2


def test_serve_after_a_reboot_answers_from_the_restored_record_and_logs_it(dirs: AgentDirs) -> None:
    key = new_key("/net/restored")
    agent = Agent(dirs)
    try:
        agent.launch(key, dirs.script("ok.sh", "exit 0\n"))
        ended = agent.wait_state(key, "exited")
    finally:
        agent.close()
    record_file = next(dirs.state.glob("jobs/*/*/record.json"))
    record_file.write_bytes(b"")  # torn by a power loss
    dirs.reboot()

    restarted = Agent(dirs)
    try:
        after = restarted.get(key)
    finally:
        restarted.close()

    assert after["state"] == "exited" and after["exitCode"] == 0 and after["seq"] == ended["seq"]
    restored = f"journal repaired after a reboot: record restored from the event log (seq {ended['seq']}, exited)"
    assert f"{key_text(key)} {restored}" in dirs.log_text()


def test_a_group_commit_torn_by_a_power_loss_is_cut_at_its_hole_and_relogged_in_seq_order(tmp_path: Path) -> None:
    """Events of a group commit are fsynced together at its end: a power loss before that may
    bring some back and not others (pages are written back in any order). None was answered, so
    the log is cut at the first hole and the record files that got further are logged again."""
    journal = _journal(tmp_path)
    journal.repair(BOOT)
    keys = [JobKey(run="r1", path=f"/fan{i}", attempt=1) for i in range(3)]
    with journal.group_commit():
        for key in keys:
            _claim(journal, key)
    events = Path(journal.events.path)
    data = events.read_bytes()
    first_line = data.index(b"\n") + 1
    events.write_bytes(b"\0" * first_line + data[first_line:])  # the first append never reached the disk

    report = journal.repair("boot-2")

    assert [r.seq for r in report.relogged] == [1, 2, 3]
    assert [json.loads(line)["seq"] for line in events.read_bytes().splitlines()] == [1, 2, 3]
    assert [r.state for r in journal.list_records()] == ["accepted"] * 3
    assert journal.repair("boot-2").relogged == []
