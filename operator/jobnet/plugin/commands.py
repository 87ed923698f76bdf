"""Arguments and handlers of the plugin commands (``tree``, ``logs``, ``override``, ``stop``, ``events``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from jobnet.argtypes import add_host_alias_argument, positive_seconds
from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    OVERRIDE_MESSAGE_ANNOTATION,
    STOP_ANNOTATION,
    parse_override_annotation,
    parse_stop_annotation,
    resolve_path,
)
from jobnet.core.precondition import SEEN_MARK, jobs_shown, seen
from jobnet.core.states import JobState
from jobnet.plugin.view import Connection, JobRunView, PluginError

if TYPE_CHECKING:
    from jobnet.core.expansion import RunGraph
    from jobnet.plugin.kube import PluginKube

EXIT_OK = 0
EXIT_FAILED = 1
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a number of lines (0 or more), not {text!r}")
    return int(text)


def _connection_options() -> argparse.ArgumentParser:
    """The kubectl-like options every plugin command takes."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("cluster access (as kubectl)")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    group.add_argument("--context", help="kubeconfig context (default: the current context)")
    group.add_argument("-n", "--namespace", help="namespace of the JobRun (default: the context's namespace)")
    group.add_argument(
        "--request-timeout", type=positive_seconds, default=20.0, help="seconds per API request (default: 20)"
    )
    return options


def _kube(args: argparse.Namespace) -> PluginKube:
    from jobnet.plugin.kube import PluginKube

    return PluginKube(Connection(args.kubeconfig, args.context, args.namespace, args.request_timeout))


def _wants_colour(choice: str) -> bool:
    if choice == "auto":
        return sys.stdout.isatty() and "NO_COLOR" not in os.environ
    return choice == "always"


# ------------------------------------------------------------------ handlers


def run_tree(args: argparse.Namespace) -> int:
    from jobnet.plugin.tree import FINISHED_PHASES, render

    kube = _kube(args)
    colours = _wants_colour(args.color)
    if not args.watch:
        print(
            "\n".join(render(kube.jobrun_view(args.run), kube.namespace, time.time(), colours=colours, wide=args.wide))
        )
        return EXIT_OK
    redraw = sys.stdout.isatty()
    deadline = time.monotonic() + args.timeout
    shown_version = None
    while True:
        view = kube.jobrun_view(args.run)
        version = view.body["metadata"].get("resourceVersion")
        if redraw or version != shown_version:
            frame = "\n".join(render(view, kube.namespace, time.time(), colours=colours, wide=args.wide))
            print((CLEAR_SCREEN if redraw else "\n" if shown_version else "") + frame, flush=True)
            shown_version = version
        if view.status.phase in FINISHED_PHASES:
            return EXIT_OK
        if time.monotonic() >= deadline:
            print(
                f"{args.label}: {view.name} is still {view.status.phase} after --timeout {args.timeout:g}s",
                file=sys.stderr,
            )
            return EXIT_FAILED
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def run_logs_command(args: argparse.Namespace) -> int:
    from jobnet.plugin.logs import LogsOptions, run_logs, serve_args_from_environment

    options = LogsOptions(
        path=args.path,
        stream="stderr" if args.stderr else "stdout",
        follow=args.follow,
        tail_lines=args.tail,
        timeout=args.timeout,
        ssh_timeout=args.ssh_timeout,
        serve_args=serve_args_from_environment(),
        host_aliases=tuple(args.host_aliases),
    )
    return run_logs(_kube(args), args.run, options, sys.stdout.buffer, sys.stderr, args.label)


def _require_graph(view: JobRunView) -> None:
    if view.graph is None:
        raise PluginError(f"cannot check the request against the run: {view.graph_problem}")


def _combined(pending: str | None, addition: str) -> str:
    """An annotation not yet consumed by the operator is kept: the new request is added to it."""
    return f"{pending},{addition}" if pending and pending.strip() else addition


def _precondition_text(
    args: argparse.Namespace, graph: RunGraph, states: Mapping[str, JobState], attempts: Mapping[str, int]
) -> str:
    """The precondition to write (``@STATE[#ATTEMPT]``): ``--seen``; none with ``--any-state`` or
    for a jobnet (or a path the parser will refuse); else the job's state and attempt now."""
    if args.any_state:
        return ""
    if args.seen:
        return SEEN_MARK + str(args.seen)
    path = resolve_path(graph, args.path)[0]
    if path is None or graph.nodes[path].kind != "job":
        return ""
    return seen(states[path], attempts[path]).text()


def run_override(args: argparse.Namespace) -> int:
    kube = _kube(args)
    view = kube.jobrun_view(args.run)
    _require_graph(view)
    assert view.graph is not None
    states, attempts = jobs_shown(view.graph, view.status)
    item = f"{args.path}={args.state}{_precondition_text(args, view.graph, states, attempts)}"
    pending = view.annotations.get(OVERRIDE_ANNOTATION)
    parsed = parse_override_annotation(
        _combined(pending, item), view.graph, states, view.status.stop_scopes, attempts=attempts
    )
    if parsed.errors:
        note = f" (together with the pending {OVERRIDE_ANNOTATION}={pending!r})" if pending else ""
        raise PluginError(f"override refused{note}:\n  " + "\n  ".join(parsed.errors))
    annotations = {OVERRIDE_ANNOTATION: ",".join(request.text() for request in parsed.requests)}
    if args.message:
        annotations[OVERRIDE_MESSAGE_ANNOTATION] = args.message
    kube.annotate_jobrun(view, annotations)
    new = parsed.requests[-1]
    print(
        f"jobrun/{view.name}: override {new.text()} requested; the operator applies it "
        f"(see `kubectl jobnet events {view.name}` and status.overrides)"
    )
    return EXIT_OK


def run_stop(args: argparse.Namespace) -> int:
    from jobnet.plugin.tree import FINISHED_PHASES

    kube = _kube(args)
    view = kube.jobrun_view(args.run)
    if view.status.phase in FINISHED_PHASES:
        raise PluginError(f"JobRun {view.name} already ended ({view.status.phase}): nothing to stop")
    _require_graph(view)
    assert view.graph is not None
    parsed = parse_stop_annotation(_combined(view.annotations.get(STOP_ANNOTATION), args.path), view.graph)
    if parsed.errors:
        raise PluginError("stop refused:\n  " + "\n  ".join(parsed.errors))
    kube.annotate_jobrun(view, {STOP_ANNOTATION: ",".join(r.path for r in parsed.requests)})
    stopped = parsed.requests[-1].path
    print(f"jobrun/{view.name}: stop of {stopped} requested; running jobs under it are killed, nothing new starts")
    return EXIT_OK


def run_events(args: argparse.Namespace) -> int:
    from jobnet.plugin.view import event_time

    kube = _kube(args)
    view = kube.jobrun_view(args.run, with_graph=False)
    events = kube.jobrun_events(view)
    if not events:
        print(f"No events for JobRun {view.name} in namespace {kube.namespace}.")
        return EXIT_OK
    rows = [("LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE")]
    for event in events:
        rows.append(
            (
                event_time(event) or "-",
                event.get("type") or "",
                event.get("reason") or "",
                str(event.get("count") or 1),
                " ".join(str(event.get("message") or "").split()),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)] + [row[4]]).rstrip())
    return EXIT_OK


# ------------------------------------------------------------------ arguments


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a PluginError as ``<prog> <command>: <message>`` with exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except PluginError as error:
            print(f"{args.label}: {error}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            return 130

    return run


def run_next_command(args: argparse.Namespace) -> int:
    from jobnet.plugin.schedules import run_next

    return run_next(_kube(args), args)


def run_start_command(args: argparse.Namespace) -> int:
    from jobnet.plugin.schedules import run_start

    return run_start(_kube(args), args)


def _add_schedule_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    from jobnet.plugin.schedules import count, env_pair, moment

    upcoming = command(
        "next",
        run_next_command,
        help="list a JobSchedule's coming slots, its calendar applied",
        description="Each slot: its cron time, when it runs (shifted to another operating day, or - when "
        "skipped), its business date, and why it was shifted or skipped.",
    )
    upcoming.add_argument("schedule", metavar="SCHEDULE", help="JobSchedule name")
    upcoming.add_argument("--count", type=count, default=10, help="how many slots (default: 10)")
    upcoming.add_argument(
        "--from",
        dest="start",
        type=moment,
        metavar="TIME",
        help="list the slots after this RFC 3339 time (default: now)",
    )
    start = command(
        "run",
        run_start_command,
        help="start a run of a JobNet or a JobSchedule by hand",
        description="NAME, jobnet/NAME or jobschedule/NAME. A run of a schedule gets its JobNet and env, and a "
        "slot of now (JOBNET_SCHEDULED_TIME, JOBNET_BUSINESS_DATE per its calendar); it is not one of the "
        "schedule's slots, so its concurrency policy and history limits leave it alone.",
    )
    start.add_argument("target", metavar="JOBNET|SCHEDULE", help="what to run")
    start.add_argument(
        "--env", type=env_pair, action="append", default=[], metavar="K=V", help="environment variable (repeatable)"
    )


def add_plugin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``tree``, ``logs``, ``override``, ``stop``, ``next``, ``run`` and ``events`` on ``commands``."""
    common = [_connection_options()]

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=common, help=help, description=description or help)
        parser.set_defaults(handler=_guarded(handler), label=parser.prog)
        return parser

    tree = command(
        "tree",
        run_tree,
        help="show a JobRun as a tree of jobnets and jobs with their states",
        description="The run as an indented tree: state, host, attempt, duration, exit code, "
        "reason and message of every job and sub-jobnet, with the run's phase and progress.",
    )
    tree.add_argument("run", metavar="RUN", help="JobRun name")
    tree.add_argument(
        "-w", "--watch", action="store_true", help="redraw until the run ends (Succeeded, Failed, Stopped)"
    )
    tree.add_argument(
        "--interval", type=positive_seconds, default=2.0, help="seconds between redraws with --watch (default: 2)"
    )
    tree.add_argument(
        "--timeout",
        type=positive_seconds,
        default=24 * 3600.0,
        help="stop watching after this many seconds, exit status 1 (default: 86400)",
    )
    tree.add_argument("--wide", action="store_true", help="do not shorten messages")
    tree.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour states (default: auto = when the output is a terminal and NO_COLOR is unset)",
    )

    logs = command(
        "logs",
        run_logs_command,
        help="print a job's full output from the agent on its VM",
        description="Streams the output the agent keeps on the job's VM (over SSH, host key verified, "
        "credentials from the Secret the job's host names). When the VM cannot be reached, "
        "prints the tail kept in the JobRun status instead and exits with status 3. "
        "$JOBNET_AGENT_SERVE_ARGS: agent serve options the operator uses (e.g. --state-dir).",
    )
    logs.add_argument("run", metavar="RUN", help="JobRun name")
    logs.add_argument("path", metavar="PATH", help="job path, e.g. /nightly/load/step1")
    logs.add_argument("--stderr", action="store_true", help="print the job's stderr instead of its stdout")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    add_host_alias_argument(
        logs,
        help="connect to ADDRESS when the job's host is NAME, as the operator's --host-alias (repeatable; "
        "e.g. `jobnet dev`'s vm1.batch.example); the host key is still verified under NAME",
    )
    logs.add_argument("--tail", type=_count, metavar="N", help="only the last N lines (then more with --follow)")
    logs.add_argument(
        "--timeout", type=positive_seconds, help="give up following after this many seconds (exit status 1)"
    )
    logs.add_argument(
        "--ssh-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds for connecting to the VM and for each agent request (default: 10)",
    )

    override = command(
        "override",
        run_override,
        help="settle or re-run a job: set its state (jobnet.dev/override)",
        description="Checks the request against the run's current states first (Stuck -> Ready, "
        "Succeeded, Failed, Stopped; Failed -> Ready, Succeeded), then sets the "
        "jobnet.dev/override annotation, which the operator applies and records.",
    )
    override.add_argument("run", metavar="RUN", help="JobRun name")
    override.add_argument("path", metavar="PATH", help="job or sub-jobnet path (/ = every job of the run)")
    override.add_argument("state", metavar="STATE", help="Ready (run again), Succeeded, Failed or Stopped")
    override.add_argument("-m", "--message", help="why (recorded with the override)")
    precondition = override.add_mutually_exclusive_group()
    precondition.add_argument(
        "--seen",
        metavar="STATE[#ATTEMPT]",
        help="apply only while the job is in this state (and attempt), e.g. Stuck#2: the one you looked at "
        "(default: the job's state and attempt when the command reads the run)",
    )
    precondition.add_argument(
        "--any-state",
        action="store_true",
        help="no precondition: apply to whatever the job's state is when the operator gets to it",
    )

    stop = command("stop", run_stop, help="stop a job, a sub-jobnet or the whole run (jobnet.dev/stop)")
    stop.add_argument("run", metavar="RUN", help="JobRun name")
    stop.add_argument("path", metavar="PATH", nargs="?", default="/", help="what to stop (default: / = the whole run)")

    _add_schedule_commands(command)

    events = command("events", run_events, help="the Events of a JobRun, oldest first")
    events.add_argument("run", metavar="RUN", help="JobRun name")
