"""The Dockerfile, checked statically (no Docker engine on this machine).

A small parser reads the instructions the way BuildKit does (continuation lines joined,
comments dropped, stages split at FROM, ARG defaults substituted) so that the assertions
are about the image that would be built, not about strings that happen to appear in comments.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
AGENT_ZIPAPP = "/opt/jobnet/jobnet-agent.pyz"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cargo", "rustc", "libc6-dev", "python3-dev")


@dataclass
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            words = value.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, found {keyword}"
            arg_name, _, default = value.partition("=")
            global_args[arg_name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    _, parsed = parse(DOCKERFILE.read_text())
    return parsed


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_is_multi_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name == "build"


def test_every_base_image_is_a_pinned_slim_python(stages: list[Stage]) -> None:
    for stage in stages:
        image, _, digest = stage.base.partition("@")
        repository, _, tag = image.rpartition(":")
        assert repository in {"python", "docker.io/library/python"}, stage.base
        assert tag != "latest" and "latest" not in stage.base
        assert re.fullmatch(r"3\.\d+\.\d+-slim-[a-z]+", tag), f"{stage.base}: pin an exact Python version and distro"
        assert digest == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), stage.base


def test_final_stage_runs_as_non_root(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER: the operator would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"0", "root"} and group not in {"0", "root"}
    assert user == "10001", "the chart's securityContext runs the pod as 10001"
    last_user = max(i for i, ins in enumerate(final.instructions) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in final.instructions[last_user:]), "RUN after USER"


def test_entrypoint_is_jobnet_operator(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["jobnet", "operator"], "use the exec form, no shell in between"
    assert final.all("CMD") == []


def test_agent_zipapp_is_built_and_shipped_at_its_known_path(stages: list[Stage], final: Stage) -> None:
    build = stages[0]
    assert any("-m jobnet_agent.bundle /out/jobnet-agent.pyz" in run for run in build.all("RUN"))
    copies = [shlex.split(c) for c in final.all("COPY")]
    shipped = [c for c in copies if "--from=build" in c and c[-1] == AGENT_ZIPAPP]
    assert shipped and shipped[0][-2] == "/out/jobnet-agent.pyz"
    env = " ".join(final.all("ENV"))
    assert f"JOBNET_AGENT_ZIPAPP={AGENT_ZIPAPP}" in env


def test_final_stage_has_no_build_tools(final: Stage) -> None:
    for run in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", run))
        assert not words & set(BUILD_TOOLS), f"build tools in the final stage: {run}"
        assert "apt-get install" not in run or not any(tool in run for tool in BUILD_TOOLS)
    assert any("pip uninstall --yes setuptools wheel pip" in run for run in final.all("RUN"))


def test_pip_installs_are_pinned(stages: list[Stage], final: Stage) -> None:
    runtime_installs = [run for run in final.all("RUN") if "pip install" in run]
    assert runtime_installs
    for run in runtime_installs:
        assert "--no-index" in run and "--constraint /wheels/constraints.txt" in run, run
    build = stages[0]
    for run in build.all("RUN"):
        for requirement in re.findall(r"pip install (?!--no-index)(\S+)", run):
            assert "==" in requirement, f"unpinned pip install in the build stage: {run}"
    assert any("pip freeze" in run and "/wheels/constraints.txt" in run for run in build.all("RUN"))
    assert any("setuptools==" in run and "wheel==" in run for run in build.all("RUN"))


def test_oci_labels(final: Stage) -> None:
    labels = " ".join(final.all("LABEL"))
    for key in ("title", "version", "licenses", "source", "description"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.version="0.1.0"' in labels


def test_exposes_the_ports_the_chart_uses(final: Stage) -> None:
    (expose,) = final.all("EXPOSE")
    assert set(expose.split()) == {"9443", "8080", "9090"}


# --- build context --------------------------------------------------------------------------


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def in_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, regex in ignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            included = negated
    return included


def test_context_has_every_copied_file_and_nothing_private(stages: list[Stage]) -> None:
    for stage in stages:
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if any(w.startswith("--from=") for w in shlex.split(copy)):
                continue
            for source in words[:-1]:
                assert in_context(source), f"COPY {source} is excluded by .dockerignore"
    for private in (".git/config", "tests/support/vm.py", ".jobnet-dev/kubeconfig", "id_ed25519", ".venv/bin/python"):
        assert not in_context(private), f"{private} would be sent to the Docker daemon"
    for leftover in ("operator/jobnet/__pycache__/cli.cpython-311.pyc", "agent/dist/jobnet-agent.pyz"):
        assert not in_context(leftover), leftover
    assert in_context("operator/jobnet/cli.py") and in_context("agent/jobnet_agent/__init__.py")


def test_copied_sources_exist(stages: list[Stage]) -> None:
    copies = stages[0].all("COPY")
    assert copies, "the build stage copies nothing"
    missing = []
    for copy in copies:
        words = shlex.split(copy)
        if any(w.startswith("--from=") for w in words):
            continue
        missing += [s for s in words[:-1] if not s.startswith("--") and not (REPO / s).exists()]
    assert missing == []
