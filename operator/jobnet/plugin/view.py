"""What the plugin commands share without touching the network: errors, connection options, and
a JobRun as read from the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobnet.core.expansion import RunGraph
from jobnet.core.models import JobNetSpec
from jobnet.core.status import JobRunStatus
from jobnet.core.validation import parse_jobnet

Body = dict[str, Any]


class PluginError(Exception):
    """A failure to report to the user as ``kubectl jobnet <command>: <message>``."""


@dataclass(frozen=True)
class Connection:
    """Where to connect (the plugin's global options)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    request_timeout: float = 20.0


@dataclass(frozen=True)
class JobRunView:
    """A JobRun as the plugin needs it: the object, its parsed status, and its run graph (None
    when its JobNet cannot be expanded any more; ``graph_problem`` then says why)."""

    body: Body
    status: JobRunStatus
    graph: RunGraph | None
    graph_problem: str | None

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"].get("uid", ""))

    @property
    def jobnet(self) -> str:
        return str(self.body.get("spec", {}).get("jobNetRef", ""))

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.body["metadata"].get("annotations") or {})


def event_time(event: Body) -> str:
    """When an Event last happened (RFC 3339 text sorts in time order)."""
    series = event.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def jobnet_catalog(items: list[Body]) -> dict[str, JobNetSpec]:
    """The JobNets of a list response by name (those whose spec does not parse are left out:
    admission reports them, and an expansion that needs one names it as missing)."""
    catalog = {}
    for item in items:
        parsed = parse_jobnet(item.get("spec"))
        if isinstance(parsed, JobNetSpec):
            catalog[item["metadata"]["name"]] = parsed
    return catalog
