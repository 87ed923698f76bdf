"""The schedule controller: JobSchedules create their JobRuns, one per due slot.

Every replica tracks the watched objects; only the leader runs the loop (``lead``/``follow``,
see :mod:`jobnet.kube.leadership`), and its client writes only while it leads.

The timing decisions are the pure core's (``jobnet.core.schedule``, ``jobnet.core.calendar``);
this module keeps the watched JobSchedules and JobCalendars in memory (watched by
:mod:`jobnet.kube.objectwatch`, not kopf: each status write of a schedule comes back as a watch
event, which kopf's machinery took about a millisecond to hand over), and one loop
reads the wall clock through a :class:`Clock` every ``check_interval`` seconds:
a schedule is reconciled when its next slot is due or when it, its calendar or one of its runs
changed. The loop re-reads the clock instead of sleeping until the next slot, so a clock that
jumps (NTP, a suspended VM, a test's fake clock) is noticed within one interval.

Exactly once per slot: a slot's JobRun has a name derived from the schedule and the slot
(``run_name``), created with a plain POST: a second replica, a restarted operator or a retried
reconcile gets HTTP 409 and treats the slot as done. ``status.lastScheduleTime`` (the cursor) is
written after the runs, so a crash in between only repeats creations that then answer 409.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from jobnet.core.annotations import STOP_ANNOTATION
from jobnet.core.calendar import UnknownHolidays
from jobnet.core.models import GROUP_VERSION, JobCalendarSpec, JobScheduleSpec
from jobnet.core.schedule import (
    RunRecord,
    ScheduleRules,
    Slot,
    concurrency_action,
    due_and_next,
    parse_rfc3339,
    plan_due,
    rfc3339,
    run_name,
    runs_to_delete,
    schedule_rules,
)
from jobnet.core.schedulevalidation import timing_problems
from jobnet.core.validation import Problem, parse_spec
from jobnet.kube.client import (
    HTTP_CONFLICT,
    HTTP_NOT_FOUND,
    JOBCALENDARS,
    JOBRUNS,
    JOBSCHEDULES,
    KubeApiError,
    KubeClient,
)
from jobnet.kube.objectwatch import ObjectWatch
from jobnet.kube.webhook import describe_problems

logger = logging.getLogger(__name__)

#: Label of a scheduled JobRun: the name of its JobSchedule.
SCHEDULE_LABEL = "jobnet.dev/schedule"
#: How many missed slots an Event lists by time (the rest are counted).
MISSED_LISTED = 5
#: From this many schedules of one namespace to reconcile in one check on (a burst of due slots,
#: or of their runs changing), their runs are read with one list of the namespace's scheduled
#: runs instead of one list per schedule.
SHARED_LIST_FROM = 20

Key = tuple[str, str]  # (namespace, name)


class Clock(Protocol):
    """Where the schedule controller reads wall-clock time (the only place it does)."""

    def now(self) -> datetime.datetime:
        """The current time, timezone-aware."""


class WallClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class ScheduleSettings:
    """How often the wall clock is re-read (seconds), where JobSchedules and JobCalendars are
    watched (no namespace: every one), the pause before watching again after an API failure and
    how long the API server keeps one watch open."""

    check_interval: float = 5.0
    namespaces: tuple[str, ...] = ()
    retry_delay: float = 5.0
    watch_seconds: int = 60


def schedule_run_body(
    schedule: Mapping[str, Any], spec: JobScheduleSpec, name: str, slot_time: datetime.datetime, business: datetime.date
) -> dict[str, Any]:
    """A JobRun of ``schedule`` (a body) for one slot, owned by the schedule (deleted with it)."""
    meta = schedule["metadata"]
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "JobRun",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {SCHEDULE_LABEL: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": GROUP_VERSION,
                    "kind": "JobSchedule",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "jobNetRef": spec.job_net_ref,
            "env": dict(spec.env),
            "slot": {
                "schedule": meta["name"],
                "scheduledTime": rfc3339(slot_time),
                "businessDate": business.isoformat(),
            },
        },
    }


@dataclass
class _Timing:
    """A schedule's timing as its spec and calendar say, kept while neither changes: parsing the
    spec, checking its cron expressions and building the calendar at every reconcile, and
    searching the slots when only a run changed, cost more than all the rest of a reconcile."""

    source: tuple[object, object]  # the raw spec and the calendar's raw spec it was made of
    spec: JobScheduleSpec | None
    rules: ScheduleRules | list[Problem]  # or why the schedule cannot be used
    upcoming: Slot | None = None  # next_run(rules, since), once every slot due at since was handled
    since: datetime.datetime | None = None

    def quiet(self, now: datetime.datetime) -> Slot | None:
        """The next runnable slot while none came due since the last search: ``now`` is between
        that search and the slot it found (a clock set back searches again). Slots the calendar
        skips in between are not searched for: they are counted into ``lastScheduleTime`` at the
        next search."""
        known = self.upcoming is not None and self.since is not None and self.since <= now < self.upcoming.run_at
        return self.upcoming if known else None


def _run_record(item: Mapping[str, Any]) -> RunRecord | None:
    """What the schedule needs of a listed run; None for one being deleted."""
    meta = item["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    return RunRecord(
        name=meta["name"], phase=(item.get("status") or {}).get("phase"), created=meta.get("creationTimestamp", "")
    )


def _condition(status: str, reason: str, message: str, previous: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The Ready condition, keeping its transition time while its status does not change."""
    old: Mapping[str, Any] = next((c for c in previous.get("conditions") or [] if c.get("type") == "Ready"), {})
    since = old.get("lastTransitionTime") if old.get("status") == status else now
    return {"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": since}


class ScheduleController:
    """See the module docstring."""

    def __init__(self, client: KubeClient, clock: Clock, settings: ScheduleSettings = ScheduleSettings()) -> None:
        self.client = client
        self.clock = clock
        self.settings = settings
        self._schedules: dict[Key, dict[str, Any]] = {}
        self._calendars: dict[Key, dict[str, Any]] = {}
        self._due: dict[Key, datetime.datetime | None] = {}  # when to reconcile next; None: only on a change
        self._cursor: dict[Key, datetime.datetime] = {}  # lastScheduleTime as written
        #: status fields decided but not written yet (see :meth:`reconcile`)
        self._unwritten: dict[Key, dict[str, Any]] = {}
        self._timing: dict[Key, _Timing] = {}
        self._changed: set[Key] = set()
        self._run_phases: dict[Key, str] = {}  # phase of each scheduled run seen
        self._task: asyncio.Task[None] | None = None
        self._watches: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ the watched objects

    def schedule_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace") or "default", meta.get("name", ""))
        if event_type == "DELETED":
            for table in (self._schedules, self._due, self._cursor, self._timing, self._unwritten):
                table.pop(key, None)
            self._changed.discard(key)
            return
        known = self._schedules.get(key)
        self._schedules[key] = dict(body)
        if known is None or known.get("metadata", {}).get("generation") != meta.get("generation"):
            self._changed.add(key)  # new or its spec changed (our own status writes do not count)

    def calendar_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        namespace, name = meta.get("namespace") or "default", meta.get("name", "")
        if event_type == "DELETED":
            self._calendars.pop((namespace, name), None)
        else:
            self._calendars[(namespace, name)] = dict(body)
        for key, schedule in self._schedules.items():
            if key[0] == namespace and (schedule.get("spec") or {}).get("calendarRef") == name:
                self._changed.add(key)

    def run_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A scheduled run appeared, changed its phase or went: its schedule's status and
        history follow (other status writes of the run, and runs of no schedule, are ignored)."""
        meta = body.get("metadata", {})
        schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
        if not schedule:
            return
        namespace = meta.get("namespace") or "default"
        run = (namespace, meta.get("name", ""))
        phase = None if event_type == "DELETED" else (body.get("status") or {}).get("phase", "")
        if self._run_phases.get(run) == phase:
            return
        if phase is None:
            self._run_phases.pop(run, None)
        else:
            self._run_phases[run] = phase
        key = (namespace, schedule)
        if key in self._schedules:
            self._changed.add(key)

    # ------------------------------------------------------------------ the loop

    async def run_forever(self) -> None:
        """While this replica leads (see :meth:`lead`)."""
        while True:
            await self.check(self.clock.now())
            await asyncio.sleep(self.settings.check_interval)

    async def check(self, now: datetime.datetime) -> None:
        """Reconcile every schedule that changed or whose next slot is due at ``now``."""
        keys = [key for key in self._schedules if key in self._changed or self._is_due(key, now)]
        shared = await self._shared_runs(keys)
        for key in keys:
            self._changed.discard(key)
            try:
                listed = shared.get(key[0])
                await self.reconcile(key, now, None if listed is None else listed.get(key[1], []))
            except KubeApiError as e:
                logger.warning("JobSchedule %s/%s: %s (retried in %ss)", *key, e, self.settings.check_interval)
                self._changed.add(key)

    async def _shared_runs(self, keys: list[Key]) -> dict[str, dict[str, list[RunRecord]]]:
        """The scheduled runs of each namespace with SHARED_LIST_FROM or more of ``keys``, by
        schedule (one list each; a namespace whose list fails is read per schedule)."""
        counts = collections.Counter(namespace for namespace, _ in keys)
        shared: dict[str, dict[str, list[RunRecord]]] = {}
        for namespace in (namespace for namespace, count in counts.items() if count >= SHARED_LIST_FROM):
            try:
                items = await self.client.list_objects(JOBRUNS, namespace, SCHEDULE_LABEL)
            except KubeApiError as e:
                logger.warning("cannot list the scheduled JobRuns of %s (listed per schedule): %s", namespace, e)
                continue
            by_schedule = shared[namespace] = {}
            for item in items:
                record = _run_record(item)
                if record is not None:
                    by_schedule.setdefault(item["metadata"]["labels"][SCHEDULE_LABEL], []).append(record)
        return shared

    def _is_due(self, key: Key, now: datetime.datetime) -> bool:
        due = self._due.get(key)
        return due is not None and due <= now

    # ------------------------------------------------------------------ one schedule

    def _timing_of(self, key: Key, body: Mapping[str, Any]) -> _Timing:
        """The schedule's timing (kept from the last reconcile while its spec and calendar are
        the same)."""
        raw = body.get("spec")
        calendar_ref = (raw or {}).get("calendarRef") if isinstance(raw, Mapping) else None
        calendar = self._calendars.get((key[0], calendar_ref)) if isinstance(calendar_ref, str) else None
        source = (raw, None if calendar is None else calendar.get("spec"))
        known = self._timing.get(key)
        if known is not None and known.source == source:
            return known
        spec, problems = parse_spec(JobScheduleSpec, raw)
        rules: ScheduleRules | list[Problem] = problems
        if spec is not None and not problems:
            rules = timing_problems(spec) or self._rules(key[0], spec)
        timing = self._timing[key] = _Timing(source, spec, rules)
        return timing

    def _rules(self, namespace: str, spec: JobScheduleSpec) -> ScheduleRules | list[Problem]:
        """The schedule's timing on its calendar, or why its calendar cannot be used."""
        calendar = None
        if spec.calendar_ref is not None:
            body = self._calendars.get((namespace, spec.calendar_ref))
            if body is None:
                return [Problem(path="spec.calendarRef", message=f"JobCalendar {spec.calendar_ref!r} does not exist")]
            calendar, problems = parse_spec(JobCalendarSpec, body.get("spec"))
            if calendar is None or problems:
                where = f"JobCalendar/{spec.calendar_ref} "
                return [Problem(path=where + p.path, message=p.message) for p in problems]
        try:
            return schedule_rules(spec, calendar)
        except UnknownHolidays as e:
            return [Problem(path=f"JobCalendar/{spec.calendar_ref} spec.publicHolidays", message=str(e))]

    async def reconcile(self, key: Key, now: datetime.datetime, listed: list[RunRecord] | None = None) -> None:
        """Create the runs of the due slots, report missed ones, delete runs beyond the history
        limits and write the status; ``listed``: the schedule's runs as just listed (else listed here)."""
        namespace, name = key
        body = self._schedules[key]
        status = {**(body.get("status") or {}), **self._unwritten.get(key, {})}
        stamp = rfc3339(now.astimezone(datetime.UTC))
        # A missing JobNet is admission's check (it may come later: its runs then say why).
        timing = self._timing_of(key, body)
        spec, rules = timing.spec, timing.rules
        if spec is None or isinstance(rules, list):
            assert isinstance(rules, list)  # a spec that does not parse has problems
            message = describe_problems(f"JobSchedule {name!r}", rules)
            self._due[key] = None
            invalid = _condition("False", "InvalidSchedule", message, status, stamp)
            await self._write_status(key, body, {"nextScheduleTime": None, "conditions": [invalid]})
            return
        cursor = self._cursor_of(key, body)
        runs = listed if listed is not None else await self._runs(namespace, name)
        active = [run for run in runs if not run.finished]
        existing = {run.name for run in runs}
        updates: dict[str, Any] = {}
        created: list[RunRecord] = []  # in slot order, so the last is the latest
        if spec.suspend:
            self._due[key] = None
            ready = _condition("False", "Suspended", "spec.suspend is true: no runs are created", status, stamp)
            updates.update(nextScheduleTime=None)
        else:
            # Only a run changed while no slot came due: nothing to search (the common reconcile).
            upcoming = timing.quiet(now)
            searched = upcoming is None
            slots, upcoming = due_and_next(rules, cursor, now) if searched else ([], upcoming)
            deadline = spec.starting_deadline_seconds
            plan = plan_due(slots, now, None if deadline is None else datetime.timedelta(seconds=deadline))
            for slot in plan.due:
                record = await self._start_slot(body, spec, slot, active, existing)
                created += [record] if record is not None else []
            missed = [slot for slot in plan.missed if run_name(name, slot) not in existing]
            if missed:
                await self._report_missed(body, missed, spec)
                updates.update(
                    missedSlots=int(status.get("missedSlots") or 0) + len(missed),
                    lastMissedTime=rfc3339(missed[-1].run_at),
                )
            if slots:
                cursor = slots[-1].run_at
                self._cursor[key] = cursor
                updates["lastScheduleTime"] = rfc3339(cursor.astimezone(datetime.UTC))
            if searched:  # every slot due at now was handled
                timing.upcoming, timing.since = upcoming, now
            self._due[key] = upcoming.run_at if upcoming is not None else None
            updates["nextScheduleTime"] = rfc3339(upcoming.run_at) if upcoming is not None else None
            ready = _condition("True", "Scheduled", "", status, stamp)
        runs = await self._delete_history(namespace, runs, spec) + created  # new runs are active: kept
        latest = created[-1] if created else max(runs, key=lambda run: (run.created, run.name), default=None)
        updates.update(
            active=sorted(run.name for run in runs if not run.finished),
            lastRun=latest.name if latest else None,
            lastRunPhase=latest.phase if latest else None,
            conditions=[ready],
        )
        if created:
            # Written at the next check, with what the new runs' first phase changes: one write
            # (and one watch event) less per run. The slot's cursor is in memory meanwhile, and a
            # crash before the write only repeats creates that answer 409.
            self._unwritten[key] = {**self._unwritten.get(key, {}), **updates}
            self._changed.add(key)
            return
        await self._write_status(key, body, updates)

    def _cursor_of(self, key: Key, body: Mapping[str, Any]) -> datetime.datetime:
        """The run time of the last slot handled: ours, else the status's, else the creation."""
        written = (body.get("status") or {}).get("lastScheduleTime")
        candidates = [self._cursor.get(key)]
        candidates.append(parse_rfc3339(written) if written else None)
        known = [moment for moment in candidates if moment is not None]
        if known:
            return max(known)
        return parse_rfc3339(body["metadata"]["creationTimestamp"])

    async def _runs(self, namespace: str, name: str) -> list[RunRecord]:
        items = await self.client.list_objects(JOBRUNS, namespace, f"{SCHEDULE_LABEL}={name}")
        return [record for record in map(_run_record, items) if record is not None]

    async def _start_slot(
        self,
        schedule: Mapping[str, Any],
        spec: JobScheduleSpec,
        slot: Slot,
        active: list[RunRecord],
        existing: set[str],
    ) -> RunRecord | None:
        """Start ``slot``'s run (by ``spec.concurrencyPolicy``): the run created (or found created
        by another replica), None when it was listed already or the slot is skipped."""
        meta = schedule["metadata"]
        name = run_name(meta["name"], slot)
        if name in existing:  # created before a restart, or by another replica
            logger.info("JobSchedule %s/%s: JobRun %s exists already", meta["namespace"], meta["name"], name)
            return None
        at = rfc3339(slot.run_at)
        action = concurrency_action(spec.concurrency_policy, active)
        if action == "skip":
            running = ", ".join(run.name for run in active)
            await self.client.post_event(
                schedule,
                "Normal",
                "SlotSkipped",
                f"slot {at} skipped: run {running} is still active (concurrencyPolicy Forbid)",
            )
            return None
        if action == "replace":
            for run in active:
                await self._stop(meta["namespace"], run.name)
            await self.client.post_event(
                schedule,
                "Normal",
                "RunsReplaced",
                f"slot {at}: stopping {', '.join(r.name for r in active)} (concurrencyPolicy Replace)",
            )
        body = schedule_run_body(schedule, spec, name, slot.run_at, slot.business_date)
        try:
            await self.client.create_object(JOBRUNS, body)
        except KubeApiError as e:
            if e.status != HTTP_CONFLICT:
                raise
            logger.info("JobSchedule %s/%s: JobRun %s exists already", meta["namespace"], meta["name"], name)
        else:
            note = f" ({slot.note})" if slot.note else ""
            await self.client.post_event(
                schedule,
                "Normal",
                "RunCreated",
                f"created JobRun {name} for slot {at}, business date {slot.business_date}{note}",
            )
            logger.info("JobSchedule %s/%s created JobRun %s for slot %s", meta["namespace"], meta["name"], name, at)
        existing.add(name)
        if action == "replace":
            active.clear()  # being stopped
        record = RunRecord(name=name, phase=None, created=at)
        active.append(record)
        return record

    async def _stop(self, namespace: str, run: str) -> None:
        try:
            await self.client.set_annotations(JOBRUNS, namespace, run, {STOP_ANNOTATION: "/"})
        except KubeApiError as e:
            if e.status != HTTP_NOT_FOUND:
                raise

    async def _report_missed(self, schedule: Mapping[str, Any], missed: list[Slot], spec: JobScheduleSpec) -> None:
        listed = ", ".join(rfc3339(slot.run_at) for slot in missed[-MISSED_LISTED:])
        more = f" and {len(missed) - MISSED_LISTED} earlier" if len(missed) > MISSED_LISTED else ""
        why = (
            f"more than startingDeadlineSeconds ({spec.starting_deadline_seconds}) late"
            if spec.starting_deadline_seconds is not None
            else "beyond the catch-up limit"
        )
        await self.client.post_event(
            schedule, "Warning", "MissedSchedule", f"{len(missed)} slot(s) not run, {why}: {listed}{more}"
        )

    async def _delete_history(self, namespace: str, runs: list[RunRecord], spec: JobScheduleSpec) -> list[RunRecord]:
        doomed = set(runs_to_delete(runs, spec.successful_runs_history_limit, spec.failed_runs_history_limit))
        for name in doomed:
            try:
                await self.client.delete_object(JOBRUNS, namespace, name)
            except KubeApiError as e:
                if e.status != HTTP_NOT_FOUND:
                    raise
        return [run for run in runs if run.name not in doomed]

    async def _write_status(self, key: Key, body: dict[str, Any], updates: Mapping[str, Any]) -> None:
        """Patch what changed of ``updates`` and of the fields left unwritten before."""
        current = body.get("status") or {}
        changes = {**self._unwritten.get(key, {}), **updates}
        if any(current.get(field) != value for field, value in changes.items()):
            meta = body["metadata"]
            await self.client.patch_status(JOBSCHEDULES, meta.get("namespace") or "default", meta["name"], changes)
            body["status"] = {**current, **changes}
        self._unwritten.pop(key, None)

    # ------------------------------------------------------------------ kopf

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Watch JobSchedules and JobCalendars from the operator's start (every replica; the
        operator's one JobRun handler passes on the scheduled runs' events, :meth:`run_event`);
        stop the loop and the watches when the operator stops."""

        @kopf.on.startup(registry=registry)
        async def watch_schedules(**_: Any) -> None:
            for namespace in self.settings.namespaces or (None,):
                for plural, handler in ((JOBSCHEDULES, self.schedule_event), (JOBCALENDARS, self.calendar_event)):
                    settings = self.settings
                    watch = ObjectWatch(
                        self.client, plural, namespace, handler, settings.retry_delay, settings.watch_seconds
                    )
                    self._watches.append(asyncio.create_task(watch.run_forever(), name=f"watch {plural}"))

        @kopf.on.cleanup(registry=registry)
        async def stop_loop(**_: Any) -> None:
            await self.follow()
            for task in self._watches:
                task.cancel()
            self._watches.clear()

    # ------------------------------------------------------------------ leadership

    async def lead(self) -> None:
        """This replica leads: run the loop, every schedule reconciled first (the previous
        leader may have left slots undone; their runs' names make a repeat answer 409)."""
        self._changed.update(self._schedules)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_forever(), name="jobschedule-loop")

    async def follow(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        # Status decided in this term but not written: the next leader writes its own from what it
        # finds; written by this replica after a later election, it could set back what that
        # leader wrote meanwhile (lastScheduleTime).
        self._unwritten.clear()
