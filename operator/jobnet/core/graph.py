"""The one DAG routine of jobnet: a topological order, or one concrete cycle.

Used for the jobs of one JobNet (edges from ``after``) and for the expansion graph across
JobNets (edges from ``expand``). Kahn's algorithm, linear in nodes + edges, deterministic:
ties are broken by the order in which nodes were given, so the same input always gives the
same order and the same reported cycle.

Edges are given as *dependencies*: ``dependencies[n]`` lists the nodes that must come before
``n``. Dependencies on nodes that are not in ``nodes`` are ignored here (validation reports
them as dangling references, with their field paths).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

Node = TypeVar("Node", bound=Hashable)


class CycleError(ValueError, Generic[Node]):
    """The graph has a cycle; ``cycle`` is one concrete cycle, first node repeated at the end.

    The cycle is listed in execution order: each node is a dependency of the next one, so
    ``[extract, transform, extract]`` means transform runs after extract and extract after
    transform.
    """

    def __init__(self, cycle: Sequence[Node]) -> None:
        self.cycle: tuple[Node, ...] = tuple(cycle)
        super().__init__(f"cycle: {format_cycle(self.cycle)}")


def format_cycle(cycle: Iterable[object]) -> str:
    """``extract -> transform -> extract``."""
    return " -> ".join(str(node) for node in cycle)


def topological_order(
    nodes: Iterable[Node],
    dependencies: Callable[[Node], Iterable[Node]],
) -> list[Node]:
    """Return ``nodes`` ordered so that every node comes after all of its dependencies.

    Raises ``CycleError`` with one concrete cycle when no such order exists.
    """
    ordered_nodes = list(dict.fromkeys(nodes))
    known = set(ordered_nodes)
    dependents: dict[Node, list[Node]] = {node: [] for node in ordered_nodes}
    missing_count: dict[Node, int] = {}
    for node in ordered_nodes:
        count = 0
        for dependency in dependencies(node):
            if dependency in known:
                dependents[dependency].append(node)
                count += 1
        missing_count[node] = count

    ready = deque(node for node in ordered_nodes if missing_count[node] == 0)
    order: list[Node] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for dependent in dependents[node]:
            missing_count[dependent] -= 1
            if missing_count[dependent] == 0:
                ready.append(dependent)

    if len(order) < len(ordered_nodes):
        raise CycleError(_find_cycle(ordered_nodes, missing_count, dependencies, known))
    return order


def _find_cycle(
    ordered_nodes: list[Node],
    missing_count: dict[Node, int],
    dependencies: Callable[[Node], Iterable[Node]],
    known: set[Node],
) -> list[Node]:
    """Walk dependencies among the nodes Kahn could not order until one repeats.

    Every unordered node still waits for at least one unordered dependency, so the walk
    never gets stuck and must revisit a node within len(nodes) steps.
    """
    unordered = {node for node in ordered_nodes if missing_count[node] > 0}
    start = next(node for node in ordered_nodes if node in unordered)
    position: dict[Node, int] = {}
    walk: list[Node] = []
    node = start
    while node not in position:
        position[node] = len(walk)
        walk.append(node)
        node = next(dep for dep in dependencies(node) if dep in known and dep in unordered)
    # The walk goes from a node to its dependency: reverse it into execution order.
    cycle = walk[position[node] :]
    cycle.reverse()
    # Start the reported cycle at its earliest given node, so the report is deterministic.
    on_cycle = set(cycle)
    first = cycle.index(next(node for node in ordered_nodes if node in on_cycle))
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]
