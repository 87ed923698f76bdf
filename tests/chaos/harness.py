"""The randomized fault test's driver (``make chaos``; a seeded slice runs in ``make test``).

Many runs of mixed shapes (tests/chaos/shapes.py) go over several namespace VMs, two real
operator replicas with leader election and the API emulator, a few at a time, while faults
(tests/chaos/faults.py) are injected at random moments from one seeded ``random.Random``. Every
job's script appends start/end lines to its VM's ledger. Like a person, the harness settles each
job that stays Stuck from the ledger (ended 0 -> Succeeded, ended non-zero -> Failed, never
started or killed -> Ready) with the ``jobnet.dev/override`` annotation through kubectl, for the
Stuck attempt it looked at (``@Stuck#N``, as the console and ``kubectl jobnet override`` write
it). When the faults are used up it heals everything and waits, within a bound, for every run to
finish; then it checks the invariants (tests/chaos/invariants.py) and reports counts by fault kind.

Every loop here is bounded: the fault phase by its fault count and a time bound, the drain by
its own bound; all of them are :class:`ChaosConfig` fields."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.faults import KINDS, FaultKind, Undo
from tests.chaos.invariants import FINAL_PHASES, RunRecord, Settlement, Violation, check_run, parse_ledger
from tests.chaos.shapes import LEDGER_SCRIPT, Catalogue, Requirement, draw_catalogue, manifests, requirements
from tests.chaos.watch import PhaseWatch
from tests.support.netutil import DeadlineExceeded, wait_until
from tests.support.operator_proc import register_webhooks
from tests.support.replicas import Replica, lease_transitions, start_replicas, stop_replicas
from tests.support.replicas import leader as lease_leader
from tests.support.scenario import JOBRUNS, NAMESPACE, Scenario
from tests.support.service import ServiceProxy
from tests.support.vm import NamespaceVM

#: The operator retries API requests quickly (as in G10), so that it is back soon after an outage.
OPERATOR_ARGS = ("--api-retry-max-delay=0.5",)
LEDGER = "chaos/ledger"
SCRIPT = "chaos/ledger.sh"
OVERRIDE = "jobnet.dev/override"
#: A progress line (seen with ``pytest -s``, as `make chaos` runs it) every this many faults.
PROGRESS_EVERY = 100
#: Seconds before the harness settles the same Stuck attempt again (its override was refused).
REPEAT_AFTER = 15.0


@dataclass(frozen=True)
class ChaosConfig:
    faults: int = 200
    vms: int = 3
    replicas: int = 2
    """Operator replicas, electing a leader over a Lease (the chart's default is 2)."""
    concurrent_runs: int = 6
    mean_fault_gap: float = 0.4
    """Mean seconds between two fault starts (exponentially distributed)."""
    stuck_patience: float = 3.0
    """How long a job stays Stuck before the harness settles it (the operator may resolve it first)."""
    fault_phase_bound_per_fault: float = 3.0
    """The fault phase ends after this many seconds per fault at the latest (a bound, not a pace)."""
    drain_bound: float = 120.0
    """Seconds after the last fault within which every run must finish."""
    tick: float = 0.1
    watch_catch_up: float = 15.0

    @classmethod
    def from_environment(cls, **defaults: Any) -> ChaosConfig:
        """``JOBNET_CHAOS_FAULTS`` overrides the number of faults (``make chaos``: 1,000)."""
        faults = os.environ.get("JOBNET_CHAOS_FAULTS")
        return cls(**{**defaults, **({"faults": int(faults)} if faults else {})})


@dataclass
class ActiveFault:
    kind: FaultKind
    target: str
    until: float
    undo: Undo | None


@dataclass
class ChaosReport:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    jobs: int = 0
    starts: int = 0
    settlements: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    operator_exits: int = 0
    handovers: int = 0
    """How often leadership changed hands (the Lease's transitions), by faults or by themselves."""
    handovers_missed: int = 0
    handover_modes: Counter[str] = field(default_factory=Counter)
    watch: str = ""
    """What the harness's own phase watch went through (streams, relists, late versions ignored)."""
    violations: list[Violation] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    wall: float = 0.0

    def summary(self) -> str:
        lines = [
            f"chaos: seed {self.seed}: {sum(self.faults.values())} faults, {self.runs} runs, {self.jobs} jobs, "
            f"{self.starts} script starts, {self.wall:.0f} s",
            "  faults by kind: " + ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())),
            "  run phases: " + ", ".join(f"{phase} {n}" for phase, n in sorted(self.phases.items())),
            "  settled from the ledger: "
            + (", ".join(f"{state} {n}" for state, n in sorted(self.settlements.items())) or "none"),
            f"  leadership changed hands {self.handovers} times; handovers by mode: "
            + (", ".join(f"{mode} {n}" for mode, n in sorted(self.handover_modes.items())) or "none")
            + f"; not completed in time: {self.handovers_missed}",
            f"  unexpected operator exits: {self.operator_exits}",
            f"  the harness's phase watch: {self.watch}",
            f"  violations: {len(self.violations) + len(self.malformed)}",
            *(f"    {violation}" for violation in self.violations),
            *(f"    malformed ledger line: {line!r}" for line in self.malformed),
        ]
        return "\n".join(lines)


@dataclass
class Run:
    name: str
    root: str
    requirements: dict[str, Requirement]


class Chaos:
    """One chaos test: ``Chaos(scenario, rng, config).run()`` returns its report."""

    def __init__(self, scenario: Scenario, rng: random.Random, seed: int, config: ChaosConfig) -> None:
        self.scenario = scenario
        self.emulator = scenario.emulator
        self.rng = rng
        self.config = config
        self.report = ChaosReport(seed)
        self.vms: list[NamespaceVM] = []
        self.replicas: list[Replica] = []
        self.service: ServiceProxy | None = None
        self.handovers_missed = 0
        self.handover_modes: Counter[str] = self.report.handover_modes
        self.catalogue = Catalogue()
        self.runs: dict[str, Run] = {}
        self.settlements: list[Settlement] = []
        self.active: list[ActiveFault] = []
        self.crashes: dict[int, list[float]] = {}
        self._stuck_since: dict[tuple[str, str, int], float] = {}
        self._asked: dict[tuple[str, str, int], float] = {}

    def leader(self) -> Replica | None:
        return lease_leader(self.emulator, self.replicas)

    # ------------------------------------------------------------------ setting up

    def setup(self) -> None:
        self.vms = [self.scenario.vm(label=f"chaos{i}") for i in range(self.config.vms)]
        scripts = []
        for vm in self.vms:
            ledger = vm.put_file(LEDGER, "", 0o644)
            scripts.append(str(vm.put_file(SCRIPT, LEDGER_SCRIPT.format(ledger=ledger))))
        self.replicas = start_replicas(self.scenario, self.config.replicas, *OPERATOR_ARGS)
        # The webhook goes through a Service over every replica, as the chart's does: admission
        # works while any replica serves it, not only while the last one started runs.
        replicas = self.replicas
        self.service = ServiceProxy(lambda: [replica.process.webhook_port for replica in replicas]).start()
        register_webhooks(self.emulator, self.service.url)
        self.catalogue = draw_catalogue(self.rng, hosts=len(self.vms))
        self.scenario.apply(manifests(self.catalogue.nets, [self.scenario.host(vm) for vm in self.vms], scripts))

    # ------------------------------------------------------------------ the loop

    def run(self) -> ChaosReport:
        started = time.monotonic()
        try:
            self.setup()
            with PhaseWatch(self.emulator) as watch:
                try:
                    self._fault_phase(started)
                finally:
                    self._heal()
                self._drain()
                self._watch_caught_up(watch)
            self.report.wall = time.monotonic() - started
            self.report.handovers = lease_transitions(self.emulator)
            self.report.handovers_missed = self.handovers_missed
            self.report.watch = f"{watch.streams} streams, {watch.relists} relists, {watch.late} late versions ignored"
        finally:
            stop_replicas(self.replicas)
            if self.service is not None:
                self.service.stop()
        self._check(watch)
        for index, vm in enumerate(self.vms):  # the evidence outlives the VMs (in the test's tmp_path)
            (self.scenario.workdir / f"ledger-vm{index}").write_text((vm.home / LEDGER).read_text())
        return self.report

    def _watch_caught_up(self, watch: PhaseWatch) -> None:
        """The harness checks itself: its watch must have seen every run's last phase."""

        def behind() -> dict[str, tuple[str, str]]:
            bodies, found = self._statuses(), {}
            for name in self.runs:
                seen, phase = watch.phases.get(name) or ["nothing"], (bodies[name].get("status") or {}).get("phase")
                if seen[-1] != phase:
                    found[name] = (seen[-1], str(phase))
            return found

        try:
            wait_until(lambda: not behind(), timeout=self.config.watch_catch_up, what="the watch to see every phase")
            return
        except DeadlineExceeded:
            # A run's events held back (a fault) and released while the watch was reconnecting
            # past them are never streamed to it again: a list brings its last version.
            watch.relist()
        if behind():
            for name, (seen, phase) in behind().items():
                self.report.violations.append(Violation("watch", name, "/", f"the watch saw {seen}, not {phase}"))

    def _fault_phase(self, started: float) -> None:
        next_fault = time.monotonic()
        deadline = started + self.config.fault_phase_bound_per_fault * self.config.faults
        while sum(self.report.faults.values()) < self.config.faults and time.monotonic() < deadline:
            now = time.monotonic()
            self._end_faults(now)
            if now >= next_fault and self._inject(now):
                next_fault = now + self.rng.expovariate(1 / self.config.mean_fault_gap)
            self._keep_operator()
            if not self._control_faulted():
                self._start_runs()
                self._settle()
            time.sleep(self.config.tick)  # pacing of the loop, not synchronisation

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain_bound
        while time.monotonic() < deadline and not self._all_final():
            self._keep_operator()
            self._settle()
            time.sleep(self.config.tick)  # pacing of the loop, not synchronisation

    # ------------------------------------------------------------------ faults

    def _control_faulted(self) -> bool:
        return any(fault.target == "control" for fault in self.active)

    def _inject(self, now: float) -> bool:
        busy = {fault.target for fault in self.active}
        choices = [(kind, t) for kind in KINDS for t in kind.targets(self) if t not in busy]
        if not choices:
            return False
        kind, target = self.rng.choices(choices, weights=[kind.weight for kind, _ in choices])[0]
        hold = self.rng.uniform(*kind.hold)
        undo = kind.begin(self, target, self.rng)
        self.active.append(ActiveFault(kind, target, time.monotonic() + hold, undo))
        self.report.faults[kind.name] += 1
        done = sum(self.report.faults.values())
        if done % PROGRESS_EVERY == 0:
            print(f"chaos: {done}/{self.config.faults} faults, {len(self.runs)} runs", flush=True)
        return True

    def _end_faults(self, now: float, everything: bool = False) -> None:
        for fault in [f for f in self.active if everything or f.until <= now]:
            self.active.remove(fault)
            if fault.undo is not None:
                fault.undo()

    def _heal(self) -> None:
        self._end_faults(time.monotonic(), everything=True)
        self._keep_operator()

    def _keep_operator(self) -> None:
        """A replica that ended by itself is a finding (counted), and is started again."""
        for replica in self.replicas:
            process = replica.process.process
            if process is not None and process.poll() is not None and not self._control_faulted():
                self.report.operator_exits += 1
                replica.start()

    # ------------------------------------------------------------------ runs

    def _statuses(self) -> dict[str, dict[str, Any]]:
        return {run["metadata"]["name"]: run for run in self.emulator.list_objects(*JOBRUNS, NAMESPACE)}

    def _all_final(self) -> bool:
        bodies = self._statuses()
        return all((bodies.get(name, {}).get("status") or {}).get("phase") in FINAL_PHASES for name in self.runs)

    def runs_to_steer(self) -> list[str]:
        bodies = self._statuses()
        statuses = {name: (bodies.get(name) or {}).get("status") or {} for name in self.runs}
        active = [name for name, status in statuses.items() if status.get("phase") not in FINAL_PHASES]
        stuck = [name for name in active if statuses[name].get("phase") == "Stuck"]
        return stuck or active

    def _start_runs(self) -> None:
        bodies = self._statuses()
        active = [n for n in self.runs if (bodies.get(n, {}).get("status") or {}).get("phase") not in FINAL_PHASES]
        if len(active) >= self.config.concurrent_runs:
            return
        name = f"r{len(self.runs) + 1:04d}"
        root = self.rng.choice(self.catalogue.roots)
        run = {"apiVersion": "jobnet.dev/v1alpha1", "kind": "JobRun", "metadata": {"name": name}}
        run["spec"] = {"jobNetRef": root}
        self.scenario.apply([run], check=False)
        # Whatever kubectl said (a connection may break after the write): the run exists or not.
        if self.emulator.get(*JOBRUNS, NAMESPACE, name) is not None:
            self.runs[name] = Run(name, root, requirements(self.catalogue.nets, root))

    # ------------------------------------------------------------------ settling Stuck jobs like a person

    def _ledger(self) -> list[Any]:
        entries, self.report.malformed = [], []
        for index, vm in enumerate(self.vms):
            found, malformed = parse_ledger((vm.home / LEDGER).read_text(), host=index)
            entries += found
            self.report.malformed += malformed
        return entries

    @staticmethod
    def _script_alive(pid: int) -> bool:
        try:
            return SCRIPT.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def _decide(self, run: str, path: str, attempt: int) -> str | None:
        """The state the ledger proves for one attempt; None while its script still runs."""

        def lines(kind: str) -> list[Any]:
            return [e for e in self._ledger() if (e.kind, e.run, e.path, e.attempt) == (kind, run, path, attempt)]

        starts = lines("start")
        if any(self._script_alive(e.value) for e in starts):
            return None
        ends = lines("end")  # read after the liveness check: a script writes its end line before exiting
        if ends:
            return "Succeeded" if ends[0].value == 0 else "Failed"
        return "Ready"

    def _settle(self) -> None:
        now, bodies = time.monotonic(), self._statuses()
        for name, run in self.runs.items():
            body = bodies.get(name) or {}
            if (body.get("metadata", {}).get("annotations") or {}).get(OVERRIDE):
                continue  # the last override is not applied yet: never overwrite it
            decisions = []
            for path, job in ((body.get("status") or {}).get("jobs") or {}).items():
                key = (name, path, int(job.get("attempt") or 1))
                if path not in run.requirements or job.get("state") != "Stuck":
                    continue
                since = self._stuck_since.setdefault(key, now)
                if now - since < self.config.stuck_patience or now - self._asked.get(key, -1e9) < REPEAT_AFTER:
                    continue
                state = self._decide(*key)
                if state is not None:
                    decisions.append((key, state))
            if decisions:
                self._override(name, decisions)

    def _override(self, run: str, decisions: list[tuple[tuple[str, str, int], str]]) -> None:
        # As the console and `kubectl jobnet override` write it: for the Stuck attempt the
        # harness looked at, so it is not applied if the operator resolved the job meanwhile.
        value = ",".join(f"{path}={state}@Stuck#{attempt}" for (_, path, attempt), state in decisions)
        result = self.scenario.kubectl("annotate", "--overwrite", "jobrun", run, f"{OVERRIDE}={value}")
        if result.rc != 0:
            return  # the API or the webhook is away: try again on a later tick
        at = time.time()
        for key, state in decisions:
            self._asked[key] = time.monotonic()
            self.settlements.append(Settlement(*key, state, at))
            self.report.settlements[state] += 1

    # ------------------------------------------------------------------ the verdict

    def _check(self, watch: PhaseWatch) -> None:
        entries = self._ledger()
        bodies = self._statuses()
        for name, run in self.runs.items():
            status = (bodies.get(name) or {}).get("status") or {}
            record = RunRecord(
                name,
                status,
                run.requirements,
                phases=watch.phases.get(name, []),
                events=self.emulator.events_for(NAMESPACE, name),
                entries=[e for e in entries if e.run == name],
                settlements=[s for s in self.settlements if s.run == name],
                crashes=self.crashes,
            )
            self.report.violations += check_run(record)
            self.report.phases[status.get("phase", "none")] += 1
            self.report.jobs += len(run.requirements)
        self.report.runs = len(self.runs)
        self.report.starts = sum(1 for e in entries if e.kind == "start")


def run_chaos(scenario: Scenario, seed: int, config: ChaosConfig, on_report: Callable[[str], None]) -> ChaosReport:
    """One chaos test from ``seed``; ``on_report`` gets the summary (counts, violations)."""
    report = Chaos(scenario, random.Random(seed), seed, config).run()
    on_report(report.summary())
    return report
