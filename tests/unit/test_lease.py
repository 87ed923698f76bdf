"""The pure leader-election rules (core/lease.py): who may write the Lease, when a Lease counts as
expired, and when a leader must stop acting."""

from __future__ import annotations

import datetime

import pytest

from jobnet.core.lease import (
    ElectionConfig,
    ElectionConfigError,
    ElectionState,
    LeaseRecord,
    Wait,
    Write,
    observe,
    released,
    try_acquire_or_renew,
    written,
)

WALL = datetime.datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)
ME = ElectionConfig("replica-a", lease_duration=15, renew_deadline=10, retry_period=2)
OTHER = LeaseRecord("replica-b", 15, "t0", "t0", 3)


def test_config_refuses_durations_that_break_the_guarantee() -> None:
    with pytest.raises(ElectionConfigError, match="lease duration .* must be longer than the renew deadline"):
        ElectionConfig("a", lease_duration=10, renew_deadline=10, retry_period=2)
    with pytest.raises(ElectionConfigError, match="renew deadline .* must be longer than the retry period"):
        ElectionConfig("a", lease_duration=15, renew_deadline=2, retry_period=2)
    with pytest.raises(ElectionConfigError, match="identity is empty"):
        ElectionConfig("", lease_duration=15, renew_deadline=10, retry_period=2)


def test_no_lease_yet_is_created_with_us_as_holder() -> None:
    attempt = try_acquire_or_renew(ME, observe(ElectionState(), None, None, 0.0), 0.0, WALL)
    assert attempt == Write(
        LeaseRecord("replica-a", 15, "2026-12-02T03:04:05.678901Z", "2026-12-02T03:04:05.678901Z", 0),
        None,
        takeover=True,
    )


@pytest.mark.parametrize(
    ("seen_for", "expected"),
    [(0.0, "wait"), (14.9, "wait"), (15.0, "write")],
    ids=["just-seen", "not-yet-expired", "expired"],
)
def test_another_holders_lease_expires_only_after_lease_duration_unchanged(seen_for: float, expected: str) -> None:
    state = observe(ElectionState(), OTHER, "7", 100.0)
    attempt = try_acquire_or_renew(ME, state, 100.0 + seen_for, WALL)
    assert attempt.kind == expected
    if isinstance(attempt, Write):
        assert attempt.takeover and attempt.resource_version == "7"
        assert attempt.record.holder == "replica-a" and attempt.record.transitions == 4
    else:
        assert attempt == Wait("replica-b")


def test_rereading_an_unchanged_lease_does_not_restart_its_expiry() -> None:
    state = observe(ElectionState(), OTHER, "7", 100.0)
    state = observe(state, OTHER, "7", 110.0)
    assert try_acquire_or_renew(ME, state, 115.0, WALL).kind == "write"


def test_a_renewal_by_the_holder_restarts_the_expiry() -> None:
    state = observe(ElectionState(), OTHER, "7", 100.0)
    renewed = LeaseRecord("replica-b", 15, "t0", "t1", 3)
    state = observe(state, renewed, "8", 110.0)
    assert try_acquire_or_renew(ME, state, 115.0, WALL) == Wait("replica-b")


def test_a_released_lease_is_taken_at_once() -> None:
    free = LeaseRecord(None, 1, "t0", "t1", 3)
    state = observe(ElectionState(), free, "9", 100.0)
    attempt = try_acquire_or_renew(ME, state, 100.0, WALL)
    assert isinstance(attempt, Write) and attempt.takeover and attempt.record.transitions == 4


def test_the_holder_renews_keeping_acquire_time_and_transitions() -> None:
    mine = LeaseRecord("replica-a", 15, "t0", "t0", 5)
    state = observe(ElectionState(), mine, "3", 0.0)
    attempt = try_acquire_or_renew(ME, state, 1.0, WALL)
    assert attempt == Write(LeaseRecord("replica-a", 15, "t0", "2026-12-02T03:04:05.678901Z", 5), "3", takeover=False)


@pytest.mark.parametrize(("elapsed", "leading"), [(0.0, True), (9.99, True), (10.0, False), (3600.0, False)])
def test_a_leader_leads_only_within_the_renew_deadline_of_its_last_accepted_send(elapsed: float, leading: bool) -> None:
    attempt = try_acquire_or_renew(ME, ElectionState(), 50.0, WALL)
    assert isinstance(attempt, Write)
    state = written(ElectionState(), attempt, "4", sent_at=50.0)
    assert state.leading(ME, 50.0 + elapsed) is leading


def test_the_leader_stops_before_any_other_candidate_may_take_over() -> None:
    # The other candidate saw our renewal at the earliest when we sent it: it may take over only
    # lease_duration after that; we stop renew_deadline after it.
    attempt = try_acquire_or_renew(ME, ElectionState(), 0.0, WALL)
    assert isinstance(attempt, Write)
    ours = written(ElectionState(), attempt, "1", sent_at=0.0)
    theirs = observe(ElectionState(), attempt.record, "1", 0.0)
    other = ElectionConfig("replica-b", lease_duration=15, renew_deadline=10, retry_period=2)
    for tick in range(0, 200):
        now = tick / 10
        assert not (ours.leading(ME, now) and try_acquire_or_renew(other, theirs, now, WALL).kind == "write")


def test_a_candidate_that_never_wrote_does_not_lead() -> None:
    assert not ElectionState().leading(ME, 0.0)


def test_release_hands_back_only_our_own_lease() -> None:
    mine = LeaseRecord("replica-a", 15, "t0", "t0", 5)
    state = observe(ElectionState(), mine, "3", 0.0)
    release = released(ME, state, WALL)
    assert release is not None and release.record.holder is None and release.record.lease_duration_seconds == 1
    assert release.resource_version == "3"
    assert released(ME, observe(ElectionState(), OTHER, "3", 0.0), WALL) is None
    assert released(ME, ElectionState(), WALL) is None


def test_record_round_trips_through_a_lease_object() -> None:
    record = LeaseRecord("replica-a", 15, "t0", "t1", 2)
    assert LeaseRecord.from_lease({"spec": record.spec()}) == record
    assert LeaseRecord.from_lease({}) == LeaseRecord(None, 0)
    assert LeaseRecord.from_lease({"spec": {"holderIdentity": "", "leaseDurationSeconds": "x"}}) == LeaseRecord(None, 0)
