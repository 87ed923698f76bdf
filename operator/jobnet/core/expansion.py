"""Expansion of a root JobNet into the concrete run graph of one JobRun.

Every node has a *path*: the root JobNet is ``/nightly``, its jobs ``/nightly/extract``, a job
``load`` that expands JobNet ``load-jobnet`` becomes the sub-jobnet node ``/nightly/load``, and
that JobNet's jobs are nested under it: ``/nightly/load/step1``. Sub-jobnets start and finish
as units; the runtime gets the structure (``parent``, ``children``, ``after``) from here.

IDs (stable, documented in docs/api.md; never contain ``;``, the list separator of the
``MM_*`` variables):

- actual ID: ``<run id>:<path>``, e.g. ``6f1c...:/nightly/load/step1`` (just the path when no
  run id is given, e.g. for ``jobnet lint --tree``);
- template ID: ``<JobNet name>/<job name>`` for a job (``load-jobnet/step1``), the JobNet name
  for a jobnet node (``load-jobnet``).

Inheritance, nearest wins, walking outward from a job: the job itself, its JobNet's spec, the
``expand`` job that embedded that JobNet, that job's JobNet's spec, and so on up to the root.
This gives ``host``, ``timeoutSeconds`` and ``retry``; ``env`` is merged the same way (outer
JobNet env < expanding job env < inner JobNet env < job env).

The nodes are ordered topologically (dependencies before dependents, parents before
children, jobs before finally jobs). The work per JobNet template (its job order) is done once
however often it is expanded, and nodes are built without re-validation, so a 10,000-job run
graph takes milliseconds (benchmarks/bench_expansion.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from jobnet.core.graph import CycleError, format_cycle, topological_order
from jobnet.core.models import EnvMap, HostSpec, JobNetSpec, JobSpec, RetrySpec, StuckResolution
from jobnet.core.validation import Catalog, Problem, expansion_targets, validate_expansion

NodeKind = Literal["job", "jobnet"]


class ExpansionError(ValueError):
    """The JobNet cannot be expanded; ``problems`` says why (see ``validate_expansion``)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


class RunNode(BaseModel):
    """One node of a run graph: a job, or a jobnet (the root or an expanded sub-jobnet).

    - ``path``: ``/nightly/load/step1``; ``name``: its last segment; ``parent``: the path of
      the enclosing jobnet node (None for the root).
    - ``after``: paths of the sibling nodes that must succeed first; ``is_finally``: a
      ``finally`` node of its parent (runs once the parent's other nodes have finished).
    - ``children`` (jobnet nodes): child paths in topological order; ``expanded_from``
      (jobnet nodes): the name of the JobNet it is an instance of; ``stuck_resolution``
      (jobnet nodes): that JobNet's ``spec.stuckResolution`` (the nearest jobnet decides for
      a job), so the run carries its policy with its graph.
    - ``actual_id`` and ``template_id``: see the module docstring.
    - Job nodes only, resolved by inheritance: ``script``, ``args``, ``env`` (do not mutate),
      ``host``, ``timeout_seconds``, ``retry``, ``working_dir``.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    kind: NodeKind
    name: str
    parent: str | None
    after: tuple[str, ...] = ()
    is_finally: bool = False
    children: tuple[str, ...] = ()
    expanded_from: str | None = None
    stuck_resolution: StuckResolution | None = None
    actual_id: str
    template_id: str
    script: str | None = None
    args: tuple[str, ...] = ()
    env: EnvMap = {}
    host: HostSpec | None = None
    timeout_seconds: int | None = None
    retry: RetrySpec | None = None
    working_dir: str | None = None


class RunGraph(BaseModel):
    """The expanded run graph: ``nodes`` keyed by path, in topological order."""

    model_config = ConfigDict(frozen=True)

    root: str
    run_id: str
    nodes: dict[str, RunNode]

    def node(self, path: str) -> RunNode:
        """The node at ``path`` (KeyError naming the path when there is none)."""
        try:
            return self.nodes[path]
        except KeyError:
            raise KeyError(f"no node {path!r} in the run graph of {self.root!r}") from None

    def jobs(self) -> list[RunNode]:
        """The job nodes (scripts), in topological order."""
        return [node for node in self.nodes.values() if node.kind == "job"]

    def children(self, path: str) -> list[RunNode]:
        """The direct children of jobnet node ``path``, in topological order."""
        return [self.nodes[child] for child in self.node(path).children]

    def ancestors(self, path: str) -> list[RunNode]:
        """The jobnet nodes above ``path``, root first, parent last."""
        chain = []
        parent = self.node(path).parent
        while parent is not None:
            node = self.nodes[parent]
            chain.append(node)
            parent = node.parent
        chain.reverse()
        return chain


# Shared by every node: each node sets every field, so the set never changes (pydantic only
# ever adds field names to it, and copies it before a model_copy update).
_ALL_RUN_NODE_FIELDS = set(RunNode.model_fields)


def _new_node(values: dict[str, object]) -> RunNode:
    """A RunNode from already valid values, without validation.

    Does what ``RunNode.model_construct`` does for a complete set of fields, at a tenth of its
    cost: expansion builds one node per job, and 10,000-job run graphs must expand in
    milliseconds. Every value comes from validated models, so nothing is checked twice."""
    node = RunNode.__new__(RunNode)
    object.__setattr__(node, "__dict__", values)
    object.__setattr__(node, "__pydantic_fields_set__", _ALL_RUN_NODE_FIELDS)
    object.__setattr__(node, "__pydantic_extra__", None)
    object.__setattr__(node, "__pydantic_private__", None)
    return node


class _Defaults:
    """What a JobNet instance passes down to its jobs (the nearest setting wins)."""

    __slots__ = ("env", "host", "retry", "timeout_seconds")

    def __init__(
        self, env: EnvMap, host: HostSpec | None, timeout_seconds: int | None, retry: RetrySpec | None
    ) -> None:
        self.env = env
        self.host = host
        self.timeout_seconds = timeout_seconds
        self.retry = retry

    def within(self, settings: JobSpec | JobNetSpec) -> _Defaults:
        """These defaults overridden by a JobNet spec's or an expanding job's settings."""
        return _Defaults(
            {**self.env, **settings.env} if settings.env else self.env,
            settings.host or self.host,
            settings.timeout_seconds or self.timeout_seconds,
            settings.retry or self.retry,
        )


_NO_DEFAULTS = _Defaults({}, None, None, None)


class _TemplateJob:
    """What expansion needs of one job of a JobNet template, computed once per template."""

    __slots__ = ("after", "args", "is_finally", "job", "name", "template_id")

    def __init__(self, template: str, job: JobSpec, is_finally: bool) -> None:
        self.job = job
        self.name = job.name
        self.after = job.after
        self.is_finally = is_finally
        self.template_id = f"{template}/{job.name}"
        self.args = tuple(job.args)


class _Expander:
    def __init__(self, catalog: Catalog, run_id: str) -> None:
        self.catalog = catalog
        self.id_prefix = f"{run_id}:" if run_id else ""
        self.nodes: dict[str, RunNode] = {}
        self.templates: dict[str, list[_TemplateJob]] = {}

    def template(self, name: str) -> list[_TemplateJob]:
        """The jobs of JobNet ``name`` in topological order, finally jobs last (memoised)."""
        jobs = self.templates.get(name)
        if jobs is None:
            spec = self.catalog[name]
            jobs = []
            for specs, is_finally in ((spec.jobs, False), (spec.finally_, True)):
                after = {job.name: job.after for job in specs}
                by_name = {job.name: job for job in specs}
                for job_name in topological_order(after, after.__getitem__):
                    jobs.append(_TemplateJob(name, by_name[job_name], is_finally))
            self.templates[name] = jobs
        return jobs

    def add_jobnet(
        self,
        path: str,
        name: str,
        parent: str | None,
        expanded_from: str,
        defaults: _Defaults,
        after: tuple[str, ...],
        is_finally: bool,
    ) -> None:
        """Add the jobnet node at ``path`` and, after it, everything it contains."""
        spec = self.catalog[expanded_from]
        defaults = defaults.within(spec)
        jobs = self.template(expanded_from)
        prefix = path + "/"
        nodes = self.nodes
        id_prefix = self.id_prefix
        nodes[path] = _new_node(
            {
                "path": path,
                "kind": "jobnet",
                "name": name,
                "parent": parent,
                "after": after,
                "is_finally": is_finally,
                "children": tuple(prefix + job.name for job in jobs),
                "expanded_from": expanded_from,
                "stuck_resolution": spec.stuck_resolution,
                "actual_id": id_prefix + path,
                "template_id": expanded_from,
                "script": None,
                "args": (),
                "env": {},
                "host": None,
                "timeout_seconds": None,
                "retry": None,
                "working_dir": None,
            }
        )
        for entry in jobs:
            job = entry.job
            job_path = prefix + entry.name
            job_after = tuple(prefix + dep for dep in entry.after)
            if job.expand is not None:
                self.add_jobnet(
                    job_path, entry.name, path, job.expand, defaults.within(job), job_after, entry.is_finally
                )
                continue
            nodes[job_path] = _new_node(
                {
                    "path": job_path,
                    "kind": "job",
                    "name": entry.name,
                    "parent": path,
                    "after": job_after,
                    "is_finally": entry.is_finally,
                    "children": (),
                    "expanded_from": None,
                    "stuck_resolution": None,
                    "actual_id": id_prefix + job_path,
                    "template_id": entry.template_id,
                    "script": job.script,
                    "args": entry.args,
                    "env": {**defaults.env, **job.env},
                    "host": job.host or defaults.host,
                    "timeout_seconds": job.timeout_seconds or defaults.timeout_seconds,
                    "retry": job.retry or defaults.retry,
                    "working_dir": job.working_dir,
                }
            )


def expand(root_name: str, catalog: Catalog, run_id: str = "") -> RunGraph:
    """Expand JobNet ``root_name`` of ``catalog`` into a run graph.

    Raises ``ExpansionError`` listing every problem (``validate_expansion``) when it cannot be
    expanded and run: missing or invalid JobNets, expansion cycles, jobs without a host."""
    problems = validate_expansion(root_name, catalog)
    if problems:
        raise ExpansionError(problems)
    return expand_validated(root_name, catalog, run_id)


def expand_validated(root_name: str, catalog: Catalog, run_id: str = "") -> RunGraph:
    """:func:`expand` of a JobNet that ``validate_expansion`` (or ``validate_jobrun``) has just
    found free of problems in the same ``catalog``: a run's start validates once, not twice."""
    expander = _Expander(catalog, run_id)
    root_path = f"/{root_name}"
    expander.add_jobnet(root_path, root_name, None, root_name, _NO_DEFAULTS, (), False)
    return RunGraph.model_construct(root=root_path, run_id=run_id, nodes=expander.nodes)


def job_count(root_name: str, catalog: Mapping[str, JobNetSpec]) -> int:
    """How many script jobs JobNet ``root_name`` expands to, without building the graph.

    Linear in the jobs of the distinct JobNets involved. Raises ``ExpansionError`` when a
    JobNet it reaches is missing or the expansions form a cycle."""
    if root_name not in catalog:
        raise ExpansionError([Problem(path="", message=f"JobNet {root_name!r} does not exist")])
    reachable = [root_name]
    seen = {root_name}
    for name in reachable:
        for target in expansion_targets(catalog[name]):
            if target not in catalog:
                problem = Problem(path=f"JobNet/{name}", message=f"expands JobNet {target!r}, which does not exist")
                raise ExpansionError([problem])
            if target not in seen:
                seen.add(target)
                reachable.append(target)
    counts: dict[str, int] = {}
    try:
        order = topological_order(reachable, lambda name: expansion_targets(catalog[name]))
    except CycleError as error:
        cycle = format_cycle(reversed(error.cycle))
        raise ExpansionError([Problem(path=f"JobNet/{root_name}", message=f"expansion cycle: {cycle}")]) from None
    for name in order:
        spec = catalog[name]
        counts[name] = sum(counts[job.expand] if job.expand else 1 for job in (*spec.jobs, *spec.finally_))
    return counts[root_name]
