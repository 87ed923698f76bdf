"""The edge's inbox: what it hears between two rounds, handed to the scheduler as facts.

The runtime's callbacks put news in (journal records, the results of deliveries, launches
queued and sent, output tails being fetched, acks sent); each round takes the
:class:`AgentFacts` out. Pure bookkeeping: no I/O, and the time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.scheduler.actions import Ack
from jobnet.core.scheduler.facts import AgentFacts, DeliveryResult

#: What a record is to the inbox: older than one it has, news, or news whose output tail is due
#: now (the first ended, unacknowledged record of a key that wrote output).
RecordNews = Literal["stale", "news", "fetchTail"]


class AgentInbox:
    """What the edge knows from the agents for one run (see the module docstring)."""

    def __init__(self, watching_since: float) -> None:
        #: when this operator process started listening to the agents
        self.watching_since = watching_since
        #: the latest record per key text
        self.records: dict[str, JobRecord] = {}
        #: delivery results not yet given to the scheduler
        self.deliveries: list[DeliveryResult] = []
        #: launch requests waiting for their host's launch window, per key text (a re-sent key
        #: may wait twice), and when the latest request of each key left: the scheduler's
        #: dispatch timeout counts from the send
        self.queued_launches: dict[str, int] = {}
        self.launch_sent_at: dict[str, float] = {}
        #: keys whose output tail is being fetched
        self.tails_fetching: set[str] = set()
        #: the record seq each key's ack was sent for
        self.acks_sent: dict[str, int] = {}
        #: keys the run believed its agent had accepted that the agent answered it does not know
        self.absent_keys: set[str] = set()

    def add_record(self, record: JobRecord) -> RecordNews:
        text = record.key.text()
        known = self.records.get(text)
        if known is not None and record.seq < known.seq:
            return "stale"
        self.records[text] = record
        self.absent_keys.discard(text)
        if (
            record.terminal
            and not record.acknowledged
            and (record.stdout_bytes or record.stderr_bytes)
            and (known is None or not known.terminal)
        ):
            return "fetchTail"
        return "news"

    def add_absent(self, keys: list[JobKey]) -> None:
        """The agent does not know these keys (its state was wiped): what we had of them is gone."""
        for key in keys:
            text = key.text()
            self.records.pop(text, None)
            self.absent_keys.add(text)

    def add_delivery(self, result: DeliveryResult) -> None:
        if result.op == "launch":
            self.launch_sent_at.pop(result.key.text(), None)
        self.deliveries.append(result)

    def queue_launch(self, key: JobKey) -> None:
        """A launch was decided: it waits for its host's launch window from now on."""
        text = key.text()
        self.queued_launches[text] = self.queued_launches.get(text, 0) + 1

    def leave_launch_queue(self, key: JobKey, sent_at: float | None) -> None:
        """The launch left at ``sent_at``, or never will (None: no agent, or cancelled)."""
        text = key.text()
        waiting = self.queued_launches.pop(text, 1) - 1
        if waiting:
            self.queued_launches[text] = waiting
        if sent_at is not None:
            self.launch_sent_at[text] = sent_at

    def ack_sent(self, ack: Ack) -> None:
        self.acks_sent[ack.key.text()] = ack.seq

    def take_facts(self, heartbeats: Mapping[str, float]) -> AgentFacts:
        """The facts for a round; the deliveries are taken out (:meth:`put_back` if the
        round's decision could not be stored)."""
        deliveries, self.deliveries = self.deliveries, []
        return AgentFacts(
            records=self.records,
            heartbeats=heartbeats,
            deliveries=tuple(deliveries),
            watching_since=self.watching_since,
            queued_launches=frozenset(self.queued_launches),
            launch_sent_at=self.launch_sent_at,
            tails_fetching=frozenset(self.tails_fetching),
            acks_sent=self.acks_sent,
            absent_keys=frozenset(self.absent_keys),
        )

    def put_back(self, facts: AgentFacts) -> None:
        """The round decided nothing that counts: its deliveries go to the next one first."""
        self.deliveries = list(facts.deliveries) + self.deliveries
