"""The edge's inbox: which records are news, when an output tail is due, launches and acks."""

from __future__ import annotations

from typing import Any

import pytest

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.scheduler import Ack, DeliveryResult
from jobnet.core.scheduler.inbox import AgentInbox, RecordNews

KEY = JobKey(run="uid-1", path="/net/load", attempt=1)


def record(seq: int, state: str, **fields: Any) -> JobRecord:
    return JobRecord.model_validate({"key": KEY, "seq": seq, "state": state, **fields})


@pytest.mark.parametrize(
    ("known", "new", "news"),
    [
        (None, record(2, "running"), "news"),
        (record(3, "running"), record(2, "accepted"), "stale"),
        (record(2, "running"), record(3, "exited", exit_code=0, stdout_bytes=5), "fetchTail"),
        (record(2, "running"), record(3, "exited", exit_code=0), "news"),  # no output: no tail
        (None, record(3, "exited", exit_code=1, stderr_bytes=5), "fetchTail"),
        (record(3, "exited", stdout_bytes=5), record(4, "exited", stdout_bytes=5, acknowledged=True), "news"),
        (None, record(4, "exited", stdout_bytes=5, acknowledged=True), "news"),  # stored before
    ],
)
def test_a_record_is_news_unless_older_and_the_first_unacknowledged_end_with_output_wants_its_tail(
    known: JobRecord | None, new: JobRecord, news: RecordNews
) -> None:
    inbox = AgentInbox(watching_since=100.0)
    if known is not None:
        inbox.add_record(known)
    assert inbox.add_record(new) == news
    expected = known if news == "stale" else new
    assert inbox.records[KEY.text()] == expected


def test_deliveries_are_taken_once_and_put_back_when_the_round_counted_for_nothing() -> None:
    inbox = AgentInbox(watching_since=100.0)
    inbox.queue_launch(KEY)
    inbox.leave_launch_queue(KEY, sent_at=105.0)
    result = DeliveryResult(key=KEY, op="launch", outcome="unknown", error_code="ConnectionLost")
    inbox.add_delivery(result)
    facts = inbox.take_facts({"batch@vm1:22": 104.0})
    assert facts.deliveries == (result,) and facts.watching_since == 100.0
    assert facts.queued_launches == frozenset() and facts.launch_sent_at == {}  # answered: no longer awaited
    assert inbox.take_facts({}).deliveries == ()
    inbox.put_back(facts)
    assert inbox.take_facts({}).deliveries == (result,)


def test_a_launch_queued_twice_waits_until_both_requests_left() -> None:
    inbox = AgentInbox(watching_since=0.0)
    inbox.queue_launch(KEY)
    inbox.queue_launch(KEY)
    inbox.leave_launch_queue(KEY, sent_at=None)
    assert inbox.take_facts({}).queued_launches == {KEY.text()}
    inbox.leave_launch_queue(KEY, sent_at=7.0)
    facts = inbox.take_facts({})
    assert facts.queued_launches == frozenset() and facts.launch_sent_at == {KEY.text(): 7.0}


def test_the_acks_sent_and_the_tails_fetched_are_facts_for_the_next_round() -> None:
    inbox = AgentInbox(watching_since=0.0)
    inbox.ack_sent(Ack(key=KEY, path=KEY.path, host="batch@vm1:22", seq=9))
    inbox.tails_fetching.add(KEY.text())
    facts = inbox.take_facts({})
    assert facts.acks_sent == {KEY.text(): 9} and facts.tails_fetching == {KEY.text()}


def test_a_key_the_agent_does_not_know_is_absent_until_a_record_of_it_arrives() -> None:
    inbox = AgentInbox(watching_since=0.0)
    inbox.add_record(JobRecord(key=KEY, seq=3, state="running", pid=7))
    inbox.add_absent([KEY])
    facts = inbox.take_facts({})
    assert facts.absent_keys == {KEY.text()} and KEY.text() not in facts.records  # what we had is gone
    inbox.add_record(JobRecord(key=KEY, seq=1, state="running", pid=8))  # a new journal numbers anew
    assert inbox.take_facts({}).absent_keys == frozenset()
