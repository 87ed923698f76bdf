"""The chaos test's invariants: pure functions over the ledger (what the scripts themselves wrote
on the VMs), the harness's own overrides, and what the API showed (final statuses, the phases the
test's watch saw, Events). No I/O: unit-tested in tests/chaos/test_invariants.py.

A violation names the rule it breaks (:data:`RULES`), the run and job path, and what was seen."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.shapes import Requirement

FINAL_PHASES = frozenset({"Succeeded", "Failed", "Stopped"})
#: The Events that announce a run's end: at most one per run (nothing in this test re-runs a finished run).
RUN_END_EVENTS = frozenset({"RunSucceeded", "RunFailed", "RunStopped"})
#: Who the status names for the operator's own settlements (fenced launches re-sent as N+1).
AUTOMATIC = "(auto)"

#: Seconds between a script's end line and the end of a VM crash that may have killed it before it
#: exited (an fsync and ``exit``, plus the crash's own kill passes, on a loaded machine).
EXIT_WINDOW = 5.0

RULES = {
    "ledger": "every ledger line is well-formed",
    "started-too-often": "no (run, path) started more often than overrides to Ready allow",
    "overlap": "no two attempts of a job run at the same time",
    "early-start": "no job starts before its `after` jobs ended with 0 (finally: before the jobs ended)",
    "result-mismatch": "every reported result (state, exit code) matches the ledger",
    "phase-regression": "no run goes back from a final phase",
    "unfinished": "every run finishes within the bound (it stayed Stuck)",
    "hang": "no run hangs without a Stuck reason",
    "duplicate-event": "no run's end is announced twice",
    "watch": "the harness's own watch saw every run's last phase (else the phase check proves nothing)",
}


@dataclass(frozen=True)
class Entry:
    """One ledger line: ``start RUN PATH ATTEMPT TIME PID`` or ``end RUN PATH ATTEMPT TIME CODE``."""

    kind: str
    run: str
    path: str
    attempt: int
    at: float
    value: int
    """The script's pid (start) or its exit code (end)."""
    host: int = 0
    """Index of the VM whose ledger it is in."""


@dataclass(frozen=True)
class Settlement:
    """An override the harness annotated, like a person reading the ledger would."""

    run: str
    path: str
    attempt: int
    to_state: str
    at: float
    why: str = ""


@dataclass(frozen=True)
class Violation:
    rule: str
    run: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.run} {self.path}: {self.detail}"


@dataclass
class RunRecord:
    """What the test knows of one run at the end."""

    name: str
    status: Mapping[str, Any]
    requirements: Mapping[str, Requirement]
    """Leaf path -> what it waits for (tests/chaos/shapes.py)."""
    phases: Sequence[str] = ()
    """The phases the watch saw, in order of the run's versions."""
    events: Sequence[Mapping[str, Any]] = ()
    entries: list[Entry] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)
    crashes: Mapping[int, Sequence[float]] = field(default_factory=dict)
    """VM index -> when the harness crashed it: a script without an end line ended then, and one
    killed just after writing its end line did not exit with the code it wrote."""


def _crash_after(record: RunRecord, host: int, at: float) -> float:
    """The first crash of VM ``host`` at or after ``at`` (inf: none)."""
    return min((crash for crash in record.crashes.get(host, ()) if crash >= at), default=math.inf)


def parse_ledger(text: str, host: int = 0) -> tuple[list[Entry], list[str]]:
    """The entries of one VM's ledger, and the lines that are not entries."""
    entries, malformed = [], []
    for line in text.splitlines():
        parts = line.split()
        try:
            kind, run, path, attempt, at, value = parts
            if kind not in ("start", "end"):
                raise ValueError(kind)
            entries.append(Entry(kind, run, path, int(attempt), float(at), int(value), host))
        except ValueError:
            malformed.append(line)
    return entries, malformed


@dataclass
class _Attempt:
    starts: list[Entry] = field(default_factory=list)
    ends: list[Entry] = field(default_factory=list)
    settled_at: float = math.inf

    @property
    def started(self) -> float:
        return min(entry.at for entry in self.starts)

    @property
    def ended(self) -> float:
        """When it ended: its end line, else when the harness found it dead and settled it."""
        return min((entry.at for entry in self.ends), default=self.settled_at)


def _attempts(record: RunRecord) -> dict[str, dict[int, _Attempt]]:
    found: dict[str, dict[int, _Attempt]] = defaultdict(lambda: defaultdict(_Attempt))
    for entry in record.entries:
        attempt = found[entry.path][entry.attempt]
        (attempt.starts if entry.kind == "start" else attempt.ends).append(entry)
    for settlement in record.settlements:
        if settlement.path in found and settlement.attempt in found[settlement.path]:
            attempt = found[settlement.path][settlement.attempt]
            attempt.settled_at = min(attempt.settled_at, settlement.at)
    for by_attempt in found.values():
        for attempt in by_attempt.values():
            for start in attempt.starts:
                attempt.settled_at = min(attempt.settled_at, _crash_after(record, start.host, start.at))
    return found


def ready_allowance(record: RunRecord, path: str) -> int:
    """How many re-runs of ``path`` overrides to Ready allow: the operator's own (automatic
    re-sends of a fenced launch, in status) plus the harness's, each at most as often as the
    status shows it applied."""
    applied = [o for o in record.status.get("overrides") or () if o.get("path") == path and o.get("toState") == "Ready"]
    automatic = sum(1 for o in applied if AUTOMATIC in (o.get("by") or ""))
    asked = sum(1 for s in record.settlements if s.path == path and s.to_state == "Ready")
    return automatic + min(asked, len(applied) - automatic)


def check_starts(record: RunRecord, attempts: Mapping[str, Mapping[int, _Attempt]]) -> Iterable[Violation]:
    for path, by_attempt in attempts.items():
        starts = sum(len(a.starts) for a in by_attempt.values())
        allowed = 1 + ready_allowance(record, path)
        if starts > allowed:
            numbers = sorted(n for n, a in by_attempt.items() for _ in a.starts)
            yield Violation(
                "started-too-often", record.name, path, f"{starts} starts (attempts {numbers}), {allowed} allowed"
            )


def check_overlaps(record: RunRecord, attempts: Mapping[str, Mapping[int, _Attempt]]) -> Iterable[Violation]:
    for path, by_attempt in attempts.items():
        started = sorted((a.started, a.ended, n) for n, a in by_attempt.items() if a.starts)
        for (_, first_end, first), (second_start, _, second) in zip(started, started[1:], strict=False):
            if second_start < first_end:
                yield Violation(
                    "overlap",
                    record.name,
                    path,
                    f"attempt {second} started at {second_start:.3f} while attempt {first} ran "
                    f"(until {'never' if math.isinf(first_end) else f'{first_end:.3f}'})",
                )


def check_order(record: RunRecord, attempts: Mapping[str, Mapping[int, _Attempt]]) -> Iterable[Violation]:
    for path, by_attempt in attempts.items():
        requirement = record.requirements.get(path)
        if requirement is None:
            yield Violation("early-start", record.name, path, "a job the run does not have started")
            continue
        for number, attempt in by_attempt.items():
            for start in attempt.starts:
                for before in sorted(requirement.succeeded):
                    done = [e.at for a in attempts.get(before, {}).values() for e in a.ends if e.value == 0]
                    if not any(at <= start.at for at in done):
                        yield Violation(
                            "early-start",
                            record.name,
                            path,
                            f"attempt {number} started at {start.at:.3f} before {before} ended with 0",
                        )
                for before in sorted(requirement.ended):
                    # After a re-run of a Failed job, it and its downstream may run after the finally
                    # job ran (which does not run again); what started before must have ended.
                    rerun = reruns_of_failed(record) > 0
                    late = [
                        n
                        for n, a in attempts.get(before, {}).items()
                        if a.starts and a.ended > start.at and not (rerun and a.started > start.at)
                    ]
                    if late:
                        yield Violation(
                            "early-start",
                            record.name,
                            path,
                            f"finally attempt {number} started at {start.at:.3f} before {before} "
                            f"(attempts {late}) ended",
                        )


def check_results(record: RunRecord, attempts: Mapping[str, Mapping[int, _Attempt]]) -> Iterable[Violation]:
    jobs: Mapping[str, Mapping[str, Any]] = record.status.get("jobs") or {}
    for path in record.requirements:
        job = jobs.get(path) or {}
        state, code = job.get("state"), job.get("exitCode")
        attempt = attempts.get(path, {}).get(job.get("attempt") or 1)
        codes = sorted({e.value for e in attempt.ends}) if attempt else []
        # An end line written just before the VM crashed: the script was killed, not exited.
        killed = attempt is not None and any(
            _crash_after(record, e.host, e.at) - e.at <= EXIT_WINDOW for e in attempt.ends
        )

        def mismatch(what: str, path: str = path, job: Mapping[str, Any] = job, codes: list[int] = codes) -> Violation:
            shown = {k: job.get(k) for k in ("state", "attempt", "exitCode", "reason")}
            return Violation("result-mismatch", record.name, path, f"{what}: status {shown}, ledger exit codes {codes}")

        if state == "Succeeded" and 0 not in codes:
            yield mismatch("Succeeded without an exit 0 of that attempt in the ledger")
        elif state in ("Failed", "Stopped") and 0 in codes and not (killed and code is None):
            yield mismatch(f"{state} although that attempt exited 0 (its result was lost)")
        elif code is not None and codes and code not in codes:
            yield mismatch("exit code differs")
        elif state in ("Skipped", "Pending", None) and path in attempts:
            yield mismatch("not run according to the status, but the ledger shows it started")


def _story(record: RunRecord) -> str:
    """The run's Events in order, for a violation's detail: what the operator said happened."""
    events = sorted(record.events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return " | ".join(f"{e.get('reason')}: {e.get('message')}" for e in events)


def reruns_of_failed(record: RunRecord) -> int:
    """How many re-runs of a Failed job a person's override applied. The
    harness only settles Stuck jobs, but the operator may resolve one to Failed (e.g. HostRebooted)
    before the override arrives; Failed -> Ready is allowed, so the run legitimately goes back
    from Failed to Running, announces its end again, and may re-run a job after its finally job."""
    return sum(
        1
        for o in record.status.get("overrides") or ()
        if o.get("fromState") == "Failed" and o.get("toState") == "Ready" and AUTOMATIC not in (o.get("by") or "")
    )


def check_phases(record: RunRecord) -> Iterable[Violation]:
    final = next((phase for phase in record.phases if phase in FINAL_PHASES), None)
    if final is None:
        return
    after = list(record.phases[record.phases.index(final) :])
    changed = [phase for phase in after if phase != final]
    reopened = sum(1 for a, b in zip(after, after[1:], strict=False) if a in FINAL_PHASES and b not in FINAL_PHASES)
    if changed and reopened > reruns_of_failed(record):
        yield Violation(
            "phase-regression",
            record.name,
            "/",
            f"{final}, then {changed} (phases seen: {after}); Events: {_story(record)}",
        )


def check_finished(record: RunRecord) -> Iterable[Violation]:
    phase = record.status.get("phase")
    if phase in FINAL_PHASES:
        return
    stuck = {
        path: f"{job.get('reason')}: {job.get('message')}"
        for path, job in (record.status.get("jobs") or {}).items()
        if job.get("state") == "Stuck" and path in record.requirements
    }
    if stuck:
        yield Violation("unfinished", record.name, "/", f"phase {phase}, Stuck: {stuck}")
    else:
        states = {path: (record.status.get("jobs") or {}).get(path, {}).get("state") for path in record.requirements}
        yield Violation("hang", record.name, "/", f"phase {phase} without a Stuck job: {states}")


def check_events(record: RunRecord) -> Iterable[Violation]:
    ends = Counter()  # type: Counter[str]
    for event in record.events:
        if event.get("reason") in RUN_END_EVENTS:
            ends[event["reason"]] += int(event.get("count") or 1)
    if sum(ends.values()) > 1 + reruns_of_failed(record):
        yield Violation("duplicate-event", record.name, "/", f"run end Events: {dict(ends)}; Events: {_story(record)}")


def check_run(record: RunRecord) -> list[Violation]:
    """Every invariant of one run."""
    attempts = _attempts(record)
    return [
        *check_starts(record, attempts),
        *check_overlaps(record, attempts),
        *check_order(record, attempts),
        *check_results(record, attempts),
        *check_phases(record),
        *check_finished(record),
        *check_events(record),
    ]
