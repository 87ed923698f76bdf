"""Agent settings: every deadline and limit is an option (tests use short ones)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

from jobnet_agent.frozen import Frozen, init_fields

if TYPE_CHECKING:
    import argparse

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


def _option_defaults() -> Dict[str, Any]:
    """Every option's value when it is not given."""
    defaults = AgentConfig(state_dir=DEFAULT_STATE_DIR)
    env = os.environ.get
    return {
        "state_dir": env("JOBNET_AGENT_STATE_DIR", DEFAULT_STATE_DIR),
        "boot_id_file": env("JOBNET_AGENT_BOOT_ID_FILE", DEFAULT_BOOT_ID_FILE),
        "log_file": None,
        **{option.name: getattr(defaults, option.name) for option in _TUNABLES},
    }


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = _option_defaults()
    parser.add_argument(
        "--state-dir", default=defaults["state_dir"], help="journal and job output directory (default %(default)s)"
    )
    parser.add_argument(
        "--boot-id-file",
        default=defaults["boot_id_file"],
        help="file holding this host's boot id (default %(default)s)",
    )
    parser.add_argument("--log-file", default=None, help="agent log (default <state-dir>/agent.log)")
    for option in _TUNABLES:
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            type=option.kind,
            default=defaults[option.name],
            help=option.help + " (default %(default)s)",
        )


def plain_options(argv: Sequence[str]) -> Optional[Dict[str, Any]]:
    """The values of :func:`add_options`'s options in ``argv``, read without argparse, when each
    is written ``--name value`` with its full name and a value that does not start with ``-``
    (argparse reads these the same way); None for anything else, which argparse then reads (and
    explains if it is wrong).

    The operator starts ``serve`` with its options written so, and argparse cost each start
    26 M instructions (15 % of it, callgrind): its import with ``gettext``, the ``shutil`` its
    help formatter imports, ``locale``, and building the parser of every command."""
    values = _option_defaults()
    flags = {"--" + name.replace("_", "-"): name for name in values}
    kinds = {option.name: option.kind for option in _TUNABLES}
    if len(argv) % 2:
        return None
    for flag, text in zip(argv[::2], argv[1::2]):
        name = flags.get(flag)
        if name is None or text.startswith("-"):
            return None
        try:
            values[name] = kinds.get(name, str)(text)
        except ValueError:
            return None
    return values


def from_options(values: Mapping[str, Any]) -> AgentConfig:
    """The configuration of these option values (:func:`add_options`'s, by name), checked."""
    for option in _TUNABLES:
        value = values[option.name]
        if value < option.minimum or (value == option.minimum and not option.inclusive):
            raise ConfigError(
                "--{} must be {} {}, got {}".format(
                    option.name.replace("_", "-"), ">=" if option.inclusive else ">", option.minimum, value
                )
            )
    if values["tail_bytes"] >= values["max_output_bytes"]:
        raise ConfigError(
            f"--tail-bytes must be between 1 and --max-output-bytes - 1 ({values['max_output_bytes'] - 1}), "
            f"got {values['tail_bytes']}"
        )
    log_file = os.path.abspath(os.path.expanduser(values["log_file"])) if values["log_file"] else None
    return AgentConfig(
        state_dir=os.path.abspath(os.path.expanduser(values["state_dir"])),
        boot_id_file=values["boot_id_file"],
        log_file=log_file,
        **{option.name: values[option.name] for option in _TUNABLES},
    )
