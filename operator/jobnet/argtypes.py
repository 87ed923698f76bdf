"""argparse value types shared by every ``jobnet`` command (operator, plugin, dev)."""

from __future__ import annotations

import argparse


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def positive_seconds(text: str) -> float:
    """A duration in seconds, greater than zero."""
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    """A duration in seconds, zero or more (zero: the feature is off)."""
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive number of seconds, not {text!r}")
    return value


def positive_count(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def host_alias(text: str) -> tuple[str, str]:
    """``NAME=ADDRESS`` of ``--host-alias``: a clear error for anything else."""
    name, separator, address = text.partition("=")
    name, address = name.strip(), address.strip()
    if not separator or not name or not address or "=" in address:
        raise argparse.ArgumentTypeError(f"expected NAME=ADDRESS (e.g. vm1.batch.example=10.0.0.7), not {text!r}")
    return name, address


def add_host_alias_argument(parser: argparse._ActionsContainer, help: str) -> None:
    """``--host-alias NAME=ADDRESS`` (repeatable) into ``host_aliases``: a list of (NAME, ADDRESS)."""
    parser.add_argument(
        "--host-alias",
        dest="host_aliases",
        action="append",
        default=[],
        type=host_alias,
        metavar="NAME=ADDRESS",
        help=help,
    )
