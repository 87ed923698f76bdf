"""Agent settings: every deadline and limit is an option (tests use short ones)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import List, Optional

DEFAULT_STATE_DIR = "~/.jobnet/state"
DEFAULT_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
#: The event log is rewritten (latest record per job) when GC has removed jobs and it is this big.
DEFAULT_COMPACT_THRESHOLD_BYTES = 8 * 1024 * 1024


class ConfigError(Exception):
    """Unusable settings; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    state_dir: str
    boot_id_file: str = DEFAULT_BOOT_ID_FILE
    grace_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    max_output_bytes: int = 64 * 1024 * 1024
    tail_bytes: int = 1024 * 1024
    retention_seconds: float = 7 * 24 * 3600.0
    log_file: Optional[str] = None
    poll_seconds: float = 0.5
    sweep_seconds: float = 1.0
    start_timeout_seconds: float = 10.0
    compact_threshold_bytes: int = DEFAULT_COMPACT_THRESHOLD_BYTES

    @property
    def agent_log_path(self) -> str:
        return self.log_file or os.path.join(self.state_dir, "agent.log")

    def read_boot_id(self) -> str:
        try:
            with open(self.boot_id_file, "r") as handle:
                boot_id = handle.read().strip()
        except OSError as exc:
            raise ConfigError("cannot read boot id file %s: %s" % (self.boot_id_file, exc.strerror or exc))
        if not boot_id:
            raise ConfigError("boot id file %s is empty" % self.boot_id_file)
        return boot_id

    def to_args(self) -> List[str]:
        """The options that recreate this configuration (for the supervisors serve starts)."""
        return [
            "--state-dir", self.state_dir,
            "--boot-id-file", self.boot_id_file,
            "--grace-seconds", repr(self.grace_seconds),
            "--heartbeat-seconds", repr(self.heartbeat_seconds),
            "--max-output-bytes", str(self.max_output_bytes),
            "--tail-bytes", str(self.tail_bytes),
            "--retention-seconds", repr(self.retention_seconds),
            "--log-file", self.agent_log_path,
            "--poll-seconds", repr(self.poll_seconds),
            "--sweep-seconds", repr(self.sweep_seconds),
            "--start-timeout-seconds", repr(self.start_timeout_seconds),
            "--compact-threshold-bytes", str(self.compact_threshold_bytes),
        ]  # fmt: skip


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = AgentConfig(state_dir=DEFAULT_STATE_DIR)
    env = os.environ.get
    parser.add_argument("--state-dir", default=env("JOBNET_AGENT_STATE_DIR", DEFAULT_STATE_DIR),
                        help="journal and job output directory (default %(default)s)")
    parser.add_argument("--boot-id-file", default=env("JOBNET_AGENT_BOOT_ID_FILE", DEFAULT_BOOT_ID_FILE),
                        help="file holding this host's boot id (default %(default)s)")
    parser.add_argument("--grace-seconds", type=float, default=defaults.grace_seconds,
                        help="SIGTERM to SIGKILL delay when killing a job (default %(default)s)")
    parser.add_argument("--heartbeat-seconds", type=float, default=defaults.heartbeat_seconds,
                        help="heartbeat interval of serve (default %(default)s)")
    parser.add_argument("--max-output-bytes", type=int, default=defaults.max_output_bytes,
                        help="bytes kept per output stream, head plus tail (default %(default)s)")
    parser.add_argument("--tail-bytes", type=int, default=defaults.tail_bytes,
                        help="of those, bytes kept from the end (default %(default)s)")
    parser.add_argument("--retention-seconds", type=float, default=defaults.retention_seconds,
                        help="keep acknowledged jobs this long (default %(default)s)")
    parser.add_argument("--log-file", default=None, help="agent log (default <state-dir>/agent.log)")
    parser.add_argument("--poll-seconds", type=float, default=defaults.poll_seconds,
                        help="how often a watch looks for new journal events without a wake-up from their writer (default %(default)s)")
    parser.add_argument("--sweep-seconds", type=float, default=defaults.sweep_seconds,
                        help="how often serve checks for jobs whose supervisor is gone (default %(default)s)")
    parser.add_argument("--start-timeout-seconds", type=float, default=defaults.start_timeout_seconds,
                        help="how long launch waits for the pid before answering (default %(default)s)")
    parser.add_argument("--compact-threshold-bytes", type=int, default=defaults.compact_threshold_bytes,
                        help="compact the event log when garbage collection removed jobs and it is bigger (default %(default)s)")  # fmt: skip


def from_args(args: argparse.Namespace) -> AgentConfig:
    for name in ("grace_seconds", "retention_seconds"):
        if getattr(args, name) < 0:
            raise ConfigError("--%s must be >= 0, got %s" % (name.replace("_", "-"), getattr(args, name)))
    for name in ("heartbeat_seconds", "poll_seconds", "sweep_seconds", "start_timeout_seconds"):
        if getattr(args, name) <= 0:
            raise ConfigError("--%s must be > 0, got %s" % (name.replace("_", "-"), getattr(args, name)))
    if args.compact_threshold_bytes < 0:
        raise ConfigError("--compact-threshold-bytes must be >= 0, got %d" % args.compact_threshold_bytes)
    if args.max_output_bytes < 2:
        raise ConfigError("--max-output-bytes must be at least 2, got %d" % args.max_output_bytes)
    if args.tail_bytes < 1 or args.tail_bytes >= args.max_output_bytes:
        raise ConfigError(
            "--tail-bytes must be between 1 and --max-output-bytes - 1 (%d), got %d"
            % (args.max_output_bytes - 1, args.tail_bytes)
        )
    log_file = os.path.abspath(os.path.expanduser(args.log_file)) if args.log_file else None
    return AgentConfig(
        state_dir=os.path.abspath(os.path.expanduser(args.state_dir)),
        boot_id_file=args.boot_id_file,
        grace_seconds=args.grace_seconds,
        heartbeat_seconds=args.heartbeat_seconds,
        max_output_bytes=args.max_output_bytes,
        tail_bytes=args.tail_bytes,
        retention_seconds=args.retention_seconds,
        log_file=log_file,
        poll_seconds=args.poll_seconds,
        sweep_seconds=args.sweep_seconds,
        start_timeout_seconds=args.start_timeout_seconds,
        compact_threshold_bytes=args.compact_threshold_bytes,
    )
