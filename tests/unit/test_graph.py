"""The one DAG routine: topological order or one concrete cycle."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobnet.core.graph import CycleError, format_cycle, topological_order


def order_of(edges: dict[str, list[str]]) -> list[str]:
    return topological_order(edges, lambda node: edges[node])


def assert_is_cycle(cycle: tuple, edges: dict) -> None:
    """Each node of ``cycle`` is a dependency of the next, and it closes on itself."""
    assert len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1, f"cycle repeats a node: {cycle}"
    for dependency, dependent in zip(cycle, cycle[1:], strict=False):
        assert dependency in edges[dependent], f"{dependent} does not depend on {dependency}"


def test_orders_dependencies_first_and_keeps_given_order_for_ties():
    assert order_of({"c": ["b"], "b": ["a"], "a": []}) == ["a", "b", "c"]
    assert order_of({"x": [], "y": [], "z": ["x"]}) == ["x", "y", "z"]


def test_reports_a_three_node_cycle_as_a_path_in_execution_order():
    edges = {"extract": ["load"], "transform": ["extract"], "load": ["transform"], "other": []}
    with pytest.raises(CycleError) as caught:
        order_of(edges)
    assert caught.value.cycle == ("extract", "transform", "load", "extract")
    assert str(caught.value) == "cycle: extract -> transform -> load -> extract"


def test_self_dependency_is_a_cycle_of_one():
    with pytest.raises(CycleError) as caught:
        order_of({"a": ["a"]})
    assert caught.value.cycle == ("a", "a")


def test_dependencies_outside_the_graph_are_ignored():
    assert order_of({"a": ["ghost"], "b": ["a"]}) == ["a", "b"]


def test_node_downstream_of_a_cycle_is_not_reported_as_on_it():
    edges = {"a": ["b"], "b": ["a"], "after-cycle": ["a"]}
    with pytest.raises(CycleError) as caught:
        order_of(edges)
    assert set(caught.value.cycle) == {"a", "b"}


def test_format_cycle():
    assert format_cycle(["x", "y", "x"]) == "x -> y -> x"


def test_large_chain_is_linear_enough_to_finish():
    # 100k nodes in one chain: a quadratic algorithm would not finish in any sane time.
    size = 100_000
    names = [f"n{i}" for i in range(size)]
    edges = {name: ([names[i - 1]] if i else []) for i, name in enumerate(names)}
    started = time.monotonic()
    assert order_of(edges)[-1] == names[-1]
    edges[names[0]] = [names[-1]]
    with pytest.raises(CycleError) as caught:
        order_of(edges)
    assert len(caught.value.cycle) == size + 1
    assert time.monotonic() - started < 60, "sanity bound only; see benchmarks for timings"


@st.composite
def dags(draw, min_nodes: int = 1):
    """A random DAG: node i may only depend on nodes with a smaller index (then shuffled)."""
    size = draw(st.integers(min_value=min_nodes, max_value=40))
    edges = {}
    for index in range(size):
        deps = draw(st.lists(st.integers(min_value=0, max_value=max(index - 1, 0)), max_size=4)) if index else []
        edges[index] = sorted(set(deps))
    order = draw(st.permutations(list(range(size))))
    return {node: edges[node] for node in order}


@settings(max_examples=200, deadline=None)
@given(dags())
def test_property_order_respects_every_edge(edges):
    order = topological_order(edges, lambda node: edges[node])
    assert sorted(order) == sorted(edges)
    position = {node: index for index, node in enumerate(order)}
    for node, deps in edges.items():
        for dependency in deps:
            assert position[dependency] < position[node]


@settings(max_examples=200, deadline=None)
@given(dags(min_nodes=2), st.data())
def test_property_planted_cycle_is_found_and_is_real(edges, data):
    nodes = list(edges)
    length = data.draw(st.integers(min_value=1, max_value=min(len(nodes), 6)))
    members = data.draw(st.permutations(nodes))[:length]
    planted = {node: list(deps) for node, deps in edges.items()}
    for dependency, dependent in zip(members, members[1:] + members[:1], strict=True):
        planted[dependent].append(dependency)
    with pytest.raises(CycleError) as caught:
        topological_order(planted, lambda node: planted[node])
    assert_is_cycle(caught.value.cycle, planted)
