"""Leader election over a ``coordination.k8s.io/v1`` Lease, the rules of client-go's
``leaderelection`` package as pure functions: no clock is read and no request is sent here.

One replica at a time drives the runs. Candidates take turns reading the Lease and, when it is
free or expired, writing themselves into it with the read ``resourceVersion`` as a precondition,
so two candidates can never both win the same turn (the API server answers the loser 409).

Two clocks, as in client-go:

* **wall time** only goes into the Lease's ``acquireTime``/``renewTime`` for people to read;
  it is never compared across machines, because their clocks may disagree;
* **monotonic time** (local, never jumps) decides everything. A candidate counts a Lease as
  expired once it has seen the same record, unchanged, for ``lease_duration``; a leader counts
  itself leader only until ``renew_deadline`` after the *send* of its last successful renewal.

Because ``renew_deadline < lease_duration`` and the leader measures from the send (before the
API server stored the renewal, so before any other candidate can have seen it), a leader that
cannot renew — cut off from the API server, or frozen by SIGSTOP — stops acting before any other
candidate may take over. Monotonic clocks keep counting while a process is stopped, so a
resumed leader finds its term over at once.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Literal

#: client-go's MicroTime format (what ``kubectl get lease -o yaml`` shows).
MICRO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class ElectionConfigError(ValueError):
    """The durations cannot give the guarantee above."""


@dataclass(frozen=True)
class ElectionConfig:
    """Who we are and the three durations of client-go (defaults: 15 s, 10 s, 2 s)."""

    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        problems = []
        if not self.identity:
            problems.append("the identity is empty")
        if self.retry_period <= 0:
            problems.append(f"the retry period ({self.retry_period} s) must be positive")
        if not self.renew_deadline > self.retry_period:
            problems.append(
                f"the renew deadline ({self.renew_deadline} s) must be longer than the retry period "
                f"({self.retry_period} s), or a leader gets one try at most"
            )
        if not self.lease_duration > self.renew_deadline:
            problems.append(
                f"the lease duration ({self.lease_duration} s) must be longer than the renew deadline "
                f"({self.renew_deadline} s), or another replica could take over while the leader still acts"
            )
        if problems:
            raise ElectionConfigError("; ".join(problems))


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that election reads and writes."""

    holder: str | None
    lease_duration_seconds: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: dict[str, object]) -> LeaseRecord:
        spec = lease.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        acquire, renew, holder = spec.get("acquireTime"), spec.get("renewTime"), spec.get("holderIdentity")
        return cls(
            holder=holder if isinstance(holder, str) and holder else None,
            lease_duration_seconds=duration if isinstance(duration, int) else 0,
            acquire_time=acquire if isinstance(acquire, str) else None,
            renew_time=renew if isinstance(renew, str) else None,
            transitions=transitions if isinstance(transitions, int) else 0,
        )

    def spec(self) -> dict[str, object]:
        """The Lease's ``spec`` for this record."""
        spec: dict[str, object] = {
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.holder is not None:
            spec["holderIdentity"] = self.holder
        if self.acquire_time is not None:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time is not None:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True)
class Observation:
    """The last Lease record a candidate read, and when (monotonic) it last *changed*."""

    record: LeaseRecord | None
    resource_version: str | None
    changed_at: float


@dataclass(frozen=True)
class ElectionState:
    """What one candidate knows: what it observed and, while leading, when it sent the last
    renewal that the API server accepted."""

    observation: Observation | None = None
    renewed_sent_at: float | None = None

    def leading(self, config: ElectionConfig, now: float) -> bool:
        """May this replica act as the leader now? Only within ``renew_deadline`` of the send of
        its last accepted renewal: after that another replica may be about to take over."""
        return self.renewed_sent_at is not None and now - self.renewed_sent_at < config.renew_deadline


@dataclass(frozen=True)
class Wait:
    """The Lease is held by another candidate and not expired: try again later."""

    holder: str
    kind: Literal["wait"] = "wait"


@dataclass(frozen=True)
class Write:
    """Create (``resource_version`` None) or update the Lease to this record, the update with the
    observed ``resource_version`` as its precondition."""

    record: LeaseRecord
    resource_version: str | None
    takeover: bool
    kind: Literal["write"] = "write"


Attempt = Wait | Write


def micro_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime(MICRO_TIME_FORMAT)


def observe(
    state: ElectionState, record: LeaseRecord | None, resource_version: str | None, now: float
) -> ElectionState:
    """Remember what was read. The expiry clock restarts only when the record *changed*:
    re-reading an unchanged Lease must not keep it alive."""
    previous = state.observation
    if previous is not None and previous.record == record and previous.resource_version == resource_version:
        return state
    return replace(state, observation=Observation(record, resource_version, now))


def try_acquire_or_renew(config: ElectionConfig, state: ElectionState, now: float, wall: datetime.datetime) -> Attempt:
    """client-go's ``tryAcquireOrRenew`` after the read: what to write, or why not to."""
    observation = state.observation
    duration = max(1, round(config.lease_duration))
    stamp = micro_time(wall)
    if observation is None or observation.record is None:
        return Write(LeaseRecord(config.identity, duration, stamp, stamp, 0), None, takeover=True)
    record = observation.record
    held_by_other = record.holder not in (None, config.identity)
    if held_by_other and now - observation.changed_at < max(record.lease_duration_seconds, 1):
        return Wait(holder=record.holder or "")
    if record.holder == config.identity:
        renewed = replace(record, lease_duration_seconds=duration, renew_time=stamp)
        return Write(renewed, observation.resource_version, takeover=False)
    taken = LeaseRecord(config.identity, duration, stamp, stamp, record.transitions + 1)
    return Write(taken, observation.resource_version, takeover=True)


def written(state: ElectionState, attempt: Write, resource_version: str | None, sent_at: float) -> ElectionState:
    """The write was accepted: we lead, counted from its send."""
    observation = Observation(attempt.record, resource_version, sent_at)
    return ElectionState(observation=observation, renewed_sent_at=sent_at)


def released(config: ElectionConfig, state: ElectionState, wall: datetime.datetime) -> Write | None:
    """On a clean shutdown the leader hands the Lease back (client-go's ``ReleaseOnCancel``):
    no holder and a one-second duration, so the next candidate need not wait it out."""
    observation = state.observation
    if observation is None or observation.record is None or observation.record.holder != config.identity:
        return None
    record = replace(observation.record, holder=None, lease_duration_seconds=1, renew_time=micro_time(wall))
    return Write(record, observation.resource_version, takeover=False)
