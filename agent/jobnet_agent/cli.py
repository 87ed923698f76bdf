"""``jobnet-agent``: serve the protocol, or show a person what the agent knows."""

from __future__ import annotations

import sys
import time
import types
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Union

from jobnet_agent import PROTOCOL_VERSION, __version__
from jobnet_agent.config import AgentConfig, ConfigError, add_options, from_options, plain_options
from jobnet_agent.journal import Journal, JournalError
from jobnet_agent.protocol import ACTIVE_STATES, RUNNING, STREAMS, JobKey, JobRecord

if TYPE_CHECKING:
    import argparse

#: How often ``logs --follow`` looks for more output.
_FOLLOW_POLL_SECONDS = 0.2
#: How much of each stream ``show`` reads to find its last lines.
_SHOW_TAIL_BYTES = 64 * 1024


def _jobs_options(command: argparse.ArgumentParser) -> None:
    add_options(command)
    command.add_argument("--run", help="only jobs of this JobRun uid")


def _show_options(command: argparse.ArgumentParser) -> None:
    add_options(command)
    command.add_argument("key", help="job key: run:path#attempt, e.g. 6f1c:/nightly/load#1")
    command.add_argument("--lines", type=int, default=10, help="lines of each output stream to show (default 10)")


def _logs_options(command: argparse.ArgumentParser) -> None:
    add_options(command)
    command.add_argument("key", help="job key: run:path#attempt, e.g. 6f1c:/nightly/load#1")
    command.add_argument("--stderr", action="store_true", help="print stderr instead of stdout")
    command.add_argument("--follow", action="store_true", help="keep printing until the job ends")


def _supervise_options(command: argparse.ArgumentParser) -> None:
    add_options(command)
    command.add_argument("--channel-fd", type=int, default=None)


def _no_options(command: argparse.ArgumentParser) -> None:
    pass


#: Each command: its help and what adds its options.
_COMMANDS: Dict[str, Tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "serve": ("speak the agent protocol on stdin/stdout (used by the operator)", add_options),
    "status": ("summary of the journal and active jobs", add_options),
    "jobs": ("list the jobs the agent knows", _jobs_options),
    "show": ("one job: state, exit code, pid, times, where its output is, its tail", _show_options),
    "logs": ("print a job's stored output", _logs_options),
    "supervise": ("(internal) supervise the jobs serve hands over", _supervise_options),
    "version": ("print the agent and protocol version", _no_options),
}


def _parser(argv: List[str]) -> argparse.ArgumentParser:
    """The parser of ``argv``: of its command alone when it starts with one (building every
    command's options cost each start of the supervising process ~2 ms of CPU), of them all
    otherwise (``--help``, a mistyped command)."""
    import argparse  # here: serve as the operator starts it does without (config.plain_options)

    parser = argparse.ArgumentParser(prog="jobnet-agent", description="The jobnet watchdog agent.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, (summary, add_command_options) in _COMMANDS.items():
        if not argv or argv[0] not in _COMMANDS or argv[0] == name:
            add_command_options(commands.add_parser(name, help=summary))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plain = plain_options(argv[1:]) if argv[:1] == ["serve"] else None
    args: Union[argparse.Namespace, types.SimpleNamespace] = (
        types.SimpleNamespace(command="serve", **plain) if plain is not None else _parser(argv).parse_args(argv)
    )
    if args.command == "version":
        print(f"jobnet-agent {__version__} (protocol {PROTOCOL_VERSION}, python {sys.version.split()[0]})")
        return 0
    try:
        config = from_options(vars(args))
        journal = Journal(config.state_dir, args.command)
        journal.open(create=args.command in ("serve", "supervise"))
        if args.command == "serve":
            from jobnet_agent.server import serve

            return serve(config, config.read_boot_id())
        if args.command == "supervise":
            from jobnet_agent.supervisor import run_supervise_command

            return run_supervise_command(config, args.channel_fd)
        if args.command == "status":
            return _status(config, journal)
        if args.command == "jobs":
            return _jobs(journal, args.run)
        if args.command == "show":
            return _show(journal, args.key, args.lines)
        return _logs(journal, args.key, "stderr" if args.stderr else "stdout", args.follow)
    except (ConfigError, JournalError, ValueError) as exc:
        sys.stderr.write(f"jobnet-agent {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def _when(moment: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment)) if moment else "-"


def _text(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _rc(record: JobRecord) -> str:
    """The exit code, as far as it is known."""
    return _text(record.exit_code)


def _print_table(rows: List[Tuple[str, ...]], widths: Tuple[int, ...]) -> None:
    """Columns padded to ``widths``; the last column is never padded."""
    for row in rows:
        print(" ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " " + row[-1])


def _status(config: AgentConfig, journal: Journal) -> int:
    records = journal.list_records()
    counts: Dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    print(f"jobnet-agent {__version__}, state dir {config.state_dir}")
    print(f"boot id {config.read_boot_id()}, last journal seq {journal.last_seq()}, agent log {config.agent_log_path}")
    print("jobs: " + (", ".join(f"{state} {count}" for state, count in sorted(counts.items())) or "none"))
    for record in records:
        if record.state not in ACTIVE_STATES:
            continue
        supervised = (
            "supervised"
            if journal.job(record.key).supervisor_alive()
            else "SUPERVISOR GONE (the next serve settles it)"
        )
        since = _when(record.started_at or record.accepted_at)
        print(f"  {record.state:<9} pid {_text(record.pid):<7} since {since}  {record.key.text()}  {supervised}")
    return 0


def _jobs(journal: Journal, run: Optional[str]) -> int:
    rows: List[Tuple[str, ...]] = [("STATE", "RC", "PID", "STARTED", "ENDED", "REASON", "KEY")]
    for r in journal.list_records(run):
        started, ended = _when(r.started_at), _when(r.ended_at)
        rows.append((r.state, _rc(r), _text(r.pid), started, ended, r.reason or "-", r.key.text()))
    _print_table(rows, (13, 4, 8, 19, 19, 16))
    return 0


def _show(journal: Journal, key_text: str, lines: int) -> int:
    key = JobKey.parse_text(key_text)
    record = journal.read_record(key)
    if record is None:
        raise ValueError(f"the agent has no job {key.text()}")
    job = journal.job(key)
    rows = [
        ("job", key.text()),
        ("state", record.state),
        ("rc", _rc(record)),
        ("pid", f"{record.pid} (process group {record.pgid})" if record.pid else "-"),
    ]
    if record.ended:
        how = record.describe_end()
        rows.append(("ended", how if record.message in (None, how) else f"{how}: {record.message}"))
    elif record.state == RUNNING:
        supervised = "yes" if job.supervisor_alive() else "NO: its supervisor is gone (the next serve settles it)"
        rows.append(("supervised", supervised))
    if record.reason:
        rows.append(("reason", record.reason))
    if record.kill_requested:
        rows.append(("kill requested", record.kill_requested))
    rows += [
        ("accepted at", _when(record.accepted_at)),
        ("started at", _when(record.started_at)),
        ("ended at", _when(record.ended_at)),
        ("acknowledged", "yes" if record.acknowledged else "no"),
        ("directory", job.path),
    ]
    outputs = [(stream, job.output(stream)) for stream in STREAMS]
    for stream, output in outputs:
        total, _, dropped = output.sizes()
        where = " + ".join(output.paths()) or "(nothing written)"
        rows.append((stream, f"{total} bytes, {dropped} dropped from the middle: {where}"))
    for name, value in rows:
        print(f"{name + ':':<15} {value}")
    for stream, output in outputs:
        data, total, _ = output.tail(_SHOW_TAIL_BYTES)
        if not total:
            continue
        tail = data.splitlines()[-lines:] if lines > 0 else []
        print(f"--- last {len(tail)} line(s) of {stream} (all of it: jobnet-agent logs {key.text()}) ---")
        for line in tail:
            print(line.decode("utf-8", "replace"))
    return 0


def _logs(journal: Journal, key_text: str, stream: str, follow: bool) -> int:
    key = JobKey.parse_text(key_text)
    if journal.read_record(key) is None:
        raise ValueError(f"the agent has no job {key.text()}")
    output = journal.job(key).output(stream)
    out = sys.stdout.buffer
    offset = 0
    while True:
        data, _ = output.read(offset, 1024 * 1024)
        if data:
            out.write(data)
            out.flush()
            offset += len(data)
            continue
        record = journal.read_record(key)
        if not follow or record is None or record.ended:
            break
        time.sleep(_FOLLOW_POLL_SECONDS)  # a person watching output; nothing to synchronise with
    _, _, dropped = output.sizes()
    if dropped:
        sys.stderr.write(f"jobnet-agent logs: {dropped} bytes were dropped from the middle of {stream} (output cap)\n")
    return 0
