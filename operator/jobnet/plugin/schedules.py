"""``kubectl jobnet next SCHEDULE`` (the coming slots, calendar applied) and ``kubectl jobnet run
JOBNET|SCHEDULE`` (start a run by hand, like ``kubectl create job --from=cronjob/x``).

The slots are the pure core's (``jobnet.core.schedule``): what ``next`` prints is what the
operator will do, as long as the schedule and its calendar stay as they are."""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import TYPE_CHECKING, Any

from jobnet.core.calendar import UnknownHolidays
from jobnet.core.models import GROUP_VERSION, JobCalendarSpec, JobScheduleSpec
from jobnet.core.schedule import (
    ScheduleRules,
    manual_slot,
    parse_rfc3339,
    rfc3339,
    schedule_rules,
    upcoming_slots,
)
from jobnet.core.schedulevalidation import timing_problems
from jobnet.core.validation import env_problems, parse_spec
from jobnet.plugin.view import Body, PluginError

if TYPE_CHECKING:
    from jobnet.plugin.kube import PluginKube

#: The most slots ``next --count`` lists.
MAX_COUNT = 1000
SCHEDULE_KIND, JOBNET_KIND = "jobschedule", "jobnet"


def count(text: str) -> int:
    """``--count``: 1 to MAX_COUNT."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to {MAX_COUNT}, not {text!r}")
    return int(text)


def moment(text: str) -> datetime.datetime:
    """``--from``: an RFC 3339 timestamp with an offset."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00+09:00, not {text!r}"
        ) from None


def env_pair(text: str) -> tuple[str, str]:
    """``--env K=V``."""
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def _schedule(kube: PluginKube, name: str) -> tuple[Body, JobScheduleSpec, ScheduleRules]:
    body = kube.get_object("jobschedules", name)
    spec, problems = parse_spec(JobScheduleSpec, body.get("spec"))
    if spec is not None and not problems:
        problems = timing_problems(spec)
    if spec is None or problems:
        raise PluginError(f"JobSchedule {name!r} is invalid: " + "; ".join(str(p) for p in problems))
    calendar = None
    if spec.calendar_ref is not None:
        calendar, problems = parse_spec(JobCalendarSpec, kube.get_object("jobcalendars", spec.calendar_ref).get("spec"))
        if calendar is None or problems:
            raise PluginError(f"JobCalendar {spec.calendar_ref!r} is invalid: " + "; ".join(str(p) for p in problems))
    try:
        return body, spec, schedule_rules(spec, calendar)
    except UnknownHolidays as error:
        raise PluginError(f"JobCalendar {spec.calendar_ref!r}: {error}") from None


def next_slots_table(rules: ScheduleRules, after: datetime.datetime, how_many: int) -> list[str]:
    """The lines ``next`` prints: one per slot, with the shift or skip and why."""
    rows = [("SLOT", "RUNS AT", "BUSINESS DATE", "NOTE")]
    for slot in upcoming_slots(rules, after, how_many):
        runs_at = "-" if slot.skipped else rfc3339(slot.run_at)
        rows.append((rfc3339(slot.nominal), runs_at, slot.business_date.isoformat(), slot.note or ""))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]


def run_next(kube: PluginKube, args: argparse.Namespace) -> int:
    _, spec, rules = _schedule(kube, args.schedule)
    after = args.start or datetime.datetime.now(datetime.UTC)
    lines = next_slots_table(rules, after, args.count)
    if len(lines) == 1:
        print(f"JobSchedule {args.schedule!r} has no slot within 8 years after {rfc3339(after)}", file=sys.stderr)
        return 1
    if spec.suspend:
        print(f"note: JobSchedule {args.schedule!r} is suspended: these slots run only once it is resumed")
    print("\n".join(line.rstrip() for line in lines))
    return 0


def _target(kube: PluginKube, text: str) -> tuple[str, str]:
    """``jobschedule/NAME``, ``jobnet/NAME`` or a bare NAME (whichever exists; both: ambiguous)."""
    kind, separator, name = text.partition("/")
    if separator:
        if kind not in (SCHEDULE_KIND, JOBNET_KIND):
            raise PluginError(f"expected jobnet/NAME, jobschedule/NAME or NAME, not {text!r}")
        return kind, name
    found = [
        kind
        for kind, plural in ((SCHEDULE_KIND, "jobschedules"), (JOBNET_KIND, "jobnets"))
        if kube.exists(plural, text)
    ]
    if not found:
        raise PluginError(f"neither a JobSchedule nor a JobNet {text!r} exists in namespace {kube.namespace!r}")
    if len(found) == 2:
        raise PluginError(
            f"both a JobSchedule and a JobNet are named {text!r}: say jobschedule/{text} or jobnet/{text}"
        )
    return found[0], text


def manual_run(kube: PluginKube, target: str, env: dict[str, str], now: datetime.datetime) -> Body:
    """The JobRun that ``run`` creates (see the module docstring)."""
    kind, name = _target(kube, target)
    spec: dict[str, Any]
    if kind == JOBNET_KIND:
        kube.get_object("jobnets", name)  # a clear error when it does not exist
        spec = {"jobNetRef": name, "env": env}
        prefix = f"{name}-"
    else:
        _, schedule, rules = _schedule(kube, name)
        scheduled, business = manual_slot(rules, now)
        spec = {
            "jobNetRef": schedule.job_net_ref,
            "env": {**schedule.env, **env},
            "slot": {"schedule": name, "scheduledTime": rfc3339(scheduled), "businessDate": business.isoformat()},
        }
        prefix = f"{name}-manual-"
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "JobRun",
        "metadata": {"generateName": prefix[:58], "namespace": kube.namespace},
        "spec": spec,
    }


def run_start(kube: PluginKube, args: argparse.Namespace) -> int:
    env = dict(args.env)
    problems = env_problems(env, "--env")
    if problems:
        raise PluginError("; ".join(str(p) for p in problems))
    created = kube.create_jobrun(manual_run(kube, args.target, env, datetime.datetime.now(datetime.UTC)))
    print(f"jobrun.jobnet.dev/{created['metadata']['name']} created")
    return 0
