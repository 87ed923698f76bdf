"""The faults the chaos test injects: one :class:`FaultKind` entry each, so that a new kind (a
leadership handover, held-back watch events, ...) is one more entry in :data:`KINDS`.

A kind occupies a *target* while it lasts (a VM, the control plane: the API and the operator
replicas, or the steering path), so faults on different targets overlap and faults on one target
do not. ``begin`` injects it and returns what ends it (None: nothing to undo, e.g. a killed process).

The operator runs as two replicas with leader election (tests/support/replicas.py). A restart
(SIGKILL/SIGTERM) hits either replica, drawn: the follower as often as the leader. A leadership
handover always hits the leader, and lasts until the other replica leads."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tests.support.emulator import EmulatorServer
from tests.support.netutil import DeadlineExceeded, wait_until
from tests.support.replicas import TAKEOVER, Replica
from tests.support.vm import NamespaceVM

Undo = Callable[[], None]
CONTROL = "control"
STEERING = "steering"
WATCH = "watch"


class World(Protocol):
    """What faults act on (the harness)."""

    emulator: EmulatorServer
    vms: list[NamespaceVM]
    crashes: dict[int, list[float]]
    """VM index -> when each crash had killed everything (wall clock, as the ledger's times)."""

    replicas: list[Replica]
    handovers_missed: int
    """Handovers after which the other replica did not lead within :data:`HANDOVER_BOUND` (a finding)."""
    handover_modes: Counter[str]
    """Handovers by mode (:data:`HANDOVER_MODES`, or "nobody-led" when there was no leader to act on)."""

    def leader(self) -> Replica | None:
        """The replica that leads now (its current process holds the Lease), if any."""
        ...

    def runs_to_steer(self) -> list[str]:
        """The runs not finished yet, those with a Stuck job only if there are any."""
        ...


@dataclass(frozen=True)
class FaultKind:
    name: str
    weight: float
    targets: Callable[[World], list[str]]
    begin: Callable[[World, str, random.Random], Undo | None]
    hold: tuple[float, float]
    """Seconds the target stays faulted (or, for a kill, left alone afterwards): drawn uniformly."""


def vm_targets(world: World) -> list[str]:
    return [f"vm{i}" for i in range(len(world.vms))]


def the_vm(world: World, target: str) -> NamespaceVM:
    return world.vms[int(target.removeprefix("vm"))]


def cut_link(world: World, target: str, rng: random.Random) -> Undo:
    vm = the_vm(world, target)
    vm.cut()
    return vm.restore


def drop_packets(direction: str) -> Callable[[World, str, random.Random], Undo]:
    def begin(world: World, target: str, rng: random.Random) -> Undo:
        vm = the_vm(world, target)
        vm.drop(direction)
        return lambda: vm.undrop(direction)

    return begin


def kill_agent(kind: str) -> Callable[[World, str, random.Random], None]:
    def begin(world: World, target: str, rng: random.Random) -> None:
        the_vm(world, target).kill_agent((kind,))

    return begin


def crash_vm(world: World, target: str, rng: random.Random) -> Undo:
    vm = the_vm(world, target)
    vm.crash()
    # When the last process died: a script forked while the kill went on started before this.
    world.crashes.setdefault(int(target.removeprefix("vm")), []).append(time.time())
    return vm.start


def restart(replica: Replica, graceful: bool) -> Undo:
    """SIGTERM (graceful: a leader hands its Lease back) or SIGKILL, then a new process at once;
    what it returns waits until that serves."""
    if graceful:
        replica.process.stop()
    else:
        replica.process.kill()
    replica.start(wait_ready=False)
    return replica.process.wait_ready


def restart_operator(graceful: bool) -> Callable[[World, str, random.Random], Undo]:
    """One replica, drawn (the leader or the follower), restarted; the fault lasts until it serves."""

    def begin(world: World, target: str, rng: random.Random) -> Undo:
        return restart(rng.choice(world.replicas), graceful)

    return begin


#: How a leader is made to hand over: killed (SIGKILL), frozen (SIGSTOP) past its Lease, or cut
#: off from the API server (it steps down at its renew deadline, still reaching the VMs).
HANDOVER_MODES = ("kill", "freeze", "cut-off")
#: The longest the other replica may take to lead (after the fault's hold, which is longer than
#: the Lease already): a missed handover is counted (:attr:`World.handovers_missed`).
HANDOVER_BOUND = TAKEOVER


def hand_leadership_over(world: World, target: str, rng: random.Random) -> Undo:
    """The leader is killed, frozen or cut off from the API server until another replica leads;
    then it is started again (a new pod), resumed, or reconnected, and follows. A frozen or cut-off
    leader that comes back must do nothing (G02, G03): the invariants see any job it re-runs."""
    mode = rng.choice(HANDOVER_MODES)
    leader = world.leader()
    if leader is None:
        world.handover_modes["nobody-led"] += 1
        return lambda: None  # nobody leads at this instant (a handover under way): nothing to hand over
    world.handover_modes[mode] += 1
    stack = contextlib.ExitStack()
    if mode == "kill":
        leader.process.kill()
        stack.callback(lambda: leader.start(wait_ready=True))
    elif mode == "freeze":
        leader.freeze()
        stack.callback(leader.thaw)
    else:
        stack.enter_context(world.emulator.cut_off(leader.token))

    def undo() -> None:
        def taken_over() -> bool:
            now = world.leader()
            return now is not None and now is not leader

        try:
            wait_until(taken_over, timeout=HANDOVER_BOUND, what="the other replica to lead")
        except DeadlineExceeded:
            world.handovers_missed += 1
        stack.close()

    return undo


def api_outage(world: World, target: str, rng: random.Random) -> Undo:
    world.emulator.stop_serving()
    return world.emulator.resume_serving


def api_stall(world: World, target: str, rng: random.Random) -> Undo:
    stack = contextlib.ExitStack()
    stack.enter_context(world.emulator.stall())
    return stack.close


def run_path(name: str) -> str:
    return f"/apis/jobnet.dev/v1alpha1/namespaces/default/jobruns/{name}"


def fail_annotation_removals(world: World, target: str, rng: random.Random) -> Undo:
    """The operator's next 1-3 removals of applied steering annotations of one run (a run with a
    Stuck job, which the harness is about to settle, if there is one) are answered 503."""
    stack = contextlib.ExitStack()
    runs = world.runs_to_steer()
    if runs:
        stack.enter_context(world.emulator.failing_annotation_patches(run_path(rng.choice(runs)), rng.randint(1, 3)))
    return stack.close


def hold_watch_events(world: World, target: str, rng: random.Random) -> Undo:
    """The watch events of one active run are held back, then released late, in order (older
    versions after newer ones: the operator must ignore them)."""
    runs = world.runs_to_steer()
    if not runs:
        return lambda: None
    held = world.emulator.hold_watch_events("jobruns", rng.choice(runs))

    def release() -> None:
        held.release()

    return release


def fail_removals_then_kill_operator(world: World, target: str, rng: random.Random) -> Undo:
    """Annotation removals fail meanwhile; at the end the leader (the replica that applied the
    override; a drawn one if nobody leads then) is killed (SIGKILL) and started again: an override
    applied just before must not be applied a second time (G04)."""
    allow_removals = fail_annotation_removals(world, target, rng)
    drawn = rng.choice(world.replicas)

    def undo() -> None:
        restart(world.leader() or drawn, graceful=False)()
        allow_removals()

    return undo


KINDS: tuple[FaultKind, ...] = (
    FaultKind("cut-link", 3.0, vm_targets, cut_link, (0.3, 3.0)),
    FaultKind("drop-in", 1.0, vm_targets, drop_packets("in"), (0.3, 3.0)),
    FaultKind("drop-out", 1.0, vm_targets, drop_packets("out"), (0.3, 3.0)),
    FaultKind("drop-both", 1.0, vm_targets, drop_packets("both"), (0.3, 3.0)),
    FaultKind("kill-serve", 2.0, vm_targets, kill_agent("serve"), (0.3, 1.0)),
    FaultKind("kill-supervisors", 2.0, vm_targets, kill_agent("supervise"), (0.3, 1.0)),
    FaultKind("crash-vm", 1.0, vm_targets, crash_vm, (0.3, 2.0)),
    FaultKind("operator-sigkill", 0.6, lambda world: [CONTROL], restart_operator(graceful=False), (0.2, 1.0)),
    FaultKind("operator-sigterm", 0.4, lambda world: [CONTROL], restart_operator(graceful=True), (0.2, 1.0)),
    FaultKind("api-outage", 1.2, lambda world: [CONTROL], api_outage, (0.3, 3.0)),
    FaultKind("api-stall", 1.2, lambda world: [CONTROL], api_stall, (0.3, 3.0)),
    FaultKind("fail-annotation-removal", 1.0, lambda world: [STEERING], fail_annotation_removals, (2.0, 6.0)),
    FaultKind("fail-removal-then-sigkill", 0.4, lambda world: [CONTROL], fail_removals_then_kill_operator, (2.0, 5.0)),
    FaultKind("hold-watch-events", 1.0, lambda world: [WATCH], hold_watch_events, (0.5, 4.0)),
    # Held past the Lease (4 s), so the other replica usually leads by the end of the hold.
    FaultKind("leadership-handover", 0.8, lambda world: [CONTROL], hand_leadership_over, (4.5, 6.0)),
)
