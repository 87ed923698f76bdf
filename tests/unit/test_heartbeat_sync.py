"""HeartbeatSync: when the agent last proved the operator's records current (pure bookkeeping)."""

from __future__ import annotations

from jobnet.ssh.hostagent import HeartbeatSync


def test_a_heartbeat_proves_nothing_until_the_events_it_announced_are_delivered() -> None:
    sync = HeartbeatSync()
    sync.heard(announced_seq=5, arrived_at=100.0, delivered_seq=0)
    assert sync.proven_at is None
    sync.settle(4)
    assert sync.proven_at is None
    sync.settle(5)
    assert sync.proven_at == 100.0


def test_on_a_busy_agent_each_heartbeat_counts_from_its_arrival_once_caught_up() -> None:
    """Every heartbeat announces a few events more than the stream has delivered, as on an
    agent that never goes quiet: the proof still advances, heartbeat by heartbeat."""
    sync = HeartbeatSync()
    delivered = 0
    for beat in range(1, 6):
        announced = delivered + 3  # always ahead when it arrives
        sync.heard(announced, arrived_at=float(beat), delivered_seq=delivered)
        delivered += 3
        sync.settle(delivered)
        assert sync.proven_at == float(beat)


def test_the_newest_caught_up_heartbeat_wins_and_later_ones_wait() -> None:
    sync = HeartbeatSync()
    sync.heard(2, arrived_at=1.0, delivered_seq=0)
    sync.heard(3, arrived_at=2.0, delivered_seq=0)
    sync.heard(9, arrived_at=3.0, delivered_seq=0)
    sync.settle(3)
    assert sync.proven_at == 2.0
    sync.settle(8)
    assert sync.proven_at == 2.0


def test_a_reset_journal_drops_pending_announcements_but_keeps_proofs_made() -> None:
    sync = HeartbeatSync()
    sync.heard(4, arrived_at=1.0, delivered_seq=0)
    sync.settle(4)
    sync.heard(10, arrived_at=2.0, delivered_seq=4)
    sync.forget_pending()
    assert sync.proven_at == 1.0
    sync.settle(1)  # the new journal's numbering: the old announcement of 10 must not settle
    sync.heard(1, arrived_at=3.0, delivered_seq=1)
    assert sync.proven_at == 3.0
