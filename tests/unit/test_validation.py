"""Validation collects every problem, each with a field path and a message naming the jobs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobnet.core.models import JobNetSpec
from jobnet.core.validation import (
    Problem,
    parse_jobnet,
    parse_jobrun,
    validate_expansion,
    validate_jobnet,
    validate_jobnet_deletion,
    validate_jobrun,
)

HOST = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}


def script(name: str, *after: str, **extra: object) -> dict:
    return {"name": name, "script": f"/opt/{name}.sh", "after": list(after), **extra}


def expansion(name: str, target: str, *after: str) -> dict:
    return {"name": name, "expand": target, "after": list(after)}


def jobnet(*jobs: dict, host: bool = True, **extra: object) -> JobNetSpec:
    raw = {"jobs": list(jobs), **extra}
    if host:
        raw["host"] = HOST
    return JobNetSpec.model_validate(raw)


def as_text(problems: list[Problem]) -> list[str]:
    return [str(problem) for problem in problems]


def test_valid_jobnet_has_no_problems():
    spec = jobnet(script("extract"), script("transform", "extract"), finally_=[])
    assert validate_jobnet("nightly", spec, {}) == []


def test_schema_errors_become_problems_with_field_paths():
    raw = {
        "jobs": [{"name": "a", "script": "/a", "aftr": ["b"]}],
        "timeoutSeconds": "soon",
        "finally": [{"name": 3, "script": "/f"}],
    }
    assert as_text(validate_jobnet("x", raw, {})) == [
        "spec.timeoutSeconds: input should be a valid integer, unable to parse string as an integer",
        "spec.jobs[0].aftr: unknown field",
        "spec.finally[0].name: input should be a valid string",
    ]
    assert isinstance(parse_jobnet(raw), list)
    assert as_text(parse_jobnet({"jobs": []})) == ["spec.jobs: needs at least 1 item, got 0"]
    assert as_text(parse_jobnet("not a mapping")) == [
        "spec: input should be a valid dictionary or instance of JobNetSpec"
    ]


def test_schema_errors_do_not_hide_other_problems():
    raw = {"host": HOST, "jobs": [script("a", "b", aftr=["x"]), script("b", "a")]}
    text = as_text(validate_jobnet("x", raw, {}))
    assert "spec.jobs[0].aftr: unknown field" in text
    assert "spec.jobs[1].after[0]: dependency cycle: a -> b -> a" in text


def test_a_missing_required_field_is_reported_without_guessing():
    assert as_text(validate_jobnet("x", {"jobs": [{"script": "/a"}]}, {})) == [
        "spec.jobs[0].name: required field is missing"
    ]


def test_collects_all_structural_problems_at_once():
    spec = jobnet(
        script("a", "c"),
        script("b", "a"),
        script("c", "b", "nope"),
        {"name": "Bad_Name", "script": "/x"},
        {"name": "a", "script": "/a2"},
        {"name": "both", "script": "/b", "expand": "other"},
        {"name": "neither"},
        {"name": "relative", "script": "run.sh"},
        {"name": "sub", "expand": "other", "args": ["x"], "workingDir": "/tmp"},
        script("dup-after", "a", "a"),
        finally_=[script("notify", "a"), script("cleanup", "notify")],
    )
    assert as_text(validate_jobnet("nightly", spec, {"other": jobnet(script("o"))})) == [
        "spec.jobs[3].name: invalid job name 'Bad_Name': use at most 63 lowercase letters, digits and '-', "
        "starting and ending with a letter or digit",
        "spec.jobs[4].name: duplicate job name 'a' (also spec.jobs[0])",
        "spec.jobs[5]: job 'both' sets both script and expand: set exactly one",
        "spec.jobs[6]: job 'neither' sets neither script nor expand: set exactly one",
        "spec.jobs[7].script: script must be an absolute path, got 'run.sh'",
        "spec.jobs[8].args: args apply to script jobs only, not to expand",
        "spec.jobs[8].workingDir: workingDir applies to script jobs only, not to expand",
        "spec.jobs[2].after[1]: job 'c' depends on 'nope', which is not a job of this JobNet",
        "spec.jobs[9].after[1]: job 'dup-after' lists 'a' more than once",
        "spec.finally[0].after[0]: "
        "finally job 'notify' cannot depend on job 'a': finally jobs run after all jobs anyway",
        "spec.jobs[1].after[0]: dependency cycle: a -> b -> c -> a",
    ]


def test_normal_job_cannot_depend_on_finally_job():
    spec = jobnet(script("a", "notify"), finally_=[script("notify")])
    assert as_text(validate_jobnet("x", spec, {})) == [
        "spec.jobs[0].after[0]: job 'a' cannot depend on finally job 'notify'"
    ]


def test_cycle_among_finally_jobs_and_self_dependency():
    spec = jobnet(script("a", "a"), finally_=[script("f", "g"), script("g", "f")])
    assert as_text(validate_jobnet("x", spec, {})) == [
        "spec.jobs[0].after[0]: dependency cycle: a -> a",
        "spec.finally[1].after[0]: dependency cycle: f -> g -> f",
    ]


def test_env_names_must_be_valid_and_not_reserved():
    spec = jobnet(script("a", env={"OK": "1", "BAD-NAME": "x", "MM_SCHEDULE_ID": "x"}), env={"JOBNET_RUN": "x"})
    assert as_text(validate_jobnet("x", spec, {})) == [
        "spec.env.JOBNET_RUN: 'JOBNET_RUN' is reserved: jobnet sets MM_* and JOBNET_* variables itself",
        "spec.jobs[0].env.BAD-NAME: invalid environment variable name 'BAD-NAME'",
        "spec.jobs[0].env.MM_SCHEDULE_ID: 'MM_SCHEDULE_ID' is reserved: jobnet sets MM_* and JOBNET_* variables itself",
    ]


def test_invalid_jobnet_name():
    assert as_text(validate_jobnet("Nightly.v2", jobnet(script("a")), {}))[0].startswith(
        "metadata.name: invalid JobNet name 'Nightly.v2'"
    )


def test_expansion_of_missing_jobnet_and_self_expansion():
    spec = jobnet(expansion("load", "ghost"), expansion("again", "x"))
    assert as_text(validate_jobnet("x", spec, {})) == [
        "spec.jobs[0].expand: job 'load' expands JobNet 'ghost', which does not exist",
        "spec.jobs[1].expand: JobNet 'x' expands itself",
    ]


@pytest.mark.parametrize("length", [2, 3, 5])
def test_expansion_cycle_is_rejected_when_the_closing_edge_is_added(length):
    names = [f"n{i}" for i in range(length)]
    catalog = {name: jobnet(expansion("next", names[i + 1])) for i, name in enumerate(names[:-1])}
    closing = jobnet(script("work"), expansion("back", names[0]))
    assert as_text(validate_jobnet(names[-1], closing, catalog)) == [
        f"spec.jobs[1].expand: expansion cycle: {' -> '.join([names[-1], *names])}"
    ]


def test_expanding_into_an_existing_cycle_shows_the_chain_into_it():
    catalog = {"y": jobnet(expansion("to-z", "z")), "z": jobnet(expansion("to-y", "y"))}
    assert as_text(validate_jobnet("x", jobnet(expansion("to-y", "y")), catalog)) == [
        "spec.jobs[0].expand: expansion cycle: x -> y -> z -> y"
    ]


def test_given_spec_replaces_the_catalog_entry_on_update():
    catalog = {"x": jobnet(expansion("to-y", "y")), "y": jobnet(script("a"))}
    assert validate_jobnet("y", jobnet(script("a")), catalog) == []
    assert as_text(validate_jobnet("y", jobnet(expansion("to-x", "x")), catalog)) == [
        "spec.jobs[0].expand: expansion cycle: y -> x -> y"
    ]


def test_deleting_an_expanded_jobnet_names_every_referrer():
    catalog = {
        "load": jobnet(script("a")),
        "nightly": jobnet(script("e"), expansion("load", "load")),
        "weekly": jobnet(expansion("load-it", "load"), finally_=[expansion("again", "load")]),
    }
    assert as_text(validate_jobnet_deletion("load", catalog)) == [
        "metadata.name: JobNet 'load' is still expanded by JobNet/nightly spec.jobs[1].expand, "
        "JobNet/weekly spec.jobs[0].expand, JobNet/weekly spec.finally[0].expand: remove those expansions first"
    ]
    assert validate_jobnet_deletion("nightly", catalog) == []


def test_jobrun_of_missing_jobnet():
    assert as_text(validate_jobrun({"jobNetRef": "ghost"}, {})) == [
        "spec.jobNetRef: JobNet 'ghost' does not exist in this namespace"
    ]


def test_jobrun_schema_and_env_problems():
    assert as_text(validate_jobrun({"jobNetref": "x"}, {})) == [
        "spec.jobNetRef: required field is missing",
        "spec.jobNetref: unknown field",
    ]
    catalog = {"x": jobnet(script("a"))}
    assert as_text(validate_jobrun({"jobNetRef": "x", "env": {"1X": "y"}}, catalog)) == [
        "spec.env.1X: invalid environment variable name '1X'"
    ]
    assert isinstance(parse_jobrun({"jobNetRef": "x"}), object) and not isinstance(
        parse_jobrun({"jobNetRef": "x"}), list
    )


def test_jobrun_reports_problems_anywhere_in_the_expansion_with_the_jobnet_named():
    catalog = {
        "root": jobnet(expansion("mid", "mid")),
        "mid": jobnet(expansion("leaf", "leaf"), expansion("gone", "deleted"), host=False),
        "leaf": jobnet(script("a", "a"), host=False),
    }
    assert as_text(validate_jobrun({"jobNetRef": "root"}, catalog)) == [
        "JobNet/mid spec.jobs[1].expand: job 'gone' expands JobNet 'deleted', which does not exist",
        "JobNet/leaf spec.jobs[0].after[0]: dependency cycle: a -> a",
    ]


def test_script_job_without_any_host_is_reported_with_its_jobnet():
    catalog = {
        "root": jobnet(script("a"), expansion("sub", "sub"), host=False),
        "sub": jobnet(script("b"), script("c", host=HOST), host=False),
    }
    assert as_text(validate_expansion("root", catalog)) == [
        "JobNet/root spec.jobs[0]: job 'a' has no host: set host on the job, spec.host on JobNet 'root', "
        "or a host on a JobNet or job that expands it",
        "JobNet/sub spec.jobs[0]: job 'b' has no host: set host on the job, spec.host on JobNet 'sub', "
        "or a host on a JobNet or job that expands it",
    ]


def test_host_is_inherited_through_expansions_and_from_the_expanding_job():
    catalog = {
        "root": jobnet(expansion("sub", "sub")),
        "sub": jobnet(script("b"), host=False),
        "other-root": jobnet({"name": "sub", "expand": "sub", "host": HOST}, host=False),
    }
    assert validate_expansion("root", catalog) == []
    assert validate_expansion("other-root", catalog) == []
    assert validate_expansion("sub", catalog)[0].path == "JobNet/sub spec.jobs[0]"


def test_expansion_cycle_in_jobrun():
    catalog = {"x": jobnet(expansion("y", "y")), "y": jobnet(expansion("x", "x"))}
    assert as_text(validate_jobrun({"jobNetRef": "x"}, catalog)) == [
        "JobNet/x spec.jobs[0].expand: expansion cycle: x -> y -> x"
    ]


def test_a_jobnet_used_many_times_is_validated_once_and_quickly():
    leaf = jobnet(*[script(f"j{i}", *([f"j{i - 1}"] if i else [])) for i in range(300)])
    mid = jobnet(*[expansion(f"leaf{i}", "leaf") for i in range(300)])
    catalog = {"mid": mid, "leaf": leaf, "root": jobnet(*[expansion(f"mid{i}", "mid") for i in range(300)])}
    # 300 x 300 x 300 = 27 million jobs once expanded: only linear validation can answer.
    assert validate_jobrun({"jobNetRef": "root"}, catalog) == []


@st.composite
def jobnets_with_optional_cycle(draw):
    size = draw(st.integers(min_value=1, max_value=25))
    names = [f"j{i}" for i in range(size)]
    jobs = []
    for index, name in enumerate(names):
        after = sorted(set(draw(st.lists(st.sampled_from(names[:index]), max_size=3)))) if index else []
        jobs.append({"name": name, "script": f"/opt/{name}.sh", "after": after})
    planted = draw(st.booleans())
    if planted:
        members = draw(st.permutations(names))[: draw(st.integers(min_value=1, max_value=min(size, 5)))]
        for dependency, dependent in zip(members, members[1:] + members[:1], strict=True):
            job = jobs[names.index(dependent)]
            if dependency not in job["after"]:
                job["after"].append(dependency)
    return {"host": HOST, "jobs": jobs}, planted


@settings(max_examples=150, deadline=None)
@given(jobnets_with_optional_cycle())
def test_property_cycle_reported_exactly_when_planted_and_points_at_a_real_edge(case):
    raw, planted = case
    problems = validate_jobnet("random", raw, {})
    assert bool(problems) == planted
    if planted:
        (problem,) = problems
        cycle = problem.message.removeprefix("dependency cycle: ").split(" -> ")
        after = {job["name"]: job["after"] for job in raw["jobs"]}
        assert cycle[0] == cycle[-1]
        for dependency, dependent in zip(cycle, cycle[1:], strict=False):
            assert dependency in after[dependent]
        index = int(problem.path.split("[")[1].split("]")[0])
        assert raw["jobs"][index]["name"] == cycle[1]


def test_a_wrong_list_item_does_not_shift_the_paths_of_other_problems():
    raw = {"host": HOST, "jobs": [script("a", "b", args=[1]), script("b", "a", x=1)]}
    assert as_text(validate_jobnet("x", raw, {})) == [
        "spec.jobs[0].args[0]: input should be a valid string",
        "spec.jobs[1].x: unknown field",
        "spec.jobs[1].after[0]: dependency cycle: a -> b -> a",
    ]
    assert as_text(validate_jobnet("x", {"jobs": [script("a"), "oops"]}, {})) == [
        "spec.jobs[1]: input should be a valid dictionary or instance of JobSpec"
    ]
