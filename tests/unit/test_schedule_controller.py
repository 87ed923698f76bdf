"""The schedule controller (jobnet.kube.schedules) against a fake API client and a fake clock:
the executor's decisions without a server (the H0x scenarios run it for real)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from jobnet.kube.client import HTTP_CONFLICT, KubeApiError
from jobnet.kube.schedules import SCHEDULE_LABEL, SHARED_LIST_FROM, ScheduleController

UTC = datetime.UTC
SLOT = datetime.datetime(2027, 1, 5, 17, 0, tzinfo=UTC)  # 02:00 in Tokyo on the 6th


class FakeClient:
    """Keeps JobRuns in a dict; a second create of a name is a 409, as on an API server."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.creates: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.unlisted: set[str] = set()  # created by someone else after a list, say
        self.selectors: list[str | None] = []  # of each list

    async def list_objects(
        self, plural: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.selectors.append(label_selector)
        key, equals, value = (label_selector or "").partition("=")
        return [
            run
            for name, run in self.runs.items()
            if (run["metadata"]["labels"].get(key) == value if equals else key in run["metadata"]["labels"])
            and name not in self.unlisted
        ]

    async def create_object(self, plural: str, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        self.creates.append(name)
        if name in self.runs:
            raise KubeApiError(f"creating {name}", HTTP_CONFLICT, "already exists")
        self.runs[name] = {**body, "metadata": {**body["metadata"], "creationTimestamp": "2027-01-05T17:00:01Z"}}

    async def post_event(self, involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((reason, message))

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.statuses.append(dict(status))

    async def delete_object(self, plural: str, namespace: str, name: str) -> None:
        self.runs.pop(name)

    async def set_annotations(self, plural: str, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        self.runs[name]["metadata"].setdefault("annotations", {}).update(annotations)


class FakeClock:
    def __init__(self, now: datetime.datetime) -> None:
        self.moment = now

    def now(self) -> datetime.datetime:
        return self.moment


def schedule_body(name: str = "nightly", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "jobnet.dev/v1alpha1",
        "kind": "JobSchedule",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": "2027-01-01T00:00:00Z",
        },
        "spec": {
            "jobNetRef": "nightly",
            "schedules": ["0 2 * * *"],
            "timeZone": "Asia/Tokyo",
            "startingDeadlineSeconds": 60,
            **spec,
        },
    }


def controller(client: FakeClient, now: datetime.datetime) -> tuple[ScheduleController, FakeClock]:
    clock = FakeClock(now)
    return ScheduleController(client, clock), clock  # type: ignore[arg-type]


def test_each_slot_is_created_once_and_a_restarted_controller_gets_409_not_a_second_run() -> None:
    client = FakeClient()
    first, clock = controller(client, SLOT - datetime.timedelta(days=1, seconds=-1))
    first.schedule_event(None, schedule_body())
    asyncio.run(first.check(clock.now()))
    # Since its creation on the 1st: the slots of the 2nd to the 4th are past the 60 s deadline.
    assert sorted(client.runs) == ["nightly-202701050200"]
    assert [reason for reason, _ in client.events] == ["RunCreated", "MissedSchedule"]
    assert client.statuses == []  # written at the next check, with the new run's first phase
    client.runs["nightly-202701050200"]["status"] = {"phase": "Pending"}
    first.run_event("MODIFIED", client.runs["nightly-202701050200"])
    asyncio.run(first.check(clock.now()))
    (status,) = client.statuses  # one write for the creation and the phase
    assert (status["missedSlots"], status["lastScheduleTime"]) == (3, "2027-01-04T17:00:00Z")
    assert (status["lastRun"], status["lastRunPhase"], status["active"]) == (
        "nightly-202701050200",
        "Pending",
        ["nightly-202701050200"],
    )
    clock.moment = SLOT + datetime.timedelta(seconds=1)
    asyncio.run(first.check(clock.now()))
    asyncio.run(first.check(clock.now()))  # nothing new is due
    assert client.creates == ["nightly-202701050200", "nightly-202701060200"]
    run = client.runs["nightly-202701060200"]
    assert run["metadata"]["labels"] == {SCHEDULE_LABEL: "nightly"}
    assert run["spec"]["slot"] == {
        "schedule": "nightly",
        "scheduledTime": "2027-01-06T02:00:00+09:00",
        "businessDate": "2027-01-06",
    }
    assert client.statuses[-1]["lastScheduleTime"] == "2027-01-05T17:00:00Z"

    # Another controller (a restart before the status was written, or a second replica whose
    # list did not see the run yet) starts from the older cursor: its create answers 409.
    client.unlisted.add("nightly-202701060200")
    second, _ = controller(client, clock.now())
    body = schedule_body()
    body["status"] = {"lastScheduleTime": "2027-01-04T17:00:00Z"}
    second.schedule_event(None, body)
    asyncio.run(second.check(clock.now()))
    asyncio.run(second.check(clock.now()))  # writes the status
    assert client.creates[-1] == "nightly-202701060200"  # tried, refused with 409
    assert sorted(client.runs) == ["nightly-202701050200", "nightly-202701060200"]
    assert client.statuses[-1]["lastScheduleTime"] == "2027-01-05T17:00:00Z"


def test_a_status_left_unwritten_at_a_lost_lead_never_sets_back_what_the_next_leader_wrote() -> None:
    client = FakeClient()
    replica, clock = controller(client, SLOT - datetime.timedelta(days=1, seconds=-1))
    replica.schedule_event(None, schedule_body())
    asyncio.run(replica.check(clock.now()))  # creates the 5th's run; its status waits for the next check
    assert client.statuses == []
    asyncio.run(replica.follow())
    # The next leader created the 6th's run and wrote its status; this replica leads again later.
    mine = client.runs["nightly-202701050200"]
    client.runs["nightly-202701060200"] = {**mine, "metadata": {**mine["metadata"], "name": "nightly-202701060200"}}
    body = schedule_body()
    body["status"] = {"lastScheduleTime": "2027-01-05T17:00:00Z", "lastRun": "nightly-202701060200"}
    replica.schedule_event("MODIFIED", body)
    clock.moment = SLOT + datetime.timedelta(seconds=1)
    asyncio.run(replica.check(clock.now()))
    assert all(status.get("lastScheduleTime") in (None, "2027-01-05T17:00:00Z") for status in client.statuses), (
        client.statuses
    )
    assert all(status.get("lastRun") != "nightly-202701050200" for status in client.statuses), client.statuses


def test_invalid_schedule_reports_every_problem_and_creates_nothing() -> None:
    client = FakeClient()
    ctrl, clock = controller(client, SLOT)
    ctrl.schedule_event(None, schedule_body(schedules=["nope"], timeZone="Mars/Base"))
    asyncio.run(ctrl.check(clock.now()))
    assert client.runs == {}
    (condition,) = client.statuses[-1]["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSchedule")
    assert "spec.schedules[0]" in condition["message"] and "spec.timeZone" in condition["message"]


def test_forbid_skips_with_an_event_while_a_run_is_active() -> None:
    client = FakeClient()
    ctrl, clock = controller(client, SLOT - datetime.timedelta(days=1, seconds=-1))
    ctrl.schedule_event(None, schedule_body(concurrencyPolicy="Forbid"))
    asyncio.run(ctrl.check(clock.now()))
    clock.moment = SLOT + datetime.timedelta(seconds=1)
    asyncio.run(ctrl.check(clock.now()))
    assert sorted(client.runs) == ["nightly-202701050200"]
    assert client.events[-1][0] == "SlotSkipped"
    assert "run nightly-202701050200 is still active" in client.events[-1][1]


def test_a_burst_of_due_schedules_reads_their_runs_with_one_list() -> None:
    client = FakeClient()
    ctrl, clock = controller(client, SLOT - datetime.timedelta(seconds=30))
    names = [f"nightly-{n:02d}" for n in range(SHARED_LIST_FROM)]
    for name in names:
        ctrl.schedule_event(None, schedule_body(name))
    asyncio.run(ctrl.check(clock.now()))  # each is new: one shared list, nothing due
    client.runs["nightly-00-202701060200"] = {  # another replica created one slot's run already
        "metadata": {"name": "nightly-00-202701060200", "labels": {SCHEDULE_LABEL: "nightly-00"}},
        "status": {"phase": "Running"},
    }
    client.selectors.clear()
    clock.moment = SLOT + datetime.timedelta(seconds=1)
    asyncio.run(ctrl.check(clock.now()))
    assert client.selectors == [SCHEDULE_LABEL]
    assert sorted(client.creates) == [f"{name}-202701060200" for name in names[1:]]
    assert sorted(client.runs) == sorted(f"{name}-202701060200" for name in names)
    asyncio.run(ctrl.check(clock.now()))  # writes the statuses of those that created a run
    assert client.statuses[-1]["active"] == [f"{names[-1]}-202701060200"]
    assert client.statuses[-1]["lastRun"] == f"{names[-1]}-202701060200"
