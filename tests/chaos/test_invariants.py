"""Table tests of the chaos test's pure parts: the shapes' requirements and every invariant, each
shown to pass on a good history and to catch the bad one it is for."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.chaos.invariants import Entry, RunRecord, Settlement, check_run, parse_ledger
from tests.chaos.shapes import JobDef, NetDef, Requirement, draw_catalogue, leaves, manifests, requirements

NETS = {
    "leaf": NetDef("leaf", (JobDef("l1"), JobDef("l2", ("l1",)))),
    "top": NetDef(
        "top",
        (JobDef("x"), JobDef("sub", ("x",), expand="leaf"), JobDef("tail", ("sub",))),
        (JobDef("notify"),),
    ),
}
NORMAL = frozenset({"/top/x", "/top/sub/l1", "/top/sub/l2", "/top/tail"})


def test_requirements_follow_after_into_and_out_of_an_expansion() -> None:
    assert requirements(NETS, "top") == {
        "/top/x": Requirement(),
        "/top/sub/l1": Requirement(frozenset({"/top/x"})),
        "/top/sub/l2": Requirement(frozenset({"/top/x", "/top/sub/l1"})),
        "/top/tail": Requirement(frozenset({"/top/sub/l1", "/top/sub/l2"})),
        "/top/notify": Requirement(frozenset(), NORMAL),
    }
    assert leaves(NETS, "top", "/top") == ["/top/x", "/top/sub/l1", "/top/sub/l2", "/top/tail", "/top/notify"]


def test_drawn_catalogue_is_the_same_for_a_seed_and_every_root_has_manifests() -> None:
    first, second = draw_catalogue(random.Random(1), hosts=3), draw_catalogue(random.Random(1), hosts=3)
    assert first == second
    assert {name[:-1] for name in first.roots} == {"chain", "fan", "join", "nested"}
    hosts = [{"address": f"10.0.0.{i}"} for i in range(3)]
    made = manifests(first.nets, hosts, [f"/vm{i}/ledger.sh" for i in range(3)])
    assert sorted(m["metadata"]["name"] for m in made) == sorted(first.nets)
    nested = next(m for m in made if m["metadata"]["name"] == "nested0")
    assert nested["spec"]["finally"][0]["name"] == "notify"
    assert all(requirements(first.nets, root) for root in first.roots)


def test_parse_ledger_keeps_entries_and_reports_other_lines() -> None:
    entries, malformed = parse_ledger("start r1 /top/x 1 10.5 4242\nend r1 /top/x 1 11.0 3\ngarbage\n", host=2)
    assert entries == [Entry("start", "r1", "/top/x", 1, 10.5, 4242, 2), Entry("end", "r1", "/top/x", 1, 11.0, 3, 2)]
    assert malformed == ["garbage"]


def ran(path: str, attempt: int, start: float, end: float | None, code: int = 0) -> list[Entry]:
    found = [Entry("start", "r1", path, attempt, start, 100 + attempt)]
    return found + ([Entry("end", "r1", path, attempt, end, code)] if end is not None else [])


def good_entries() -> list[Entry]:
    return [
        *ran("/top/x", 1, 1.0, 2.0),
        *ran("/top/sub/l1", 1, 2.1, 3.0),
        *ran("/top/sub/l2", 1, 3.1, 4.0),
        *ran("/top/tail", 1, 4.1, 5.0),
        *ran("/top/notify", 1, 5.1, 6.0),
    ]


def status(phase: str = "Succeeded", **jobs: dict[str, Any]) -> dict[str, Any]:
    base = {path: {"state": "Succeeded", "attempt": 1, "exitCode": 0} for path in requirements(NETS, "top")}
    return {"phase": phase, "jobs": {**base, **{k.replace("__", "/"): v for k, v in jobs.items()}}}


def record(**fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "name": "r1",
        "status": status(),
        "requirements": requirements(NETS, "top"),
        "phases": ["Pending", "Running", "Succeeded"],
        "events": [{"reason": "RunSucceeded"}],
        "entries": good_entries(),
    }
    values.update(fields)
    return RunRecord(**values)


def rules(run: RunRecord) -> list[str]:
    return [violation.rule for violation in check_run(run)]


def test_a_clean_run_breaks_nothing() -> None:
    assert check_run(record()) == []


def rerun_status(by: str) -> dict[str, Any]:
    body = status(**{"__top__x": {"state": "Succeeded", "attempt": 2, "exitCode": 0}})
    body["overrides"] = [{"path": "/top/x", "fromState": "Stuck", "toState": "Ready", "by": by, "at": "t"}]
    return body


# A killed attempt 1 (no end line), settled Ready by the harness at 1.5, attempt 2 after it.
RERUN = [*ran("/top/x", 1, 0.5, None), *ran("/top/x", 2, 1.6, 2.0)]
SETTLED = [Settlement("r1", "/top/x", 1, "Ready", 1.5)]


@pytest.mark.parametrize(
    ("case", "fields", "expected"),
    [
        ("a re-run the harness asked for and the status shows", {
            "entries": [*RERUN, *good_entries()[2:]], "settlements": SETTLED, "status": rerun_status("admin"),
        }, []),
        ("an automatic re-send as attempt N+1 (attempt N never arrived)", {
            "entries": [*RERUN[1:], *good_entries()[2:]], "status": rerun_status("jobnet-operator (auto)"),
        }, []),
        ("a killed attempt nobody settled, then another", {
            "entries": [*RERUN, *good_entries()[2:]], "status": rerun_status("jobnet-operator (auto)"),
        }, ["overlap", "early-start"]),
        ("a second start nobody asked for", {
            "entries": [*good_entries(), *ran("/top/notify", 2, 7.0, 8.0)],
        }, ["started-too-often"]),
        ("one override applied twice counts once", {
            "entries": [*RERUN, *ran("/top/x", 3, 2.5, 3.0), *good_entries()[2:]],
            "settlements": SETTLED,
            "status": {**rerun_status("admin"), "overrides": rerun_status("admin")["overrides"] * 2},
        }, ["started-too-often"]),
        ("two attempts at the same time", {
            "entries": [*ran("/top/x", 1, 0.5, 1.8), *ran("/top/x", 2, 1.6, 2.0), *good_entries()[2:]],
            "settlements": SETTLED, "status": rerun_status("admin"),
        }, ["overlap"]),
        ("a job before its after job ended", {
            "entries": [*ran("/top/x", 1, 1.0, 2.0), *ran("/top/sub/l1", 1, 1.9, 3.0), *good_entries()[4:]],
        }, ["early-start"]),
        ("a job after its after job failed", {
            "entries": [*ran("/top/x", 1, 1.0, 2.0, code=3), *good_entries()[2:]],
            "status": status(**{"__top__x": {"state": "Failed", "attempt": 1, "exitCode": 3}}),
        }, ["early-start", "early-start"]),
        ("a finally job before a job ended", {
            "entries": [*good_entries()[:6], *ran("/top/tail", 1, 4.1, 5.5), *ran("/top/notify", 1, 5.1, 6.0)],
        }, ["early-start"]),
        ("Succeeded without exit 0 in the ledger", {
            "entries": [*ran("/top/x", 1, 1.0, 2.0, code=3), *good_entries()[2:]],
        }, ["early-start", "early-start", "result-mismatch"]),
        ("a lost result: Failed after exit 0", {
            "status": status(**{"__top__tail": {"state": "Failed", "attempt": 1, "reason": "HostRebooted"}}),
        }, ["result-mismatch"]),
        ("killed by a crash after its end line: no exit 0 lost", {
            "status": status(**{"__top__tail": {"state": "Failed", "attempt": 1, "reason": "HostRebooted"}}),
            "crashes": {0: [5.05]},
        }, []),
        ("a killed job's finally waits for the crash, not an end line", {
            "entries": [*good_entries()[:6], *ran("/top/tail", 1, 4.1, None), *ran("/top/notify", 1, 5.1, 6.0)],
            "status": status("Failed", **{"__top__tail": {"state": "Failed", "attempt": 1, "reason": "HostRebooted"}}),
            "crashes": {0: [4.5]}, "events": [{"reason": "RunFailed"}],
            "phases": ["Running", "Failed"],
        }, []),
        ("a finally before the crash that ended its job", {
            "entries": [*good_entries()[:6], *ran("/top/tail", 1, 4.1, None), *ran("/top/notify", 1, 5.1, 6.0)],
            "status": status("Failed", **{"__top__tail": {"state": "Failed", "attempt": 1, "reason": "HostRebooted"}}),
            "crashes": {0: [5.5]}, "events": [{"reason": "RunFailed"}],
            "phases": ["Running", "Failed"],
        }, ["early-start"]),
        # seed 3969049034, run r0083: the harness asked Ready for a Stuck /top/tail, the operator
        # resolved it Failed (HostRebooted) first, then applied the override to the Failed job.
        ("a Ready override that found the job Failed re-runs it after the finally job", {
            "entries": [*good_entries()[:6], *ran("/top/tail", 1, 4.1, None), *ran("/top/notify", 1, 4.6, 5.0),
                        *ran("/top/tail", 2, 5.5, 6.0)],
            "status": {**status(**{"__top__tail": {"state": "Succeeded", "attempt": 2, "exitCode": 0}}),
                       "overrides": [{"path": "/top/tail", "fromState": "Failed", "toState": "Ready", "by": "admin"}]},
            "settlements": [Settlement("r1", "/top/tail", 1, "Ready", 4.55)],
            "crashes": {0: [4.5]}, "phases": ["Running", "Failed", "Running", "Succeeded"],
            "events": [{"reason": "RunFailed"}, {"reason": "RunSucceeded"}],
        }, []),
        ("the same without the override", {
            "entries": [*good_entries()[:6], *ran("/top/tail", 1, 4.1, None), *ran("/top/notify", 1, 4.6, 5.0),
                        *ran("/top/tail", 2, 5.5, 6.0)],
            "status": status(**{"__top__tail": {"state": "Succeeded", "attempt": 2, "exitCode": 0}}),
            "crashes": {0: [4.5]}, "phases": ["Running", "Failed", "Running", "Succeeded"],
            "events": [{"reason": "RunFailed"}, {"reason": "RunSucceeded"}],
        }, ["started-too-often", "early-start", "phase-regression", "duplicate-event"]),
        ("Skipped but ran", {
            "status": status(**{"__top__notify": {"state": "Skipped"}}),
        }, ["result-mismatch"]),
        ("back from a final phase", {"phases": ["Running", "Succeeded", "Running", "Succeeded"]}, ["phase-regression"]),
        ("not finished, Stuck", {
            "status": status("Stuck", **{"__top__tail": {"state": "Stuck", "attempt": 1, "reason": "HeartbeatLost"}}),
        }, ["unfinished"]),
        ("not finished, no reason", {
            "status": status("Running", **{"__top__tail": {"state": "Running", "attempt": 1}}),
        }, ["hang"]),
        ("the run's end announced twice", {"events": [{"reason": "RunSucceeded", "count": 2}]}, ["duplicate-event"]),
    ],
)  # fmt: skip
def test_each_invariant_catches_its_violation(case: str, fields: dict[str, Any], expected: list[str]) -> None:
    assert rules(record(**fields)) == expected, case
