"""Expansion into the concrete run graph: paths, IDs, order, inheritance."""

from __future__ import annotations

import pytest

from jobnet.core.expansion import ExpansionError, RunNode, expand, job_count
from jobnet.core.models import JobNetSpec

VM1 = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
VM2 = {"address": "vm2.batch.example", "user": "batch", "credentialsSecret": "vm2-ssh"}


@pytest.fixture
def catalog() -> dict[str, JobNetSpec]:
    raw = {
        "nightly": {
            "host": VM1,
            "timeoutSeconds": 3600,
            "retry": {"dispatchAttempts": 3},
            "env": {"REGION": "eu", "LEVEL": "nightly"},
            "jobs": [
                {"name": "extract", "script": "/opt/extract.sh", "args": ["--date", "today"], "env": {"REGION": "us"}},
                {"name": "transform", "script": "/opt/transform.sh", "after": ["extract"]},
                {
                    "name": "load",
                    "expand": "load-jobnet",
                    "after": ["transform"],
                    "env": {"LEVEL": "expand-job", "BY": "load"},
                },
            ],
            "finally": [{"name": "notify", "script": "/opt/notify.sh"}],
        },
        "load-jobnet": {
            "env": {"LEVEL": "load-jobnet"},
            "jobs": [
                {"name": "publish", "script": "/opt/publish.sh", "after": ["step1"], "timeoutSeconds": 5},
                {"name": "step1", "script": "/opt/step1.sh", "host": VM2, "workingDir": "/srv"},
            ],
        },
    }
    return {name: JobNetSpec.model_validate(spec) for name, spec in raw.items()}


def test_paths_are_nested_under_the_expanding_job_in_topological_order(catalog):
    graph = expand("nightly", catalog, run_id="uid-1")
    assert graph.root == "/nightly"
    assert list(graph.nodes) == [
        "/nightly",
        "/nightly/extract",
        "/nightly/transform",
        "/nightly/load",
        "/nightly/load/step1",
        "/nightly/load/publish",
        "/nightly/notify",
    ]
    assert [node.path for node in graph.jobs()] == [
        "/nightly/extract",
        "/nightly/transform",
        "/nightly/load/step1",
        "/nightly/load/publish",
        "/nightly/notify",
    ]
    assert [n.name for n in graph.children("/nightly")] == ["extract", "transform", "load", "notify"]
    assert [n.path for n in graph.ancestors("/nightly/load/step1")] == ["/nightly", "/nightly/load"]


def test_every_dependency_and_parent_comes_before_its_node(catalog):
    graph = expand("nightly", catalog)
    position = {path: index for index, path in enumerate(graph.nodes)}
    for node in graph.nodes.values():
        assert all(position[dep] < position[node.path] for dep in node.after)
        if node.parent is not None:
            assert position[node.parent] < position[node.path]
            assert node.path in graph.nodes[node.parent].children


def test_structure_and_ids_of_nodes(catalog):
    graph = expand("nightly", catalog, run_id="uid-1")
    root = graph.node("/nightly")
    assert (root.kind, root.parent, root.expanded_from, root.actual_id, root.template_id) == (
        "jobnet",
        None,
        "nightly",
        "uid-1:/nightly",
        "nightly",
    )
    load = graph.node("/nightly/load")
    assert (load.kind, load.name, load.parent, load.after, load.expanded_from, load.template_id) == (
        "jobnet",
        "load",
        "/nightly",
        ("/nightly/transform",),
        "load-jobnet",
        "load-jobnet",
    )
    assert load.children == ("/nightly/load/step1", "/nightly/load/publish")
    publish = graph.node("/nightly/load/publish")
    assert publish.after == ("/nightly/load/step1",)
    assert publish.actual_id == "uid-1:/nightly/load/publish"
    assert publish.template_id == "load-jobnet/publish"
    assert graph.node("/nightly/notify").is_finally
    assert not graph.node("/nightly/extract").is_finally
    assert ";" not in "".join(n.actual_id + n.template_id for n in graph.nodes.values())
    assert expand("nightly", catalog).node("/nightly/extract").actual_id == "/nightly/extract"


def test_settings_are_inherited_nearest_first(catalog):
    graph = expand("nightly", catalog)
    extract = graph.node("/nightly/extract")
    assert extract.script == "/opt/extract.sh" and extract.args == ("--date", "today")
    assert extract.env == {"REGION": "us", "LEVEL": "nightly"}
    assert extract.host.address == "vm1.batch.example"
    assert (extract.timeout_seconds, extract.retry.dispatch_attempts) == (3600, 3)
    step1 = graph.node("/nightly/load/step1")
    # outer JobNet env < expanding job env < inner JobNet env < job env
    assert step1.env == {"REGION": "eu", "LEVEL": "load-jobnet", "BY": "load"}
    assert step1.host.address == "vm2.batch.example" and step1.working_dir == "/srv"
    publish = graph.node("/nightly/load/publish")
    assert publish.host.address == "vm1.batch.example"
    assert publish.timeout_seconds == 5 and step1.timeout_seconds == 3600


def test_a_jobnet_expanded_twice_gets_two_distinct_subtrees(catalog):
    catalog["twice"] = JobNetSpec.model_validate(
        {
            "host": VM1,
            "jobs": [{"name": "a", "expand": "load-jobnet"}, {"name": "b", "expand": "load-jobnet", "after": ["a"]}],
        }
    )
    graph = expand("twice", catalog, "r")
    assert [n.path for n in graph.jobs()] == [
        "/twice/a/step1",
        "/twice/a/publish",
        "/twice/b/step1",
        "/twice/b/publish",
    ]
    assert graph.node("/twice/a/step1").template_id == graph.node("/twice/b/step1").template_id == "load-jobnet/step1"
    assert job_count("twice", catalog) == 4
    assert job_count("nightly", catalog) == 5


def test_nodes_are_immutable_and_equal_to_validated_ones(catalog):
    node = expand("nightly", catalog).node("/nightly/transform")
    with pytest.raises(ValueError):
        node.name = "other"  # type: ignore[misc]
    assert RunNode.model_validate(node.model_dump()) == node


def test_invalid_jobnet_raises_with_every_problem(catalog):
    catalog["broken"] = JobNetSpec.model_validate(
        {"jobs": [{"name": "a", "expand": "ghost"}, {"name": "b", "script": "/b"}]}
    )
    with pytest.raises(ExpansionError) as caught:
        expand("broken", catalog)
    assert [str(p) for p in caught.value.problems] == [
        "JobNet/broken spec.jobs[0].expand: job 'a' expands JobNet 'ghost', which does not exist",
        "JobNet/broken spec.jobs[1]: job 'b' has no host: set host on the job, spec.host on JobNet 'broken', "
        "or a host on a JobNet or job that expands it",
    ]
    with pytest.raises(ExpansionError, match="JobNet 'missing' does not exist"):
        expand("missing", catalog)


def test_unknown_path_names_the_path(catalog):
    with pytest.raises(KeyError, match="/nightly/nope"):
        expand("nightly", catalog).node("/nightly/nope")


def test_copying_one_node_with_changes_leaves_the_others_alone(catalog):
    graph = expand("nightly", catalog)
    extract, transform = graph.node("/nightly/extract"), graph.node("/nightly/transform")
    changed = extract.model_copy(update={"name": "renamed"})
    assert changed.name == "renamed" and extract.name == "extract" and transform.name == "transform"
    assert transform.model_fields_set == set(RunNode.model_fields)


def test_job_count_refuses_missing_and_cyclic_expansions(catalog):
    catalog["outer"] = JobNetSpec.model_validate({"jobs": [{"name": "a", "expand": "inner"}]})
    catalog["inner"] = JobNetSpec.model_validate({"jobs": [{"name": "b", "expand": "deleted"}]})
    with pytest.raises(ExpansionError, match="JobNet/inner: expands JobNet 'deleted', which does not exist"):
        job_count("outer", catalog)
    catalog["inner"] = JobNetSpec.model_validate({"jobs": [{"name": "b", "expand": "outer"}]})
    with pytest.raises(ExpansionError, match="expansion cycle: outer -> inner -> outer"):
        job_count("outer", catalog)
    with pytest.raises(ExpansionError, match="JobNet 'nope' does not exist"):
        job_count("nope", catalog)
