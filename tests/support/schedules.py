"""The schedule scenarios' world: a :class:`~tests.support.scenario.Scenario` whose operator runs
on a :class:`~tests.support.fakeclock.FakeClock`, plus manifests and readers of JobSchedules,
JobCalendars and the runs they create."""

from __future__ import annotations

import datetime
from typing import Any

from tests.support.fakeclock import FakeClock
from tests.support.netutil import wait_until
from tests.support.scenario import NAMESPACE, Scenario

API_VERSION = "jobnet.dev/v1alpha1"
SCHEDULE_LABEL = "jobnet.dev/schedule"
#: The operator re-reads its (fake) clock this often, in seconds.
CHECK_INTERVAL = "0.2"
#: Where a test's fake clock starts before the first slot it waits for: the fake clock runs on in
#: real time, and a loaded machine can take tens of seconds to start the operator and a VM before
#: the test moves the clock on itself (30 s was seen to run out in CI, creating the slot early).
BEFORE_SLOT = datetime.timedelta(minutes=10)


def schedule(name: str, jobnet: str, *schedules: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "JobSchedule",
        "metadata": {"name": name},
        "spec": {"jobNetRef": jobnet, "schedules": list(schedules), **spec},
    }


def calendar(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "JobCalendar", "metadata": {"name": name}, "spec": spec}


def jobnet(name: str, host: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "JobNet",
        "metadata": {"name": name},
        "spec": {"host": host, "jobs": jobs},
    }


class ScheduleWorld:
    """A scenario with its operator on a fake clock that starts at ``start``."""

    def __init__(self, scenario: Scenario, start: datetime.datetime, *operator_args: str) -> None:
        self.scenario = scenario
        self.clock = FakeClock(scenario.workdir / "clock", start)
        self.operator_args = (f"--schedule-check-interval={CHECK_INTERVAL}", *operator_args)

    def start_operator(self) -> None:
        self.scenario.start_operator(*self.operator_args, environment=self.clock.environment)

    def restart_operator(self, kill: bool = False) -> None:
        operator = self.scenario.operator
        assert operator is not None
        if kill:
            operator.kill()
        else:
            operator.stop()
        operator.start()

    def apply(self, *manifests: dict[str, Any]) -> None:
        self.start_operator()
        self.scenario.apply(list(manifests))

    def runs(self, name: str) -> list[dict[str, Any]]:
        """The JobRuns of schedule ``name``, by name."""
        runs = self.scenario.emulator.list_objects(API_VERSION, "jobruns", NAMESPACE)
        mine = [run for run in runs if (run["metadata"].get("labels") or {}).get(SCHEDULE_LABEL) == name]
        return sorted(mine, key=lambda run: run["metadata"]["name"])

    def run_names(self, name: str) -> list[str]:
        return [run["metadata"]["name"] for run in self.runs(name)]

    def status(self, name: str) -> dict[str, Any]:
        body = self.scenario.emulator.get(API_VERSION, "jobschedules", NAMESPACE, name)
        assert body is not None, f"JobSchedule {name} does not exist"
        return body.get("status") or {}

    def created(self, name: str) -> datetime.datetime:
        """JobSchedule ``name``'s creationTimestamp. It is stamped by the API server's clock, not the
        fake one, and the controller counts a schedule's slots from it: a test's first slot is the
        first one after it (a slot between it and the fake clock's start would be due at once)."""
        body = self.scenario.emulator.get(API_VERSION, "jobschedules", NAMESPACE, name)
        assert body is not None, f"JobSchedule {name} does not exist"
        return datetime.datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.scenario.emulator.events_for(NAMESPACE, name)

    def describe(self, name: str) -> str:
        events = "\n".join(f"  {e.get('reason')}: {e.get('message')}" for e in self.events(name))
        return (
            f"clock: {self.clock.now_set}\nruns: {self.run_names(name)}\nstatus: {self.status(name)}\n"
            f"events:\n{events}\n{self.scenario.describe()}"
        )

    def wait_status(self, name: str, key: str, value: Any, timeout: float = 20.0) -> dict[str, Any]:
        wait_until(
            lambda: self.status(name).get(key) == value,
            timeout=timeout,
            what=f"JobSchedule {name} status.{key} == {value!r}",
            describe=lambda: self.describe(name),
        )
        return self.status(name)

    def wait_runs(self, name: str, count: int, timeout: float = 20.0) -> list[str]:
        wait_until(
            lambda: len(self.runs(name)) >= count,
            timeout=timeout,
            what=f"{count} runs of JobSchedule {name}",
            describe=lambda: self.describe(name),
        )
        return self.run_names(name)

    def wait_event(self, name: str, reason: str, contains: str = "", timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next(
                (e for e in self.events(name) if e.get("reason") == reason and contains in e.get("message", "")), None
            )

        return wait_until(
            find, timeout=timeout, what=f"Event {reason} ({contains!r}) on {name}", describe=lambda: self.describe(name)
        )  # type: ignore[no-any-return]

    def settle(self, name: str) -> None:
        """Wait until the operator has looked at the schedule at the current fake time: its
        nextScheduleTime is after the clock (so every slot up to now was handled)."""

        def settled() -> bool:
            upcoming = self.status(name).get("nextScheduleTime")
            if not upcoming:
                return False
            return datetime.datetime.fromisoformat(upcoming.replace("Z", "+00:00")) > self.clock.now_set

        wait_until(
            settled,
            timeout=20.0,
            what=f"JobSchedule {name} caught up with the clock",
            describe=lambda: self.describe(name),
        )


def next_local(
    zone: datetime.tzinfo, hour: int, minute: int = 0, after: datetime.datetime | None = None
) -> datetime.datetime:
    """The first ``hour:minute`` wall-clock time in ``zone`` after ``after`` (default: now), as an
    aware datetime. A test starts its fake clock :data:`BEFORE_SLOT` before the one after now, then
    takes its first slot after the schedule's :meth:`ScheduleWorld.created` (the same one, unless
    the creation crossed it)."""
    after = after or datetime.datetime.now(datetime.UTC)
    local = after.astimezone(zone)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += datetime.timedelta(days=1)
    return candidate
