"""Unit tests of the agent's protocol, journal and supervisor pieces (the end rule: test_endrule.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from jobnet_agent.config import AgentConfig
from jobnet_agent.durable import atomic_write
from jobnet_agent.handover import START, send_job
from jobnet_agent.journal import Journal, JournalError
from jobnet_agent.protocol import (
    JobKey,
    JobRecord,
    LaunchSpec,
    ProtocolError,
    RequestError,
    encode,
    kill_args,
    parse_request,
)
from jobnet_agent.supervisor import Supervisor

KEY = JobKey(run="r1", path="/net/a", attempt=1)


# -- protocol ----------------------------------------------------------------------------------


def test_key_text_round_trip() -> None:
    key = JobKey(run="6f1c", path="/nightly/load#x/step1", attempt=12)

    assert key.text() == "6f1c:/nightly/load#x/step1#12"
    assert JobKey.parse_text(key.text()) == key


@pytest.mark.parametrize(
    "value, needle",
    [
        ({"run": "r", "path": "/p", "attempt": 0}, "attempt"),
        ({"run": "r", "path": "/p", "attempt": True}, "attempt"),
        ({"run": "", "path": "/p", "attempt": 1}, "key.run"),
        ({"run": "a:b", "path": "/p", "attempt": 1}, "':'"),
        ({"run": "r", "path": "/p\n", "attempt": 1}, "printable"),
        ({"run": "r", "path": "/p", "attempt": 1, "extra": 1}, "unknown field"),
        ("r:/p#1", "must be an object"),
    ],
)
def test_bad_keys_are_refused_with_a_clear_message(value: object, needle: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        JobKey.from_json(value)
    assert caught.value.code == "BadRequest" and needle in caught.value.message


def test_key_text_form_errors_name_the_expected_form() -> None:
    with pytest.raises(ValueError, match="run:path#attempt"):
        JobKey.parse_text("no-attempt")


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({"script": "run.sh"}, "absolute"),
        ({"script": "/x", "args": [1]}, "args"),
        ({"script": "/x", "env": {"1BAD": "v"}}, "not a valid variable name"),
        ({"script": "/x", "env": {"A": 1}}, "env A"),
        ({"script": "/x", "timeoutSeconds": 0}, "timeoutSeconds"),
        ({"script": "/x", "workingDir": ""}, "workingDir"),
    ],
)
def test_bad_launch_specs_are_refused(spec: dict, needle: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        LaunchSpec.from_json(spec)
    assert needle in caught.value.message


def test_parse_request_keeps_the_id_for_errors() -> None:
    assert parse_request('{"id": 3, "op": "ping"}').op == "ping"
    with pytest.raises(RequestError) as caught:
        parse_request('{"id": 4, "op": "nope"}')
    assert caught.value.request_id == 4
    with pytest.raises(ProtocolError, match="integer id"):
        parse_request('{"op": "ping"}')
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_request("{")


def test_kill_args_defaults_and_validation() -> None:
    assert kill_args({}, 10.0) == (10.0, "stop")
    assert kill_args({"graceSeconds": 0, "reason": "timeout"}, 10.0) == (0.0, "timeout")
    with pytest.raises(ProtocolError):
        kill_args({"reason": "because"}, 1.0)
    with pytest.raises(ProtocolError):
        kill_args({"graceSeconds": -1}, 1.0)


def test_private_record_fields_never_go_on_the_wire() -> None:
    record = JobRecord(key=KEY, state="running", grace_seconds=3.0, pid_start_ticks=99)

    assert not any(name.startswith("_") for name in record.to_wire())
    assert JobRecord.from_stored(json.loads(json.dumps(record.to_stored()))) == record


# -- journal -----------------------------------------------------------------------------------


def _journal(tmp_path: Path) -> Journal:
    journal = Journal(str(tmp_path / "state"), "test")
    journal.open()
    return journal


def _spec() -> LaunchSpec:
    return LaunchSpec(script="/bin/true", args=[], env={}, working_dir=None, timeout_seconds=None)


def test_claim_is_once_per_key_and_seqs_increase(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    first, lock = journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))
    again, no_lock = journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))
    assert lock is not None
    os.close(lock)
    _, running = journal.update(KEY, lambda r: r.replace(state="running"))

    assert (first.seq, again.seq, no_lock) == (1, 1, None)
    assert running is not None and running.seq == 2 and journal.last_seq() == 2
    assert [r.state for r in journal.events.reader(0).poll()] == ["accepted", "running"]


def test_update_that_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)

    current, committed = journal.update(KEY, lambda r: None)

    assert current is not None and committed is None and journal.last_seq() == 1


def test_a_record_rewritten_in_place_reads_back_whole_even_when_shorter(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    path = Path(journal.job(KEY).path) / "record.json"
    inode = path.stat().st_ino
    journal.update(KEY, lambda r: r.replace(state="running", message="x" * 300))
    _, ended = journal.update(KEY, lambda r: r.replace(state="exited", exit_code=0, message=None))

    assert journal.read_record(KEY) == ended
    assert path.stat().st_ino == inode  # rewritten, not replaced: no new inode per state
    assert json.loads(path.read_text())["state"] == "exited"  # still plain JSON for people


def test_readers_never_see_a_mix_of_two_records_rewritten_in_place(tmp_path: Path) -> None:
    """Each record's message names its seq; a reader racing the in-place rewrites (other
    processes do, without the journal lock) must only ever get whole records."""
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    seen: list[JobRecord] = []

    def read_while_rewritten() -> None:
        for _ in range(3000):
            record = journal.read_record(KEY)
            assert record is not None
            seen.append(record)

    reader = threading.Thread(target=read_while_rewritten)
    reader.start()
    for round_ in range(1500):
        # Alternately long and short: some rewrites leave padding behind.
        padding = "x" * (300 * (round_ % 2))
        journal.update(KEY, lambda r, padding=padding: r.replace(message=f"seq {r.seq + 1} {padding}"))
    reader.join(timeout=60)

    assert not reader.is_alive() and len(seen) == 3000
    assert all(r.message is None or r.message.startswith(f"seq {r.seq} ") for r in seen)


def test_a_record_that_does_not_check_out_is_torn(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    path = Path(journal.job(KEY).path) / "record.json"
    path.write_bytes(path.read_bytes().replace(b'"accepted"', b'"exited"  '))

    with pytest.raises(JournalError, match="torn"):
        journal.read_record(KEY)


def test_a_record_written_by_an_older_agent_without_a_seal_still_reads(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    record = journal.read_record(KEY)
    assert record is not None
    atomic_write(os.path.join(journal.job(KEY).path, "record.json"), json.dumps(record.to_stored()).encode())

    assert journal.read_record(KEY) == record


def test_a_torn_event_append_is_cut_and_the_record_relogged(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    # Simulate: the record of seq 2 was written, its event append was cut off mid-line.
    record = journal.read_record(KEY)
    assert record is not None
    with open(journal.lock_path, "w") as lock_file:
        lock_file.write(f"2 {os.path.relpath(journal.job(KEY).path, journal.state_dir)}\n")
    atomic_write(
        os.path.join(journal.job(KEY).path, "record.json"),
        json.dumps(record.replace(seq=2, state="running").to_stored()).encode(),
    )
    with open(journal.events.path, "ab") as events:
        events.write(b'{"seq": 2, "rec')

    with journal.transaction() as tx:
        assert tx.last_seq == 2

    lines = Path(journal.events.path).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    assert json.loads(lines[1])["record"]["state"] == "running"


def test_event_reader_follows_appends_and_compaction(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    reader = journal.events.reader(0)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    assert [r.seq for r in reader.poll()] == [1]
    assert reader.poll() == []
    journal.update(KEY, lambda r: r.replace(state="exited", exit_code=0))
    journal.events.rewrite(journal.list_records(), journal.last_seq())  # a new file: only the latest record per job
    other = JobKey(run="r2", path="/b", attempt=1)
    os.close(journal.claim(other, _spec(), lambda: JobRecord(key=other, state="accepted"))[1] or -1)

    assert [(r.seq, r.state) for r in reader.poll()] == [(2, "exited"), (3, "accepted")]


def test_a_reader_at_the_end_reads_only_later_events_and_follows_a_compaction(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    with open(journal.events.path, "ab") as events:
        events.write(b'{"seq":2,"rec')  # a torn append: not an entry, and where the next one starts
    reader = journal.events.reader_at_end()
    assert reader.delivered_seq == 1 and reader.poll() == []
    journal.update(KEY, lambda r: r.replace(state="running"))  # cuts the torn append first
    assert [(r.seq, r.state) for r in reader.poll()] == [(2, "running")]
    journal.update(KEY, lambda r: r.replace(state="exited", exit_code=0))
    journal.events.rewrite(journal.list_records(), journal.last_seq())  # a new file: reread, skipping what was read

    assert [(r.seq, r.state) for r in reader.poll()] == [(3, "exited")]
    reader.close()


def test_a_repair_asked_to_follow_hands_over_its_scan_and_a_reader_of_what_comes_after(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    other = JobKey(run="r2", path="/b", attempt=1)
    for key in (KEY, other):
        os.close(journal.claim(key, _spec(), lambda key=key: JobRecord(key=key, state="accepted"))[1] or -1)
    assert journal.repair("boot-1").following is None

    following = journal.repair("boot-1", follow=True).following
    assert following is not None
    records, reader = following
    journal.update(KEY, lambda r: r.replace(state="running"))

    assert [(r.key, r.seq) for r in records] == [(KEY, 1), (other, 2)]
    assert [(r.key, r.seq) for r in reader.poll()] == [(KEY, 3)]
    reader.close()


def test_garbage_collection_passes_over_a_claim_without_a_record(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    journal.update(KEY, lambda r: r.replace(state="exited", exit_code=0, acknowledged=True))
    unfinished = JobKey(run="r", path="/claimed", attempt=1)
    os.makedirs(journal.job(unfinished).path)  # its claimant died before its first record

    assert journal.collect_garbage(retention_seconds=0) == [KEY]
    assert os.path.isdir(journal.job(unfinished).path)


def test_garbage_collection_removes_only_acknowledged_ended_jobs(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    done = JobKey(run="r", path="/done", attempt=1)
    active = JobKey(run="r", path="/active", attempt=1)
    for key in (done, active):
        os.close(journal.claim(key, _spec(), lambda key=key: JobRecord(key=key, state="accepted"))[1] or -1)
    journal.update(done, lambda r: r.replace(state="exited", exit_code=0, acknowledged=True))

    assert journal.collect_garbage(retention_seconds=3600) == []
    assert journal.collect_garbage(retention_seconds=0) == [done]
    assert journal.read_record(done) is None and journal.read_record(active) is not None


def test_an_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    with pytest.raises(JournalError, match="not"):
        Journal(str(tmp_path / "file" / "state"), "test").open()
    with pytest.raises(JournalError, match="does not exist"):
        Journal(str(tmp_path / "missing"), "test").open(create=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JournalError, match="never used by an agent"):
        Journal(str(tmp_path / "empty"), "test").open(create=False)


def supervise_alone(config: AgentConfig, journal: Journal, key: JobKey) -> None:
    """Hand one claimed job to a supervising process run here, which leaves once it is done."""
    lock_fd = journal.job(key).try_take_supervisor_lock()
    assert lock_fd is not None
    ready_r, ready_w = os.pipe()
    serve_side, supervisor_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        send_job(serve_side, START, journal.job(key).path, [lock_fd, ready_w])
    finally:
        for fd in (lock_fd, ready_w):
            os.close(fd)
        serve_side.close()  # serve is gone: the process leaves once the job is settled
    try:
        assert Supervisor(config, supervisor_side).run() == 0
        assert os.read(ready_r, 1) == b"1"  # answered once the outcome was in the journal
    finally:
        os.close(ready_r)


def test_a_kill_that_arrives_before_the_start_means_the_script_never_starts(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    marker = tmp_path / "ran"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    spec = LaunchSpec(script=str(script), args=[], env={}, working_dir=None, timeout_seconds=None)
    os.close(journal.claim(KEY, spec, lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    journal.update(KEY, lambda r: r.replace(kill_requested="stop"))

    supervise_alone(AgentConfig(state_dir=journal.state_dir), journal, KEY)

    record = journal.read_record(KEY)
    assert record is not None and record.state == "killed" and record.message == "stopped before it started"
    assert not marker.exists() and not os.path.exists(os.path.join(journal.job(KEY).path, "started"))


def _lock_is_free(journal: Journal) -> bool:
    import fcntl

    fd = os.open(journal.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_one_transaction_group_takes_the_lock_once_and_lets_it_go_before_its_fsync(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    keys = [JobKey(run="r", path=f"/j{n}", attempt=1) for n in range(3)]
    with journal.group_commit(one_transaction=True) as group:
        assert _lock_is_free(journal)  # taken by the first write, not before
        for key in keys:
            os.close(journal.claim(key, _spec(), lambda key=key: JobRecord(key=key, state="accepted"))[1] or -1)
            assert not _lock_is_free(journal)
        journal.update(keys[0], lambda r: r.replace(state="running", pid=1))
        held = group.held
        group.sync()
        assert _lock_is_free(journal) and held is not None and group.held is None
        journal.update(keys[1], lambda r: r.replace(state="running", pid=2))  # takes it anew
        assert not _lock_is_free(journal)
    assert _lock_is_free(journal)

    lines = Path(journal.events.path).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert [r.seq for r in journal.events.reader(0).poll()] == [1, 2, 3, 4, 5]


def test_a_one_transaction_group_starts_afresh_after_a_write_that_failed(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    other = JobKey(run="r2", path="/b", attempt=1)

    def broken(record: JobRecord) -> JobRecord:
        raise RuntimeError("a change that failed")

    with journal.group_commit(one_transaction=True):
        journal.update(KEY, lambda r: r.replace(state="running", pid=1))
        with pytest.raises(RuntimeError):
            journal.update(KEY, broken)
        assert _lock_is_free(journal)  # let go: the next write repairs what this one left
        os.close(journal.claim(other, _spec(), lambda: JobRecord(key=other, state="accepted"))[1] or -1)

    assert [(r.seq, r.state) for r in journal.events.reader(0).poll()] == [
        (1, "accepted"),
        (2, "running"),
        (3, "accepted"),
    ]


def test_a_follower_can_pass_over_events_undecoded_and_skip_its_own_wakeups(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    kills = journal.events.reader(0, skip=b'"killRequested":null')
    wakeup = journal.events.wakeup()
    other_process = Journal(journal.state_dir, "other")
    journal.events.skip_own_wakeup(wakeup)
    try:
        journal.update(KEY, lambda r: r.replace(state="running", pid=1))
        assert not _readable(wakeup.fileno())  # its own append
        other_process.update(KEY, lambda r: r.replace(kill_requested="stop"))
        assert _readable(wakeup.fileno())

        assert [(r.seq, r.kill_requested) for r in kills.poll()] == [(3, "stop")]
        assert kills.delivered_seq == 3 and kills.poll() == []
    finally:
        wakeup.close()


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def test_a_watched_event_is_sent_as_the_record_would_send_it(tmp_path: Path) -> None:
    from jobnet_agent.protocol import event, stored_event

    record = JobRecord(key=KEY, state="running", seq=4, pid=9, grace_seconds=2.0, pid_start_ticks=77)
    stored = json.loads(json.dumps(record.to_stored()))
    older = {k: v for k, v in stored.items() if k not in ("stdoutDropped", "_pidStartTicks")}

    assert encode(stored_event(stored)) == encode(event(record))
    assert stored_event(older) == event(JobRecord.from_stored(older))


@pytest.mark.parametrize(
    "record",
    [
        JobRecord(key=KEY, state="accepted", seq=1, accepted_at=1764780000.25, boot_id="b"),
        JobRecord(
            key=KEY, state="running", seq=4, pid=9, pgid=9, started_at=1.5e-05, grace_seconds=2.0, pid_start_ticks=7
        ),
        JobRecord(
            key=JobKey(run="r:1", path='/a "b"/\\c/é}{,"seq":1', attempt=12),
            state="exited",
            seq=123456,
            exit_code=0,
            message='said "hi"\n\ttab ✓ \\ \u0001',
            stdout_bytes=10**12,
            kill_requested="stop",
            acknowledged=True,
        ),
    ],
)
def test_a_watched_event_leaves_as_stored_and_equals_the_decoded_message(tmp_path: Path, record: JobRecord) -> None:
    from jobnet_agent.jobdir import stored_json
    from jobnet_agent.protocol import _stored_entry_pattern, stored_event, watched_event

    line = b'{"seq":%d,"record":%s}' % (record.seq, stored_json(record))
    assert _stored_entry_pattern().fullmatch(line), "a record stored today takes the undecoded path"
    assert watched_event(line) == (record.seq, encode(stored_event(json.loads(line)["record"])))


def test_a_watched_event_stored_otherwise_is_decoded_and_a_marker_is_none() -> None:
    from jobnet_agent.protocol import _stored_entry_pattern, stored_event, watched_event

    stored = JobRecord(key=KEY, state="running", seq=4, pid=9).to_stored()
    older = json.dumps({"seq": 4, "record": {k: v for k, v in stored.items() if k != "_pidStartTicks"}}).encode()
    reordered = json.dumps({"seq": 4, "record": dict(reversed(list(stored.items())))}).encode()
    for line in (older, reordered):
        assert not _stored_entry_pattern().fullmatch(line)
        assert watched_event(line) == (4, encode(stored_event(json.loads(line)["record"])))
    assert watched_event(b'{"seq":9}') is None
    with pytest.raises(ValueError):
        watched_event(b'{"seq":10,"record":{"key":{"run":"r1","pa')  # torn


def test_a_watch_reads_the_events_a_record_reader_reads(tmp_path: Path) -> None:
    from jobnet_agent.protocol import stored_event

    journal = _journal(tmp_path)
    journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))
    journal.update(KEY, lambda r: r.replace(state="running", pid=3, message="ünïcode"))
    watched = journal.events.reader(0).poll_watched()
    assert watched == [(r["seq"], encode(stored_event(r))) for r in journal.events.reader(0).poll_stored()]
    assert [seq for seq, _ in watched] == [1, 2]


def test_replace_copies_a_record_and_refuses_unknown_fields() -> None:
    record = JobRecord(key=KEY, state="accepted", seq=1)
    changed = record.replace(state="running", pid=3, message="x" * 5000)

    assert changed == JobRecord(key=KEY, state="running", seq=1, pid=3, message="x" * 1997 + "...")
    assert record.state == "accepted" and hash(changed) == hash(changed.replace())
    with pytest.raises(TypeError, match="no field"):
        record.replace(colour="red")


def test_records_behave_as_frozen_dataclasses_did() -> None:
    """The agent's value classes (:class:`jobnet_agent.frozen.Frozen`, no ``dataclasses`` at a
    process's start): equal and hashed by their fields, only within one class, shown with them,
    and never changed in place."""
    same = JobKey("r1", "/net/a", 1)

    assert same == KEY and hash(same) == hash(("r1", "/net/a", 1)) and {same: 1}[KEY] == 1
    assert KEY != JobKey("r1", "/net/a", 2) and KEY != ("r1", "/net/a", 1)
    assert repr(KEY) == "JobKey(run='r1', path='/net/a', attempt=1)"
    assert JobRecord._fields[:3] == ("key", "state", "seq") and len(JobRecord._fields) == 21
    with pytest.raises(AttributeError, match="cannot assign to field 'run'"):
        KEY.run = "r2"
    with pytest.raises(AttributeError, match="cannot delete field 'state'"):
        del JobRecord(key=KEY, state="accepted").state
    assert KEY.run == "r1"


def test_a_follower_of_kills_only_is_woken_only_for_records_with_a_kill(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    os.close(journal.claim(KEY, _spec(), lambda: JobRecord(key=KEY, state="accepted"))[1] or -1)
    kills_only, every = journal.events.wakeup(kills_only=True), journal.events.wakeup()
    try:
        with journal.group_commit():
            journal.update(KEY, lambda r: r.replace(state="running", pid=1))
        assert _readable(every.fileno()) and not _readable(kills_only.fileno())
        every.drain()
        journal.update(KEY, lambda r: r.replace(kill_requested="stop"))  # durable at once
        assert _readable(every.fileno()) and _readable(kills_only.fileno())
        every.drain()
        kills_only.drain()
        with journal.group_commit():
            journal.update(KEY, lambda r: r.replace(grace_seconds=1.0))  # still carries the kill
        assert _readable(every.fileno()) and _readable(kills_only.fileno())
    finally:
        kills_only.close()
        every.close()


def test_an_entry_state_is_read_undecoded_as_decoding_reads_it() -> None:
    from jobnet_agent.eventlog import EntryState, entry_state, record_of_entry
    from jobnet_agent.jobdir import stored_json

    key = JobKey(run="r-1", path='/a "b"/\\c/é}{,"seq":1', attempt=12)
    record = JobRecord(key=key, state="timedOut", seq=77, message='"state":"running"')
    line = b'{"seq":77,"record":%s}' % stored_json(record)
    assert entry_state(line) == (77, EntryState(key, 77, "timedOut", line))
    assert record_of_entry(line) == record
    older = json.dumps({"seq": 5, "record": {"state": "running", "seq": 5, "key": KEY.to_json()}}).encode()
    assert entry_state(older) == (5, EntryState(KEY, 5, "running", older))
    assert entry_state(b'{"seq":9}') is None
