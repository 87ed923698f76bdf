"""``jobnet-agent``: serve the protocol, or show a person what the agent knows."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

from jobnet_agent import PROTOCOL_VERSION, __version__
from jobnet_agent.config import AgentConfig, ConfigError, add_options, from_args
from jobnet_agent.journal import Journal, JournalError
from jobnet_agent.protocol import ACTIVE_STATES, JobKey, JobRecord

#: How often ``logs --follow`` looks for more output.
_FOLLOW_POLL_SECONDS = 0.2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobnet-agent", description="The jobnet watchdog agent.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    serve = commands.add_parser("serve", help="speak the agent protocol on stdin/stdout (used by the operator)")
    add_options(serve)
    status = commands.add_parser("status", help="summary of the journal and active jobs")
    add_options(status)
    jobs = commands.add_parser("jobs", help="list the jobs the agent knows")
    add_options(jobs)
    jobs.add_argument("--run", help="only jobs of this JobRun uid")
    logs = commands.add_parser("logs", help="print a job's stored output")
    add_options(logs)
    logs.add_argument("key", help="job key: run:path#attempt, e.g. 6f1c:/nightly/load#1")
    logs.add_argument("--stderr", action="store_true", help="print stderr instead of stdout")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    supervise = commands.add_parser("supervise", help="(internal) supervise one job; started by serve")
    add_options(supervise)
    supervise.add_argument("--job-dir", default=None)
    supervise.add_argument("--lock-fd", type=int, default=None)
    supervise.add_argument("--ready-fd", type=int, default=None)
    supervise.add_argument("--adopt", action="store_true")
    supervise.add_argument("--fork-server-fd", type=int, default=None)
    commands.add_parser("version", help="print the agent and protocol version")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print("jobnet-agent %s (protocol %d, python %s)" % (__version__, PROTOCOL_VERSION, sys.version.split()[0]))
        return 0
    try:
        config = from_args(args)
        journal = Journal(config.state_dir, args.command)
        journal.open(create=args.command in ("serve", "supervise"))
        if args.command == "serve":
            from jobnet_agent.server import serve

            return serve(config, config.read_boot_id())
        if args.command == "supervise":
            from jobnet_agent.forkserver import run_supervise_command

            return run_supervise_command(
                config, args.job_dir, args.lock_fd, args.ready_fd, args.adopt, args.fork_server_fd
            )
        if args.command == "status":
            return _status(config, journal)
        if args.command == "jobs":
            return _jobs(journal, args.run)
        return _logs(journal, args.key, "stderr" if args.stderr else "stdout", args.follow)
    except (ConfigError, JournalError, ValueError) as exc:
        sys.stderr.write(f"jobnet-agent {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def _when(moment: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment)) if moment else "-"


def _outcome(record: JobRecord) -> str:
    if record.state == "exited":
        return f"exit {record.exit_code}"
    if record.reason:
        return record.reason
    return ""


def _status(config: AgentConfig, journal: Journal) -> int:
    records = journal.list_records()
    counts: Dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    print(f"jobnet-agent {__version__}, state dir {config.state_dir}")
    print(
        "boot id %s, last journal seq %d, agent log %s"
        % (config.read_boot_id(), journal.last_seq(), config.agent_log_path)
    )
    print("jobs: %s" % (", ".join("%s %d" % item for item in sorted(counts.items())) or "none"))
    for record in records:
        if record.state not in ACTIVE_STATES:
            continue
        supervised = (
            "supervised"
            if journal.job(record.key).supervisor_alive()
            else "SUPERVISOR GONE (the next serve settles it)"
        )
        print("  %-9s pid %-7s since %s  %s  %s" % (
            record.state, record.pid or "-", _when(record.started_at or record.accepted_at), record.key.text(), supervised))  # fmt: skip
    return 0


def _jobs(journal: Journal, run: Optional[str]) -> int:
    records = journal.list_records(run)
    print("%-6s %-13s %-8s %-16s %-19s %-19s %s" % ("SEQ", "STATE", "PID", "OUTCOME", "STARTED", "ENDED", "KEY"))
    for r in records:
        print("%-6d %-13s %-8s %-16s %-19s %-19s %s" % (
            r.seq, r.state, r.pid or "-", _outcome(r), _when(r.started_at), _when(r.ended_at), r.key.text()))  # fmt: skip
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
        sys.stderr.write(
            "jobnet-agent logs: %d bytes were dropped from the middle of %s (output cap)\n" % (dropped, stream)
        )
    return 0
