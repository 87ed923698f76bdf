"""Property tests: random run graphs, random outcomes and random faults, driven to the end
against a simulated agent (journal with dedupe by key, like the real one) and a simulated
person who settles Stuck jobs. Whatever happens:

* the run always ends (a terminal phase) within a bounded number of reconciles;
* a key is never launched again once a launch of it was delivered (retries only after an
  unknown or failed delivery), and a new attempt exists only after a person asked for it;
* a launch that reaches the agent late (it sat in a buffer while the link was cut) never
  starts an attempt once a newer attempt of the same job exists there (the old key is fenced);
* a job never starts before its `after` jobs (and those of its enclosing sub-jobnets)
  succeeded, and a finally job never before its jobnet's normal jobs ended;
* nothing starts under a stopped scope;
* all of this also across operator restarts from the persisted status;
* a job is Succeeded only if the agent saw it exit 0 or a person said so; the run Succeeds
  only if every job did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobnet.core.agentproto import JobKey, JobRecord
from jobnet.core.annotations import OverrideRequest, StopRequest, scope_of
from jobnet.core.expansion import RunGraph
from jobnet.core.runstatus import run_status, runtime_from_status
from jobnet.core.scheduler import (
    AgentFacts,
    Decision,
    DeliveryResult,
    Fence,
    Kill,
    Launch,
    RunRuntime,
    SchedulerPolicy,
    new_runtime,
    reconcile,
)
from jobnet.core.scheduler.deferral import WriteDeferral
from jobnet.core.states import TERMINAL_STATES, JobState, RunPhase
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import HOST_ID, RUN_UID, graph

S = JobState
MAX_STEPS = 400
#: ``late``: the connection breaks (outcome unknown) but the request reaches the agent later.
FAULTS = ("ok", "notDelivered", "unknownReached", "unknownLost", "silent", "late")


@st.composite
def jobnet_specs(draw: st.DrawFn, prefix: str, allow_expand: bool) -> dict[str, Any]:
    count = draw(st.integers(1, 5))
    jobs: list[dict[str, Any]] = []
    for index in range(count):
        after = draw(st.lists(st.sampled_from([j["name"] for j in jobs]), unique=True, max_size=2)) if jobs else []
        name = f"{prefix}{index}"
        if allow_expand and draw(st.booleans()) and index > 0:
            jobs.append({"name": name, "expand": "sub", "after": after})
        else:
            jobs.append({"name": name, "script": f"/opt/{name}.sh", "after": after})
    finally_: list[dict[str, Any]] = []
    for index in range(draw(st.integers(0, 2))):
        after = [finally_[-1]["name"]] if finally_ and draw(st.booleans()) else []
        finally_.append({"name": f"{prefix}f{index}", "script": f"/opt/{prefix}f{index}.sh", "after": after})
    spec: dict[str, Any] = {"jobs": jobs, "finally": finally_}
    if draw(st.booleans()):
        spec["retry"] = {"dispatchAttempts": draw(st.integers(1, 3)), "intervalSeconds": 1}
    if draw(st.booleans()):
        spec["timeoutSeconds"] = draw(st.integers(2, 6))
    spec["stuckResolution"] = draw(st.sampled_from(["Auto", "Manual"]))
    return spec


@st.composite
def worlds(draw: st.DrawFn) -> World:
    root = draw(jobnet_specs("j", allow_expand=True))
    sub = draw(jobnet_specs("s", allow_expand=False))
    run_graph = graph("main", main=root, sub=sub)
    names = [node.name for node in run_graph.jobs()]
    return World(
        graph=run_graph,
        policy=SchedulerPolicy(
            heartbeat_deadline_seconds=5,
            dispatch_timeout_seconds=4,
            kill_grace_seconds=1,
        ),
        exit_codes={name: draw(st.sampled_from([0, 0, 0, 1, None])) for name in names},  # None: failedToStart
        durations={name: draw(st.integers(0, 8)) for name in names},
        faults=draw(st.lists(st.sampled_from(FAULTS), max_size=12)),
        link_down=set(draw(st.lists(st.integers(0, 60), max_size=15))),
        restarts=set(draw(st.lists(st.integers(1, 40), max_size=3))),
        sent_before_crash=draw(st.booleans()),
        stop_at=draw(st.none() | st.tuples(st.integers(0, 30), st.sampled_from(sorted(run_graph.nodes)))),
        person_choices=draw(st.lists(st.sampled_from([S.READY, S.SUCCEEDED, S.FAILED, S.STOPPED]), max_size=6)),
        failed_choices=draw(st.lists(st.sampled_from([S.READY, S.SUCCEEDED]), max_size=3)),
        late_by=draw(st.integers(1, 15)),
        write_delay=draw(st.sampled_from([0.0, 2.0, 1000.0])),
    )


@dataclass
class AgentJob:
    record: JobRecord
    started_step: int


@dataclass
class World:
    graph: RunGraph
    policy: SchedulerPolicy
    exit_codes: dict[str, int | None]
    durations: dict[str, int]
    faults: list[str]
    link_down: set[int]
    #: Steps at which the operator is killed and restarted from its persisted status (D04).
    restarts: set[int]
    #: Whether the requests decided just before a crash reached the agent (answers lost).
    sent_before_crash: bool
    stop_at: tuple[int, str] | None
    person_choices: list[JobState]
    #: What a person does, one by one, to a failed run: re-run or bypass its first Failed job.
    failed_choices: list[JobState]
    #: How many steps a ``late`` request takes to reach the agent.
    late_by: int
    #: How long a round that only observed a stored launch may go unwritten (0: every round is
    #: written); a restart starts from the last status written (core/scheduler/deferral.py).
    write_delay: float = 0.0
    agent: dict[str, AgentJob] = field(default_factory=dict)
    #: Requests on their way to the agent: (arrival step, request).
    held: list[tuple[int, Launch | Kill | Fence]] = field(default_factory=list)
    executions: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    seen_records: dict[str, JobRecord] = field(default_factory=dict)

    # ---------------------------------------------------------- the agent's side

    def journal(self, key: JobKey, state: str, now: float, **fields: Any) -> JobRecord:
        self.seq += 1
        record = JobRecord(key=key, seq=self.seq, state=state, started_at=now, **fields)
        return record

    def agent_launch(self, key: JobKey, step: int, now: float) -> JobRecord:
        text = key.text()
        if text not in self.agent:  # dedupe by key, like the real agent
            newer = [
                other
                for other in self.agent.values()
                if other.record.key.path == key.path and other.record.key.attempt > key.attempt
            ]
            assert not newer, f"{text} started after {newer[0].record.key} existed on the agent"
            self.executions[key.path] = self.executions.get(key.path, 0) + 1
            name = self.graph.nodes[key.path].name
            if self.exit_codes[name] is None:
                record = self.journal(key, "failedToStart", now, reason="ScriptNotFound")
            else:
                record = self.journal(key, "running", now, pid=1000 + self.seq)
            self.agent[text] = AgentJob(record, step)
        return self.agent[text].record

    def agent_kill(self, key: JobKey, reason: str, now: float) -> JobRecord | None:
        job = self.agent.get(key.text())
        if job is None:
            return None
        if not job.record.terminal:
            job.record = self.journal(key, "killed", now, signal=15, kill_requested={"reason": reason})
        return job.record

    def agent_fence(self, key: JobKey, step: int, now: float) -> JobRecord:
        if key.text() not in self.agent:
            record = self.journal(key, "failedToStart", now, reason="Fenced")
            self.agent[key.text()] = AgentJob(record, step)
        return self.agent[key.text()].record

    def arrive_late(self, step: int, now: float) -> None:
        """Held requests whose time came reach the agent; nobody hears the answer."""
        arriving = [action for at, action in self.held if at <= step]
        self.held = [(at, action) for at, action in self.held if at > step]
        for action in arriving:
            self.reach(action, step, now)

    def reach(self, action: Launch | Kill | Fence, step: int, now: float) -> JobRecord | None:
        if isinstance(action, Launch):
            return self.agent_launch(action.key, step, now)
        if isinstance(action, Fence):
            return self.agent_fence(action.key, step, now)
        return self.agent_kill(action.key, action.reason, now)

    def agent_tick(self, step: int, now: float) -> None:
        for job in self.agent.values():
            name = self.graph.nodes[job.record.key.path].name
            if job.record.state == "running" and step - job.started_step >= self.durations[name]:
                job.record = self.journal(job.record.key, "exited", now, exit_code=self.exit_codes[name])

    # ---------------------------------------------------------- the edge's side

    def deliver(
        self, action: Launch | Kill | Fence, step: int, now: float, link_up: bool, fault: str | None = None
    ) -> DeliveryResult | None:
        if fault is None:
            fault = self.faults.pop(0) if self.faults else "ok"
        if not link_up and fault in ("ok", "unknownReached", "silent"):
            fault = "unknownLost"
        op = action.kind

        def reach() -> JobRecord | None:
            return self.reach(action, step, now)

        if fault == "late":
            self.held.append((step + self.late_by, action))
            return DeliveryResult(key=action.key, op=op, outcome="unknown", error_code="ConnectionLost")
        if fault == "ok":
            record = reach()
            return DeliveryResult(key=action.key, op=op, outcome="delivered", record=record)
        if fault == "notDelivered":
            return DeliveryResult(key=action.key, op=op, outcome="notDelivered", error_code="HostUnreachable")
        if fault == "unknownReached":
            reach()
            return DeliveryResult(key=action.key, op=op, outcome="unknown", error_code="ConnectionLost")
        if fault == "silent":
            reach()
            return None
        return DeliveryResult(key=action.key, op=op, outcome="unknown", error_code="ConnectionLost")


def check_decision(world: World, decision: Decision, delivered_keys: set[str]) -> None:
    graph_ = world.graph
    runtime = decision.runtime

    def state(path: str) -> JobState:
        return runtime.jobs[path].state if path in runtime.jobs else decision.jobnet_states[path]

    ready_overrides: dict[str, int] = {}
    for settlement in runtime.settlements:
        if settlement.to_state == S.READY:
            ready_overrides[settlement.path] = ready_overrides.get(settlement.path, 0) + 1
    for action in decision.actions:
        if not isinstance(action, Launch):
            continue
        assert action.key.text() not in delivered_keys, f"{action.key} launched again after a delivered launch"
        assert action.key.attempt <= 1 + ready_overrides.get(action.path, 0), f"{action.key}: attempt without override"
        assert scope_of(graph_, action.path, runtime.stop_scopes) is None, f"{action.path} launched in a stopped scope"
        node = graph_.nodes[action.path]
        while node.parent is not None:
            for dep in node.after:
                assert state(dep) == S.SUCCEEDED, f"{action.path} launched while {dep} is {state(dep)}"
            if node.is_finally:
                for sibling in graph_.nodes[node.parent].children:
                    if not graph_.nodes[sibling].is_finally:
                        assert state(sibling) in TERMINAL_STATES, f"finally {node.path} before {sibling} ended"
            node = graph_.nodes[node.parent]


def drive(world: World) -> tuple[RunRuntime, list[Decision]]:
    runtime = new_runtime(RUN_UID)
    now = 1000.0
    decisions: list[Decision] = []
    pending_actions: list[Launch | Kill | Fence] = []
    delivered_keys: set[str] = set()
    stuck_since: int | None = None
    watching_since: float | None = None
    deferral = WriteDeferral(world.write_delay, runtime, {})
    stored: Decision | None = None  # the decision whose status was written last
    for step in range(MAX_STEPS):
        link_up = step not in world.link_down
        world.agent_tick(step, now)
        world.arrive_late(step, now)
        deliveries = []
        if step in world.restarts and stored is not None:
            # The operator dies after persisting its last written decision and restarts from the status.
            for action in pending_actions if world.sent_before_crash and link_up else []:
                world.deliver(action, step, now, link_up, fault="silent")
            pending_actions = []
            persisted = JobRunStatus.model_validate_json(run_status(stored).model_dump_json())
            runtime = runtime_from_status(RUN_UID, world.graph, persisted)
            # A delivery whose write was deferred is unknown to the restarted operator: it sends
            # the same key again (the agent answers with what it did).
            delivered_keys -= {
                JobKey(run=RUN_UID, path=path, attempt=job.attempt).text()
                for path, job in runtime.jobs.items()
                if job.state == S.STARTING
            }
            deferral = WriteDeferral(world.write_delay, runtime, dict(stored.jobnet_states))
            stored = None
            world.seen_records = {}
            watching_since = now
        for action in pending_actions:
            result = world.deliver(action, step, now, link_up)
            if result is not None:
                deliveries.append(result)
                if result.outcome == "delivered" and result.op == "launch":
                    delivered_keys.add(action.key.text())
        pending_actions = []
        if link_up:
            world.seen_records = {text: job.record for text, job in world.agent.items()}
        facts = AgentFacts(
            records=dict(world.seen_records),
            heartbeats={HOST_ID: now} if link_up else {},
            deliveries=tuple(deliveries),
            watching_since=watching_since,
        )
        stops = []
        if world.stop_at is not None and world.stop_at[0] == step:
            stops.append(StopRequest(path=world.stop_at[1], by="prop"))
        overrides = []
        if runtime.phase == RunPhase.STUCK:
            stuck_since = step if stuck_since is None else stuck_since
            if step - stuck_since >= 3:  # give auto resolution a chance first
                choice = world.person_choices.pop(0) if world.person_choices else S.FAILED
                for path, job in runtime.jobs.items():
                    if job.state == S.STUCK:
                        target = choice
                        if target == S.READY and scope_of(world.graph, path, runtime.stop_scopes):
                            target = S.STOPPED
                        overrides.append(OverrideRequest(path=path, state=target, by="prop"))
                stuck_since = None
        else:
            stuck_since = None
        if runtime.phase == RunPhase.FAILED and world.failed_choices:
            choice = world.failed_choices.pop(0)
            failed = [
                path
                for path, job in runtime.jobs.items()
                if job.state == S.FAILED
                and not (choice == S.READY and scope_of(world.graph, path, runtime.stop_scopes))
            ]
            overrides.extend(OverrideRequest(path=path, state=choice, by="prop") for path in failed[:1])
        decision = reconcile(world.graph, runtime, facts, world.policy, now, overrides=overrides, stops=stops)
        check_decision(world, decision, delivered_keys)
        decisions.append(decision)
        # The edge: the first write after a (re)start is never deferred.
        if stored is None or deferral.defer(decision, now) is None:
            stored = decision
            deferral.stored_as(decision)
        runtime = decision.runtime
        pending_actions = [a for a in decision.actions if isinstance(a, Launch | Kill | Fence)]
        finished = runtime.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)
        if (
            finished
            and not pending_actions
            and not world.held
            and not (runtime.phase == RunPhase.FAILED and world.failed_choices)
        ):
            return runtime, decisions
        now += 1
    raise AssertionError(f"run did not end within {MAX_STEPS} reconciles: {runtime.phase}, {decisions[-1].progress}")


def late_launch_world(person: JobState = S.READY, then: tuple[JobState, ...] = ()) -> World:
    """C01 with a late arrival: the launch sits in a buffer, the job goes Stuck, a person settles
    it (``person``; ``then`` for the Failed run, e.g. a re-run) and only then the old launch
    reaches the agent (random draws rarely line this up)."""
    return World(
        graph=graph(
            "main",
            main={"jobs": [{"name": "j0", "script": "/opt/j0.sh"}]},
            sub={"jobs": [{"name": "s0", "script": "/opt/s0.sh"}]},
        ),
        policy=SchedulerPolicy(heartbeat_deadline_seconds=5, dispatch_timeout_seconds=4, kill_grace_seconds=1),
        exit_codes={"j0": 0, "s0": 0},
        durations={"j0": 2, "s0": 0},
        faults=["late"],
        link_down=set(),
        restarts=set(),
        sent_before_crash=False,
        stop_at=None,
        person_choices=[person],
        failed_choices=list(then),
        late_by=10,
    )


def stop_across_restart_world() -> World:
    """Issue 10's counterexample: the run's one job is launched, then the operator restarts (the
    launch was in flight: it may or may not have left) in the round that stops ``/main``; the
    restarted operator must not re-send the launch under the stopped scope."""
    world = late_launch_world()
    world.faults = []
    world.person_choices = []
    world.restarts = {1}
    world.stop_at = (1, "/main")
    return world


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
@example(late_launch_world())
@example(late_launch_world(S.FAILED, then=(S.READY,)))
@example(stop_across_restart_world())
def test_random_runs_always_end_and_never_run_anything_twice_or_early(world: World) -> None:
    runtime, _ = drive(world)
    ready_overrides: dict[str, int] = {}
    for settlement in runtime.settlements:
        if settlement.to_state == S.READY:
            ready_overrides[settlement.path] = ready_overrides.get(settlement.path, 0) + 1
    for path, count in world.executions.items():
        assert count <= 1 + ready_overrides.get(path, 0), f"{path} ran {count} times"
    for path, job in runtime.jobs.items():
        assert job.state in TERMINAL_STATES, f"{path} is {job.state} in a finished run"
        if job.state == S.SUCCEEDED:
            agent_job = world.agent.get(JobKey(run=RUN_UID, path=path, attempt=max(job.attempt, 1)).text())
            proven = (
                agent_job is not None
                and agent_job.record.state in ("exited", "killed")
                and agent_job.record.exit_code == 0
            )
            assert proven or job.reason == "Overridden", f"{path} Succeeded without proof"
    all_succeeded = all(job.state == S.SUCCEEDED for job in runtime.jobs.values())
    assert (runtime.phase == RunPhase.SUCCEEDED) == all_succeeded
    if any(job.state == S.FAILED for job in runtime.jobs.values()):
        assert runtime.phase == RunPhase.FAILED
    if runtime.phase == RunPhase.STOPPED:
        assert runtime.stop_scopes or any(s.to_state == S.STOPPED for s in runtime.settlements)


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_without_faults_every_job_runs_exactly_once_and_the_run_ends_by_itself(world: World) -> None:
    world.faults = []
    world.link_down = set()
    world.stop_at = None
    world.person_choices = []
    world.failed_choices = []
    world.restarts = set()
    runtime, decisions = drive(world)
    assert runtime.settlements == ()
    launched = [a.key.text() for d in decisions for a in d.actions if isinstance(a, Launch)]
    assert len(launched) == len(set(launched)) == sum(world.executions.values())
    for path, job in runtime.jobs.items():
        if job.state != S.SKIPPED:
            assert world.executions.get(path) == 1, path
