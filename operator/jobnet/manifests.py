"""Loading JobNet, JobRun, JobSchedule and JobCalendar manifests from YAML files, and linting
them (``jobnet lint``).

Files hold any number of YAML documents (``---``). A directory stands for the ``*.yaml`` and
``*.yml`` files directly in it (not its subdirectories), in name order. Documents of other
API groups (a Secret next to a JobNet, say) are skipped. All JobNets of all given files form
one catalog, so expansions across files resolve; likewise a JobSchedule's JobNet and
JobCalendar are looked up among all the given files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jobnet.core.models import API_GROUP, GROUP_VERSION, JobNetSpec
from jobnet.core.schedulevalidation import validate_jobcalendar, validate_jobschedule
from jobnet.core.validation import (
    Catalog,
    Problem,
    expansion_targets,
    host_problems,
    parse_jobnet,
    validate_jobnet,
    validate_jobrun,
)

KINDS = ("JobNet", "JobRun", "JobSchedule", "JobCalendar")


class ManifestError(Exception):
    """A file cannot be read or is not valid YAML (``jobnet lint`` exits 2)."""


@dataclass
class Document:
    """One YAML document of a file: ``index`` counts from 1 within the file."""

    file: str
    index: int
    body: dict[str, object]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def metadata(self) -> dict[str, object]:
        metadata = self.body.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    @property
    def name(self) -> str:
        """The object's name, or ``<generateName>*`` for one named by the API server."""
        name = self.metadata.get("name")
        if isinstance(name, str) and name:
            return name
        generate_name = self.metadata.get("generateName")
        return f"{generate_name}*" if isinstance(generate_name, str) and generate_name else "<unnamed>"

    @property
    def label(self) -> str:
        """``file:doc kind/name``, the prefix of every line ``jobnet lint`` prints about it."""
        return f"{self.file}:{self.index} {self.kind}/{self.name}"


@dataclass
class LintResult:
    """What ``lint`` found: the documents, the catalog and each problem with its document."""

    documents: list[Document]
    catalog: dict[str, JobNetSpec]
    problems: list[tuple[Document, Problem]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per problem: ``file:doc kind/name field.path: message``."""
        return [f"{document.label} {problem}" for document, problem in self.problems]


def yaml_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files named by ``paths`` (directories: their *.yaml/*.yml files, sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")))
        elif path.exists():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def load_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Every jobnet.dev document of the given files and directories."""
    documents: list[Document] = []
    for path in yaml_files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path}: cannot read: {error}") from error
        documents.extend(parse_documents(text, str(path)))
    return documents


def parse_documents(text: str, file: str) -> Iterator[Document]:
    """The jobnet.dev documents of one multi-document YAML text."""
    try:
        bodies = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise ManifestError(f"{file}: invalid YAML: {error}") from error
    for index, body in enumerate(bodies, start=1):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ManifestError(f"{file}:{index}: a manifest must be a mapping, got {type(body).__name__}")
        api_version = str(body.get("apiVersion", ""))
        if api_version.split("/")[0] == API_GROUP:
            yield Document(file, index, body)


def _spec(document: Document) -> object:
    return document.body.get("spec")


def _envelope_problems(document: Document) -> list[Problem]:
    """Problems outside ``spec``: apiVersion, kind, name, unknown top-level fields."""
    problems = []
    if document.body.get("apiVersion") != GROUP_VERSION:
        problems.append(
            Problem(
                path="apiVersion", message=f"unsupported {document.body.get('apiVersion')!r}, use {GROUP_VERSION!r}"
            )
        )
    if document.kind not in KINDS:
        problems.append(Problem(path="kind", message=f"unknown kind {document.kind!r}, expected {', '.join(KINDS)}"))
    allowed = {"apiVersion", "kind", "metadata", "spec", "status"}
    problems.extend(Problem(path=key, message="unknown field") for key in document.body if key not in allowed)
    if "spec" not in document.body:
        problems.append(Problem(path="spec", message="required field is missing"))
    if document.kind != "JobRun" and not isinstance(document.metadata.get("name"), str):
        problems.append(Problem(path="metadata.name", message=f"a {document.kind} needs a name"))
    return problems


def build_catalog(documents: Iterable[Document]) -> tuple[dict[str, JobNetSpec], list[tuple[Document, Problem]]]:
    """The catalog of every parseable JobNet, and the problems of duplicate names."""
    catalog: dict[str, JobNetSpec] = {}
    defined_at: dict[str, Document] = {}
    problems = []
    for document in documents:
        if document.kind != "JobNet" or not isinstance(document.metadata.get("name"), str):
            continue
        name = document.name
        if name in defined_at:
            first = defined_at[name]
            problems.append(
                (
                    document,
                    Problem(
                        path="metadata.name", message=f"JobNet {name!r} is also defined at {first.file}:{first.index}"
                    ),
                )
            )
            continue
        defined_at[name] = document
        spec = parse_jobnet(_spec(document))
        if isinstance(spec, JobNetSpec):
            catalog[name] = spec
    return catalog, problems


def lint(paths: Iterable[str | Path]) -> LintResult:
    """Validate every manifest of the given files (raises ManifestError, see above)."""
    documents = load_documents(paths)
    catalog, problems = build_catalog(documents)
    result = LintResult(documents, catalog, problems)
    roots = set(root_jobnets(catalog))
    jobnets = {document.name for document in documents if document.kind == "JobNet"}
    calendars = {document.name for document in documents if document.kind == "JobCalendar"}
    for document in documents:
        envelope = _envelope_problems(document)
        if envelope:
            result.problems.extend((document, problem) for problem in envelope)
            continue
        if document.kind == "JobNet":
            found = validate_jobnet(document.name, _spec(document), catalog)
        elif document.kind == "JobSchedule":
            found = validate_jobschedule(_spec(document), jobnets, calendars)
        elif document.kind == "JobCalendar":
            found = validate_jobcalendar(_spec(document))
        else:
            found = validate_jobrun(_spec(document), catalog)
        if document.kind == "JobNet" and not found and document.name in roots:
            # Nothing expands this JobNet, so it only runs as a root: its jobs need hosts now.
            own = f"JobNet/{document.name} "
            found = [
                Problem(path=p.path.removeprefix(own), message=p.message) for p in host_problems(document.name, catalog)
            ]
        result.problems.extend((document, problem) for problem in found)
    return result


def root_jobnets(catalog: Catalog) -> list[str]:
    """JobNets no other JobNet of the catalog expands, in catalog order."""
    expanded = {target for spec in catalog.values() for target in expansion_targets(spec)}
    return [name for name in catalog if name not in expanded]
