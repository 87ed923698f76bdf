"""``kubectl jobnet tree``: a JobRun as an indented tree, the "jobnet monitor screen".

Rendering is pure (a :class:`~jobnet.plugin.kube.JobRunView` and a clock in, lines out), so it is
tested without a cluster; the command around it fetches the run and, with ``--watch``, redraws.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobnet.core.runstatus import from_rfc3339
from jobnet.core.status import JobStatus
from jobnet.plugin.view import JobRunView

#: ANSI colour per state (only used when the output is a terminal, or with --color=always).
STATE_COLOURS = {
    "Succeeded": "32",  # green
    "Failed": "31",  # red
    "Stuck": "1;35",  # bold magenta: a person is needed
    "Running": "36",  # cyan
    "Starting": "36",
    "Stopping": "33",  # yellow
    "Stopped": "33",
    "Ready": "34",  # blue
    "Pending": "2",  # dim
    "Skipped": "2",
}
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Stopped"})
HEADINGS = ("NAME", "STATE", "HOST", "ATTEMPT", "DURATION", "EXIT", "REASON", "MESSAGE")
MESSAGE_WIDTH = 60


def colour(text: str, state: str, enabled: bool) -> str:
    code = STATE_COLOURS.get(state)
    return f"\x1b[{code}m{text}\x1b[0m" if enabled and code else text


def format_duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``; ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def elapsed(started_at: str | None, finished_at: str | None, now: float) -> float | None:
    start = from_rfc3339(started_at)
    if start is None:
        return None
    end = from_rfc3339(finished_at)
    return (end if end is not None else now) - start


@dataclass(frozen=True)
class Row:
    depth: int
    label: str
    state: str
    entry: JobStatus | None


def _rows(view: JobRunView) -> list[Row]:
    """One row per jobnet and job: from the run graph (execution order), or, when the JobNet
    cannot be expanded any more, from the paths in the status (sorted)."""
    jobs = view.status.jobs
    graph = view.graph
    if graph is None:
        rows = []
        for path in sorted(jobs):
            depth = path.count("/") - 1
            rows.append(Row(depth, path if depth == 0 else path.rsplit("/", 1)[-1], jobs[path].state, jobs[path]))
        return rows
    rows = []

    def visit(path: str, depth: int) -> None:
        node = graph.nodes[path]
        entry = jobs.get(path)
        label = node.name if depth else path
        if node.kind == "jobnet" and depth:
            label += f" [{node.expanded_from}]"
        if node.is_finally:
            label += " (finally)"
        rows.append(Row(depth, label, entry.state if entry else "Pending", entry))
        for child in node.children:
            visit(child, depth + 1)

    visit(graph.root, 0)
    return rows


def _cells(row: Row, now: float, wide: bool) -> list[str]:
    entry = row.entry
    if entry is None:
        return ["  " * row.depth + row.label, row.state, "", "", "", "", "", ""]
    message = entry.message or ""
    if not wide and len(message) > MESSAGE_WIDTH:
        message = message[: MESSAGE_WIDTH - 3] + "..."
    return [
        "  " * row.depth + row.label,
        row.state,
        entry.host or "",
        str(entry.attempt) if entry.attempt else "",
        format_duration(elapsed(entry.started_at, entry.finished_at, now)) if entry.started_at else "",
        str(entry.exit_code) if entry.exit_code is not None else "",
        entry.reason or "",
        message,
    ]


def render(view: JobRunView, namespace: str, now: float, *, colours: bool = False, wide: bool = False) -> list[str]:
    """The header and the tree of ``view`` at time ``now`` (unix seconds)."""
    status = view.status
    lines = [
        f"JobRun {view.name} (namespace {namespace}, JobNet {view.jobnet or '?'})",
        (
            f"Phase: {colour(status.phase, status.phase, colours)}   Progress: {status.progress or '-'}   "
            f"Started: {status.started_at or '-'}   Finished: {status.finished_at or '-'}   "
            f"Elapsed: {format_duration(elapsed(status.started_at, status.finished_at, now))}"
        ),
    ]
    if status.reason or status.message:
        lines.append(f"Reason: {status.reason or '-'}: {status.message or ''}".rstrip(": "))
    if status.stop_scopes:
        lines.append(f"Stopped scopes: {', '.join(status.stop_scopes)}")
    if view.graph_problem:
        lines.append(f"Note: {view.graph_problem}; showing the jobs recorded in the status")
    lines.append("")
    table = [list(HEADINGS)] + [_cells(row, now, wide) for row in _rows(view)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(HEADINGS))]
    for index, cells in enumerate(table):
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        if index:
            padded[1] = colour(padded[1], cells[1], colours)
        lines.append("  ".join(padded).rstrip())
    return lines
