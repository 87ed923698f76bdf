"""The job network monitor's drawing: which nodes of a run graph are visible, and where they go.

A sub-jobnet is either *collapsed* (one box that stands for all its jobs) or *expanded* (its
children are drawn in its place, inside a frame). Edges follow ``after``: into an expanded
jobnet they go to its first nodes, out of it from its last ones; a ``finally`` node waits for
every normal node of its jobnet, drawn with dashed edges. The layered (Sugiyama) layout is
grandalf's; it grows faster than linearly, so at most :data:`MAX_DRAWN_NODES` nodes are drawn at
once (the monitor lists every job anyway, rendering only the rows in view). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout
from grandalf.routing import EdgeViewer

from jobnet.core.expansion import RunGraph

NODE_WIDTH = 180
NODE_HEIGHT = 56
#: Space between layers (room for a frame's title between them) and between nodes of a layer.
LAYER_SPACING = 56
NODE_SPACING = 36
#: Space between components laid out side by side, and around a frame.
GAP = 40
FRAME_PADDING = 14
#: Roughly how wide one character of a frame's title is (12 px font): a frame is wide enough for it.
TITLE_CHARACTER_WIDTH = 7.5
#: Above this many visible nodes nothing is drawn: grandalf needs about 0.2 s for 300, 1.8 s for 1,000.
MAX_DRAWN_NODES = 300
#: Sub-jobnets are expanded by default, shallowest first, while the drawing stays this small.
DEFAULT_VISIBLE_BUDGET = 60


@dataclass(frozen=True)
class VisibleGraph:
    """The nodes to draw (paths), and edges ``(from, to, dashed)`` between them."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, bool], ...]
    frames: tuple[str, ...]  # the expanded sub-jobnets, outermost first


@dataclass(frozen=True)
class PlacedNode:
    path: str
    x: float  # left
    y: float  # top


@dataclass(frozen=True)
class PlacedEdge:
    points: tuple[tuple[float, float], ...]
    dashed: bool


@dataclass(frozen=True)
class Frame:
    path: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    nodes: tuple[PlacedNode, ...] = ()
    edges: tuple[PlacedEdge, ...] = ()
    frames: tuple[Frame, ...] = ()
    #: Set instead of the rest when there were more than MAX_DRAWN_NODES visible nodes.
    too_large: int = 0
    notes: tuple[str, ...] = field(default=())


def default_expanded(graph: RunGraph, budget: int = DEFAULT_VISIBLE_BUDGET) -> frozenset[str]:
    """The sub-jobnets to expand when the person chose nothing: breadth first while the visible
    node count stays within ``budget`` (a small run opens fully, a large one collapsed)."""
    expanded: set[str] = set()
    visible = len(graph.nodes[graph.root].children)
    level = [graph.root]
    while level:
        following = []
        for parent in level:
            for child in graph.nodes[parent].children:
                node = graph.nodes[child]
                if node.kind != "jobnet":
                    continue
                grown = visible - 1 + len(node.children)
                if grown <= budget:
                    expanded.add(child)
                    visible = grown
                    following.append(child)
        level = following
    return frozenset(expanded)


def visible_graph(graph: RunGraph, expanded: Iterable[str]) -> VisibleGraph:
    """The drawing of ``graph`` with the jobnets in ``expanded`` opened (others collapsed; an
    expanded jobnet inside a collapsed one stays hidden)."""
    opened = set(expanded) | {graph.root}

    def is_open(path: str) -> bool:
        return graph.nodes[path].kind == "jobnet" and path in opened

    def firsts(path: str) -> list[str]:
        if not is_open(path):
            return [path]
        children = [graph.nodes[c] for c in graph.nodes[path].children]
        starts = [c.path for c in children if not c.after and not c.is_finally] or [c.path for c in children]
        return [leaf for start in starts for leaf in firsts(start)]

    def lasts(path: str) -> list[str]:
        if not is_open(path):
            return [path]
        children = [graph.nodes[c] for c in graph.nodes[path].children]
        awaited = {a for c in children for a in c.after}
        ends = [c.path for c in children if c.path not in awaited] or [c.path for c in children]
        return [leaf for end in ends for leaf in lasts(end)]

    nodes: list[str] = []
    frames: list[str] = []
    edges: list[tuple[str, str, bool]] = []
    pending = [graph.root]
    while pending:
        parent = pending.pop(0)
        if parent != graph.root:
            frames.append(parent)
        children = [graph.nodes[c] for c in graph.nodes[parent].children]
        normal_ends = [
            c.path for c in children if not c.is_finally and c.path not in {a for o in children for a in o.after}
        ]
        for child in children:
            if is_open(child.path):
                pending.append(child.path)
            else:
                nodes.append(child.path)
            sources = [(a, False) for a in child.after]
            if child.is_finally and not any(graph.nodes[a].is_finally for a in child.after):
                sources += [(end, True) for end in normal_ends]
            for source, dashed in sources:
                edges.extend((tail, head, dashed) for tail in lasts(source) for head in firsts(child.path))
    return VisibleGraph(tuple(nodes), tuple(dict.fromkeys(edges)), tuple(frames))


class _Box:
    """grandalf's view of a vertex: its size; grandalf sets ``xy`` (the centre)."""

    w = NODE_WIDTH
    h = NODE_HEIGHT
    xy: tuple[float, float] = (0.0, 0.0)


def layout(graph: RunGraph, visible: VisibleGraph) -> Layout:
    """Positions for ``visible``: each connected component laid out in layers (top to bottom),
    components side by side."""
    if len(visible.nodes) > MAX_DRAWN_NODES:
        return Layout(width=0, height=0, too_large=len(visible.nodes))
    vertices = {path: Vertex(path) for path in visible.nodes}
    for vertex in vertices.values():
        vertex.view = _Box()
    edges = []
    dashed: dict[Edge, bool] = {}
    for tail, head, is_dashed in visible.edges:
        edge = Edge(vertices[tail], vertices[head])
        edge.view = EdgeViewer()
        dashed[edge] = is_dashed
        edges.append(edge)
    placed: list[PlacedNode] = []
    routed: list[PlacedEdge] = []
    offset_x = 0.0
    height = 0.0
    for component in Graph(list(vertices.values()), edges).C:
        sugiyama = SugiyamaLayout(component)
        sugiyama.yspace, sugiyama.xspace = LAYER_SPACING, NODE_SPACING
        sugiyama.init_all()
        sugiyama.draw()
        xs = [v.view.xy[0] for v in component.sV]
        ys = [v.view.xy[1] for v in component.sV]
        left, top = min(xs) - NODE_WIDTH / 2, min(ys) - NODE_HEIGHT / 2
        shift_x, shift_y = offset_x - left + GAP, GAP - top
        for vertex in component.sV:
            x, y = vertex.view.xy
            placed.append(PlacedNode(vertex.data, x - NODE_WIDTH / 2 + shift_x, y - NODE_HEIGHT / 2 + shift_y))
        for edge in component.sE:
            points = getattr(edge.view, "_pts", [edge.v[0].view.xy, edge.v[1].view.xy])
            moved = [(x + shift_x, y + shift_y) for x, y in points]
            # Leave the source at its bottom and enter the target at its top.
            moved[0] = (moved[0][0], moved[0][1] + NODE_HEIGHT / 2)
            moved[-1] = (moved[-1][0], moved[-1][1] - NODE_HEIGHT / 2)
            routed.append(PlacedEdge(tuple(moved), dashed[edge]))
        offset_x += max(xs) - min(xs) + NODE_WIDTH + GAP
        height = max(height, max(ys) - min(ys) + NODE_HEIGHT + 2 * GAP)
    frames = _frames(graph, visible, placed)
    return Layout(width=offset_x + GAP, height=height, nodes=tuple(placed), edges=tuple(routed), frames=tuple(frames))


def _frames(graph: RunGraph, visible: VisibleGraph, placed: list[PlacedNode]) -> list[Frame]:
    """A frame around the visible nodes of each expanded sub-jobnet, wider the more it contains."""
    where = {node.path: node for node in placed}
    frames = []
    for path in visible.frames:
        inside = [where[p] for p in visible.nodes if p.startswith(path + "/")]
        if not inside:
            continue
        depth_below = max(p.path.count("/") for p in inside) - path.count("/") - 1
        pad = FRAME_PADDING * (1 + depth_below)
        left = min(n.x for n in inside) - pad
        top = min(n.y for n in inside) - pad - 12  # room for the frame's title
        title = f"{graph.nodes[path].name} [{graph.nodes[path].expanded_from}] · Succeeded    Stop"
        right = max(max(n.x for n in inside) + NODE_WIDTH + pad, left + TITLE_CHARACTER_WIDTH * len(title))
        bottom = max(n.y for n in inside) + NODE_HEIGHT + pad
        frames.append(Frame(path, left, top, right - left, bottom - top))
    return frames
