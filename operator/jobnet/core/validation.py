"""Validation of JobNets and JobRuns, shared by the admission webhook, ``jobnet lint`` and the
operator (which re-validates when a JobRun starts, because admission cannot stop every race).

Every function collects **all** problems instead of stopping at the first, and each
``Problem`` names a field path (``spec.jobs[2].after[0]``), prefixed with the JobNet it is in
when it comes from another JobNet than the one validated (``JobNet/load spec.jobs[0].expand``).

A *catalog* is the namespace's JobNets: a mapping of JobNet name to its parsed ``JobNetSpec``.
The webhook builds it from the API, ``jobnet lint`` from files, the operator from its cache.

API:

- ``parse_jobnet(raw) -> JobNetSpec | list[Problem]`` and ``parse_jobrun(raw)``: schema
  checks (unknown fields, wrong types, missing fields) of a ``spec`` mapping.
- ``validate_jobnet(name, raw_or_spec, catalog)``: the JobNet on its own (names, duplicates,
  ``script``/``expand``, dangling ``after``, ``finally`` rules, cycles, env names) and its
  expansions against the catalog (missing JobNet, self-expansion, expansion cycles through
  other JobNets). ``catalog`` may or may not already hold ``name``: the given spec wins.
- ``validate_jobnet_deletion(name, catalog)``: deleting a JobNet other JobNets expand.
- ``validate_jobrun(raw_or_spec, catalog)``: the JobRun and a full check of what it would run
  (``validate_expansion``).
- ``validate_expansion(root, catalog)``: everything reachable from ``root`` through expansions
  expands cleanly, and every script job has a host (its own, its JobNet's, or one inherited
  from an enclosing JobNet or expanding job).

Everything is linear in jobs + edges of the JobNets involved; a JobNet expanded many times is
checked once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from jobnet.core.graph import CycleError, format_cycle, topological_order
from jobnet.core.models import (
    ENV_NAME_PATTERN,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    EnvMap,
    JobNetSpec,
    JobRunSpec,
    JobSpec,
)

Catalog = Mapping[str, JobNetSpec]
ModelT = TypeVar("ModelT", bound=BaseModel)

#: Environment variable prefixes jobnet sets itself; users cannot set them.
RESERVED_ENV_PREFIXES = ("MM_", "JOBNET_")

_NAME_RE = re.compile(NAME_PATTERN)
_ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)


class Problem(BaseModel):
    """One thing wrong with a definition: where (a field path) and what."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


# --- parsing ---------------------------------------------------------------------------------


def format_location(location: Sequence[str | int], prefix: str = "spec") -> str:
    """``("jobs", 2, "after", 0)`` -> ``spec.jobs[2].after[0]``."""
    path = prefix
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def problems_from_validation_error(error: ValidationError, prefix: str = "spec") -> list[Problem]:
    """Turn pydantic's errors into Problems with field paths and plain messages."""
    problems = []
    for item in error.errors(include_url=False):
        location = item["loc"]
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "too_short":
            minimum = item.get("ctx", {}).get("min_length")
            message = f"needs at least {minimum} {'item' if minimum == 1 else 'items'}, got {len(item['input'])}"
        else:
            message = item["msg"][:1].lower() + item["msg"][1:]
        problems.append(Problem(path=format_location(location, prefix), message=message))
    return problems


def _without(raw: object, locations: list[tuple[str | int, ...]]) -> object:
    """A copy of ``raw`` without the values at ``locations`` (untouched parts shared).

    A location inside a list removes the whole list instead of one item: removing an item
    would shift the indices, and with them the field paths of the remaining problems."""
    if not locations:
        return raw
    dropped: set[str | int] = set()
    nested: dict[str | int, list[tuple[str | int, ...]]] = {}
    for location in locations:
        if len(location) == 1 or (len(location) == 2 and isinstance(location[1], int)):
            dropped.add(location[0])
        else:
            nested.setdefault(location[0], []).append(location[1:])
    if isinstance(raw, dict):
        return {key: _without(value, nested.get(key, [])) for key, value in raw.items() if key not in dropped}
    if isinstance(raw, list):
        return [_without(item, nested.get(index, [])) for index, item in enumerate(raw)]
    return raw


def _parse(model: type[ModelT], raw: object) -> tuple[ModelT | None, list[Problem]]:
    """Parse ``raw``; on schema problems, also try without the offending fields.

    The second parse lets validation report the remaining problems too (a typo in one field
    should not hide a cycle), while the schema problems are still reported."""
    try:
        return model.model_validate(raw), []
    except ValidationError as error:
        problems = problems_from_validation_error(error)
        locations = [tuple(item["loc"]) for item in error.errors() if item["type"] != "missing"]
        if not all(locations):
            return None, problems  # the whole input is wrong: nothing left to check
        try:
            return model.model_validate(_without(raw, locations)), problems
        except ValidationError:
            return None, problems


def parse_spec(model: type[ModelT], raw: object) -> tuple[ModelT | None, list[Problem]]:
    """Parse a ``spec`` mapping into ``model``: the spec (None when nothing usable is left) and
    every schema problem (the spec without the offending fields is still returned, so that
    callers can report the remaining problems too)."""
    return _parse(model, raw)


def parse_jobnet(raw: object) -> JobNetSpec | list[Problem]:
    """Parse a JobNet ``spec`` mapping; on failure return every schema problem."""
    spec, problems = _parse(JobNetSpec, raw)
    return problems if problems or spec is None else spec


def parse_jobrun(raw: object) -> JobRunSpec | list[Problem]:
    """Parse a JobRun ``spec`` mapping; on failure return every schema problem."""
    spec, problems = _parse(JobRunSpec, raw)
    return problems if problems or spec is None else spec


# --- one JobNet on its own -------------------------------------------------------------------


@dataclass(frozen=True)
class JobRef:
    """A job of a JobNet with its field path (``spec.jobs[2]`` or ``spec.finally[0]``)."""

    path: str
    job: JobSpec
    is_finally: bool


def job_refs(spec: JobNetSpec) -> Iterator[JobRef]:
    """The jobs, then the finally jobs, with their field paths."""
    for index, job in enumerate(spec.jobs):
        yield JobRef(f"spec.jobs[{index}]", job, False)
    for index, job in enumerate(spec.finally_):
        yield JobRef(f"spec.finally[{index}]", job, True)


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` is not a valid job/JobNet name, or None."""
    if len(name) > NAME_MAX_LENGTH or not _NAME_RE.match(name):
        return (
            f"invalid {what} name {name!r}: use at most {NAME_MAX_LENGTH} lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return None


def env_problems(env: EnvMap, path: str) -> list[Problem]:
    """Invalid or reserved environment variable names."""
    problems = []
    for key in env:
        if not _ENV_NAME_RE.match(key):
            problems.append(Problem(path=f"{path}.{key}", message=f"invalid environment variable name {key!r}"))
        elif key.startswith(RESERVED_ENV_PREFIXES):
            problems.append(
                Problem(
                    path=f"{path}.{key}",
                    message=f"{key!r} is reserved: jobnet sets MM_* and JOBNET_* variables itself",
                )
            )
    return problems


def spec_problems(spec: JobNetSpec) -> list[Problem]:
    """Everything wrong with one JobNet spec that needs no other JobNet."""
    problems = env_problems(spec.env, "spec.env")
    refs = list(job_refs(spec))
    first_path: dict[str, str] = {}
    by_name: dict[str, JobRef] = {}
    for ref in refs:
        job = ref.job
        invalid = name_problem(job.name, "job")
        if invalid:
            problems.append(Problem(path=f"{ref.path}.name", message=invalid))
        if job.name in first_path:
            problems.append(
                Problem(
                    path=f"{ref.path}.name",
                    message=f"duplicate job name {job.name!r} (also {first_path[job.name]})",
                )
            )
        else:
            first_path[job.name] = ref.path
            by_name[job.name] = ref
        problems.extend(_kind_problems(ref))
        problems.extend(env_problems(job.env, f"{ref.path}.env"))

    for ref in refs:
        problems.extend(_after_problems(ref, by_name))

    problems.extend(_cycle_problems([r for r in refs if not r.is_finally], by_name))
    problems.extend(_cycle_problems([r for r in refs if r.is_finally], by_name))
    return problems


def _kind_problems(ref: JobRef) -> list[Problem]:
    job = ref.job
    if job.script is not None and job.expand is not None:
        return [Problem(path=ref.path, message=f"job {job.name!r} sets both script and expand: set exactly one")]
    if job.script is None and job.expand is None:
        return [Problem(path=ref.path, message=f"job {job.name!r} sets neither script nor expand: set exactly one")]
    problems = []
    if job.script is not None and not job.script.startswith("/"):
        problems.append(
            Problem(path=f"{ref.path}.script", message=f"script must be an absolute path, got {job.script!r}")
        )
    if job.expand is not None:
        if job.args:
            problems.append(Problem(path=f"{ref.path}.args", message="args apply to script jobs only, not to expand"))
        if job.working_dir is not None:
            problems.append(
                Problem(path=f"{ref.path}.workingDir", message="workingDir applies to script jobs only, not to expand")
            )
    return problems


def _after_problems(ref: JobRef, by_name: Mapping[str, JobRef]) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    name = ref.job.name
    for index, dependency in enumerate(ref.job.after):
        path = f"{ref.path}.after[{index}]"
        target = by_name.get(dependency)
        if dependency in seen:
            problems.append(Problem(path=path, message=f"job {name!r} lists {dependency!r} more than once"))
        seen.add(dependency)
        if target is None:
            problems.append(
                Problem(path=path, message=f"job {name!r} depends on {dependency!r}, which is not a job of this JobNet")
            )
        elif ref.is_finally and not target.is_finally:
            problems.append(
                Problem(
                    path=path,
                    message=(
                        f"finally job {name!r} cannot depend on job {dependency!r}: "
                        "finally jobs run after all jobs anyway"
                    ),
                )
            )
        elif not ref.is_finally and target.is_finally:
            problems.append(Problem(path=path, message=f"job {name!r} cannot depend on finally job {dependency!r}"))
    return problems


def _cycle_problems(refs: list[JobRef], by_name: Mapping[str, JobRef]) -> list[Problem]:
    """One concrete dependency cycle among ``refs``, reported at the ``after`` entry closing it."""
    names = [ref.job.name for ref in refs]

    def dependencies(name: str) -> list[str]:
        return by_name[name].job.after

    try:
        topological_order(names, dependencies)
    except CycleError as error:
        cycle: tuple[str, ...] = error.cycle
        # cycle[1] runs after cycle[0]: point at that entry of cycle[1]'s `after`.
        closing = by_name[cycle[1]]
        index = closing.job.after.index(cycle[0])
        return [
            Problem(
                path=f"{closing.path}.after[{index}]",
                message=f"dependency cycle: {format_cycle(cycle)}",
            )
        ]
    return []


# --- expansions across JobNets ---------------------------------------------------------------


def expansion_targets(spec: JobNetSpec) -> list[str]:
    """Names of the JobNets ``spec`` expands, once each, in order."""
    return list(dict.fromkeys(ref.job.expand for ref in job_refs(spec) if ref.job.expand is not None))


def _reachable(root: str, catalog: Catalog) -> dict[str, str | None]:
    """JobNets reachable from ``root`` through expansions (root included, missing ones not),
    each mapped to the JobNet through which it was first reached (breadth-first)."""
    reached_from: dict[str, str | None] = {root: None}
    queue = [root]
    for current in queue:
        for target in expansion_targets(catalog[current]):
            if target in catalog and target not in reached_from:
                reached_from[target] = current
                queue.append(target)
    return reached_from


def _expansion_cycle(root: str, catalog: Catalog) -> list[str] | None:
    """A chain from ``root`` into an expansion cycle (``x -> y -> z -> x``), or None.

    Self-expansions are left out: they get their own, clearer message."""
    reached_from = _reachable(root, catalog)

    def expanded(name: str) -> list[str]:
        return [t for t in expansion_targets(catalog[name]) if t != name]

    try:
        topological_order(reached_from, expanded)
    except CycleError as error:
        # The error lists dependencies first; "x expands y" reads the other way round.
        cycle = list(reversed(error.cycle))[:-1]
        if root in cycle:
            start = cycle.index(root)
            cycle = cycle[start:] + cycle[:start]
            return [*cycle, root]
        lead_in = []
        step = reached_from[cycle[0]]
        while step is not None:
            lead_in.append(step)
            step = reached_from[step]
        lead_in.reverse()
        return [*lead_in, *cycle, cycle[0]]
    return None


def _reference_problems(name: str, spec: JobNetSpec, catalog: Catalog, prefix: str) -> list[Problem]:
    """Expansions of JobNets that do not exist, and self-expansions."""
    problems = []
    for ref in job_refs(spec):
        target = ref.job.expand
        if target is None:
            continue
        if target == name:
            problems.append(Problem(path=f"{prefix}{ref.path}.expand", message=f"JobNet {name!r} expands itself"))
        elif target not in catalog:
            problems.append(
                Problem(
                    path=f"{prefix}{ref.path}.expand",
                    message=f"job {ref.job.name!r} expands JobNet {target!r}, which does not exist",
                )
            )
    return problems


def _cycle_problem(root: str, catalog: Catalog, prefix: str) -> list[Problem]:
    chain = _expansion_cycle(root, catalog)
    if chain is None:
        return []
    first_step = next(ref for ref in job_refs(catalog[root]) if ref.job.expand == chain[1])
    return [Problem(path=f"{prefix}{first_step.path}.expand", message=f"expansion cycle: {format_cycle(chain)}")]


def _with(catalog: Catalog, name: str, spec: JobNetSpec) -> Catalog:
    if catalog.get(name) is spec:
        return catalog
    return {**catalog, name: spec}


def validate_jobnet(name: str, raw_or_spec: object, catalog: Catalog) -> list[Problem]:
    """All problems of JobNet ``name`` (a raw ``spec`` mapping or a parsed spec) in ``catalog``."""
    problems = []
    invalid = name_problem(name, "JobNet")
    if invalid:
        problems.append(Problem(path="metadata.name", message=invalid))
    spec, schema_problems = (
        (raw_or_spec, []) if isinstance(raw_or_spec, JobNetSpec) else _parse(JobNetSpec, raw_or_spec)
    )
    problems.extend(schema_problems)
    if spec is None:
        return problems
    catalog = _with(catalog, name, spec)
    problems.extend(spec_problems(spec))
    problems.extend(_reference_problems(name, spec, catalog, ""))
    problems.extend(_cycle_problem(name, catalog, ""))
    return problems


def validate_jobnet_deletion(name: str, catalog: Catalog) -> list[Problem]:
    """Deleting JobNet ``name`` is a problem while other JobNets expand it (names them all)."""
    referrers = []
    for other, spec in catalog.items():
        if other == name:
            continue
        for ref in job_refs(spec):
            if ref.job.expand == name:
                referrers.append(f"JobNet/{other} {ref.path}.expand")
    if not referrers:
        return []
    return [
        Problem(
            path="metadata.name",
            message=(f"JobNet {name!r} is still expanded by {', '.join(referrers)}: remove those expansions first"),
        )
    ]


def validate_expansion(root: str, catalog: Catalog) -> list[Problem]:
    """Problems that would stop JobNet ``root`` from being expanded and run (see module doc)."""
    if root not in catalog:
        return [Problem(path="", message=f"JobNet {root!r} does not exist")]
    problems: list[Problem] = []
    for name in _reachable(root, catalog):
        prefix = f"JobNet/{name} "
        spec = catalog[name]
        problems.extend(Problem(path=prefix + problem.path, message=problem.message) for problem in spec_problems(spec))
        problems.extend(_reference_problems(name, spec, catalog, prefix))
    problems.extend(_cycle_problem(root, catalog, f"JobNet/{root} "))
    problems.extend(host_problems(root, catalog))
    return problems


def host_problems(root: str, catalog: Catalog) -> list[Problem]:
    """Script jobs that get no host from anywhere when ``root`` (in ``catalog``) is run.

    Only JobNets reached without an inherited host can have such jobs, and each of them is
    visited once (a host anywhere above covers everything below)."""
    problems = []
    visited = {root}
    queue = [root]
    for name in queue:
        spec = catalog[name]
        if spec.host is not None:
            continue
        for ref in job_refs(spec):
            job = ref.job
            if job.host is not None:
                continue
            if job.script is not None:
                problems.append(
                    Problem(
                        path=f"JobNet/{name} {ref.path}",
                        message=(
                            f"job {job.name!r} has no host: set host on the job, spec.host on JobNet "
                            f"{name!r}, or a host on a JobNet or job that expands it"
                        ),
                    )
                )
            elif job.expand is not None and job.expand in catalog and job.expand not in visited:
                visited.add(job.expand)
                queue.append(job.expand)
    return problems


def validate_jobrun(raw_or_spec: object, catalog: Catalog) -> list[Problem]:
    """All problems of a JobRun (a raw ``spec`` mapping or a parsed spec), including everything
    that would stop its JobNet from expanding and running."""
    spec, problems = (raw_or_spec, []) if isinstance(raw_or_spec, JobRunSpec) else _parse(JobRunSpec, raw_or_spec)
    if spec is None:
        return problems
    problems.extend(env_problems(spec.env, "spec.env"))
    if spec.job_net_ref not in catalog:
        problems.append(
            Problem(path="spec.jobNetRef", message=f"JobNet {spec.job_net_ref!r} does not exist in this namespace")
        )
        return problems
    problems.extend(validate_expansion(spec.job_net_ref, catalog))
    return problems
