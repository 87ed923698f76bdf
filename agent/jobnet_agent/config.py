"""Agent settings: every deadline and limit is an option (tests use short ones)."""

from __future__ import annotations

import argparse
import os
from typing import List, Optional

from jobnet_agent.frozen import Frozen, init_fields

DEFAULT_STATE_DIR = "~/.jobnet/state"
DEFAULT_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
#: The event log is rewritten (latest record per job) when GC has removed jobs and it is this big.
DEFAULT_COMPACT_THRESHOLD_BYTES = 8 * 1024 * 1024


class ConfigError(Exception):
    """Unusable settings; the message names what is wrong."""


class AgentConfig(Frozen):
    state_dir: str
    boot_id_file: str
    grace_seconds: float
    heartbeat_seconds: float
    max_output_bytes: int
    tail_bytes: int
    retention_seconds: float
    log_file: Optional[str]
    poll_seconds: float
    sweep_seconds: float
    start_timeout_seconds: float
    compact_threshold_bytes: int

    def __init__(
        self,
        state_dir: str,
        boot_id_file: str = DEFAULT_BOOT_ID_FILE,
        grace_seconds: float = 10.0,
        heartbeat_seconds: float = 5.0,
        max_output_bytes: int = 64 * 1024 * 1024,
        tail_bytes: int = 1024 * 1024,
        retention_seconds: float = 7 * 24 * 3600.0,
        log_file: Optional[str] = None,
        poll_seconds: float = 0.5,
        sweep_seconds: float = 1.0,
        start_timeout_seconds: float = 10.0,
        compact_threshold_bytes: int = DEFAULT_COMPACT_THRESHOLD_BYTES,
    ) -> None:
        init_fields(
            self,
            state_dir=state_dir,
            boot_id_file=boot_id_file,
            grace_seconds=grace_seconds,
            heartbeat_seconds=heartbeat_seconds,
            max_output_bytes=max_output_bytes,
            tail_bytes=tail_bytes,
            retention_seconds=retention_seconds,
            log_file=log_file,
            poll_seconds=poll_seconds,
            sweep_seconds=sweep_seconds,
            start_timeout_seconds=start_timeout_seconds,
            compact_threshold_bytes=compact_threshold_bytes,
        )

    @property
    def agent_log_path(self) -> str:
        return self.log_file or os.path.join(self.state_dir, "agent.log")

    def read_boot_id(self) -> str:
        try:
            with open(self.boot_id_file) as handle:
                boot_id = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read boot id file {self.boot_id_file}: {exc.strerror or exc}") from exc
        if not boot_id:
            raise ConfigError(f"boot id file {self.boot_id_file} is empty")
        return boot_id

    def to_args(self) -> List[str]:
        """The options that recreate this configuration (for the supervisors serve starts)."""
        args = ["--state-dir", self.state_dir, "--boot-id-file", self.boot_id_file, "--log-file", self.agent_log_path]
        for option in _TUNABLES:
            args += ["--" + option.name.replace("_", "-"), repr(getattr(self, option.name))]
        return args


class _Tunable(Frozen):
    """A number option of the agent: ``--<name with dashes>``, checked against ``minimum``."""

    name: str
    kind: type
    minimum: float
    #: whether the minimum itself is allowed
    inclusive: bool
    help: str

    def __init__(self, name: str, kind: type, minimum: float, inclusive: bool, help: str) -> None:
        init_fields(self, name=name, kind=kind, minimum=minimum, inclusive=inclusive, help=help)


_TUNABLES = (
    _Tunable("grace_seconds", float, 0, True, "SIGTERM to SIGKILL delay when killing a job"),
    _Tunable("heartbeat_seconds", float, 0, False, "heartbeat interval of serve"),
    _Tunable("max_output_bytes", int, 2, True, "bytes kept per output stream, head plus tail"),
    _Tunable("tail_bytes", int, 1, True, "of those, bytes kept from the end"),
    _Tunable("retention_seconds", float, 0, True, "keep acknowledged jobs this long"),
    _Tunable(
        "poll_seconds",
        float,
        0,
        False,
        "how often a watch looks for new journal events without a wake-up from their writer",
    ),
    _Tunable("sweep_seconds", float, 0, False, "how often serve checks for jobs whose supervisor is gone"),
    _Tunable("start_timeout_seconds", float, 0, False, "how long launch waits for the pid before answering"),
    _Tunable(
        "compact_threshold_bytes",
        int,
        0,
        True,
        "compact the event log when garbage collection removed jobs and it is bigger",
    ),
)


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = AgentConfig(state_dir=DEFAULT_STATE_DIR)
    env = os.environ.get
    parser.add_argument(
        "--state-dir",
        default=env("JOBNET_AGENT_STATE_DIR", DEFAULT_STATE_DIR),
        help="journal and job output directory (default %(default)s)",
    )
    parser.add_argument(
        "--boot-id-file",
        default=env("JOBNET_AGENT_BOOT_ID_FILE", DEFAULT_BOOT_ID_FILE),
        help="file holding this host's boot id (default %(default)s)",
    )
    parser.add_argument("--log-file", default=None, help="agent log (default <state-dir>/agent.log)")
    for option in _TUNABLES:
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            type=option.kind,
            default=getattr(defaults, option.name),
            help=option.help + " (default %(default)s)",
        )


def from_args(args: argparse.Namespace) -> AgentConfig:
    for option in _TUNABLES:
        value = getattr(args, option.name)
        if value < option.minimum or (value == option.minimum and not option.inclusive):
            raise ConfigError(
                "--{} must be {} {}, got {}".format(
                    option.name.replace("_", "-"), ">=" if option.inclusive else ">", option.minimum, value
                )
            )
    if args.tail_bytes >= args.max_output_bytes:
        raise ConfigError(
            f"--tail-bytes must be between 1 and --max-output-bytes - 1 ({args.max_output_bytes - 1}), "
            f"got {args.tail_bytes}"
        )
    log_file = os.path.abspath(os.path.expanduser(args.log_file)) if args.log_file else None
    return AgentConfig(
        state_dir=os.path.abspath(os.path.expanduser(args.state_dir)),
        boot_id_file=args.boot_id_file,
        log_file=log_file,
        **{option.name: getattr(args, option.name) for option in _TUNABLES},
    )
