"""Lay out an FSM graph for SVG: layered (Sugiyama) layout by grandalf, pure Python.

The start and the end are two small round nodes; self-loops (a retry, a rate-limited
re-run) are left out of the layout and drawn as a loop on their step; an edge only
transitions no step made took (a timeout, a lost last lease, a cancel from outside) is
dashed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout

from gen_durable.client.graph import FsmGraph

START = "\x00start"
END = "\x00end"
_CHAR = 7.5
_PAD = 24.0
_HEIGHT = 44.0
_MARGIN = 30.0


class _Box:
    """The size grandalf reads and the position it writes for one vertex."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _Route:
    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: Sequence[tuple[float, float]]) -> None:
        self.points = list(points)


@attrs.frozen
class Node:
    """A step (or the start/end) placed at (x, y), its centre."""

    name: str
    label: str
    x: float
    y: float
    w: float
    h: float
    waiting: int
    """Unfinished instances at this step now."""
    declared: bool
    loops: str
    """The label of its self-loop ('' when none)."""

    @property
    def terminal(self) -> bool:
        """True for the start and end markers."""
        return self.name in (START, END)


@attrs.frozen
class Line:
    """An edge as a polyline, with its label near the middle."""

    path: str
    label: str
    lx: float
    ly: float
    outside: bool = False
    """Every transition it stands for was made by no step (a timeout, the reaper, a
    cancel from outside): drawn dashed."""


@attrs.frozen
class Drawing:
    """A laid-out graph and the size of its canvas."""

    nodes: tuple[Node, ...]
    lines: tuple[Line, ...]
    width: float
    height: float


def _label(kinds: dict[str, int]) -> str:
    named = {"started" if kind == "start" else kind: n for kind, n in kinds.items()}
    return ", ".join(f"{kind} {n}" for kind, n in sorted(named.items()))


def layout(graph: FsmGraph) -> Drawing:
    """Place the steps and transitions of ``graph`` (edges merged per pair of steps)."""
    pairs: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    loops: dict[str, dict[str, int]] = defaultdict(dict)
    stepped: set[tuple[str, str]] = set()  # pairs a step's own transition took
    for e in graph.edges:
        source = START if e.source is None else e.source
        target = END if e.target is None else e.target
        bucket = loops[source] if source == target else pairs[(source, target)]
        bucket[e.kind] = bucket.get(e.kind, 0) + e.count
        if not e.outside:
            stepped.add((source, target))
    names = list(graph.steps)
    if not graph.edges and graph.initial is not None:
        pairs[(START, graph.initial)] = {}
    for source, target in pairs:
        for name in (source, target):
            if name not in names:
                names.append(name)
    waiting = {step: sum(by.values()) for step, by in graph.at_step.items()}
    vertices: dict[str, Vertex] = {}
    for name in names:
        terminal = name in (START, END)
        width = 22.0 if terminal else max(90.0, _CHAR * len(name) + _PAD)
        vertex = Vertex(name)
        vertex.view = _Box(width, 22.0 if terminal else _HEIGHT)
        vertices[name] = vertex
    edge_of: dict[tuple[str, str], Any] = {}
    for pair in pairs:
        edge = Edge(vertices[pair[0]], vertices[pair[1]])
        edge.view = _Route()
        edge_of[pair] = edge
    g = Graph(list(vertices.values()), list(edge_of.values()))
    offset = 0.0
    for component in g.C:
        sug = SugiyamaLayout(component)
        sug.xspace, sug.yspace = 40, 60
        sug.init_all()
        sug.draw()
        xs = [v.view.xy[0] - v.view.w / 2 for v in component.sV]
        shift = offset - min(xs)
        for v in component.sV:
            v.view.xy = (v.view.xy[0] + shift, v.view.xy[1])
        for e in component.sE:
            e.view.points = [(x + shift, y) for x, y in e.view.points]
        offset = max(v.view.xy[0] + v.view.w / 2 for v in component.sV) + 60.0
    nodes = tuple(
        Node(
            name=name,
            label={START: "start", END: "end"}.get(name, name),
            x=v.view.xy[0] + _MARGIN,
            y=v.view.xy[1] + _MARGIN,
            w=v.view.w,
            h=v.view.h,
            waiting=waiting.get(name, 0),
            declared=name in graph.declared,
            loops=_label(loops.get(name, {})),
        )
        for name, v in vertices.items()
    )
    boxes = {n.name: n for n in nodes}
    lines = []
    for pair, edge in edge_of.items():
        points = [(x + _MARGIN, y + _MARGIN) for x, y in edge.view.points]
        points[0] = _clip(points[0], points[1], boxes[pair[0]])
        points[-1] = _clip(points[-1], points[-2], boxes[pair[1]])
        bend = 0.0
        if len(points) == 2 and (pair[1], pair[0]) in pairs:  # both ways: two arcs
            bend = 28.0
        line = _line(points, bend, _label(pairs[pair]))
        lines.append(attrs.evolve(line, outside=bool(pairs[pair]) and pair not in stepped))
    width = max((n.x + n.w / 2 for n in nodes), default=0.0) + _MARGIN + 120
    height = max((n.y + n.h / 2 for n in nodes), default=0.0) + _MARGIN
    return Drawing(nodes=nodes, lines=tuple(lines), width=width, height=height)


def _clip(
    centre: tuple[float, float], toward: tuple[float, float], box: Node
) -> tuple[float, float]:
    """Where the segment from a node's centre toward a point leaves the node's box."""
    dx, dy = toward[0] - centre[0], toward[1] - centre[1]
    if dx == 0 and dy == 0:
        return centre
    scale = min(
        (box.w / 2 + 2) / abs(dx) if dx else float("inf"),
        (box.h / 2 + 2) / abs(dy) if dy else float("inf"),
    )
    scale = min(scale, 1.0)
    return (centre[0] + dx * scale, centre[1] + dy * scale)


def _line(points: list[tuple[float, float]], bend: float, label: str) -> Line:
    """A polyline (or, with ``bend``, an arc to its right) and where its label goes."""
    if bend:
        (x0, y0), (x1, y1) = points
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1.0)
        cx = (x0 + x1) / 2 - (y1 - y0) / length * bend
        cy = (y0 + y1) / 2 + (x1 - x0) / length * bend
        path = f"M {x0:.1f} {y0:.1f} Q {cx:.1f} {cy:.1f} {x1:.1f} {y1:.1f}"
        return Line(
            path=path, label=label, lx=((x0 + x1) / 2 + cx) / 2, ly=((y0 + y1) / 2 + cy) / 2
        )
    mid = points[len(points) // 2 - 1 : len(points) // 2 + 1]
    lx = sum(p[0] for p in mid) / len(mid)
    ly = sum(p[1] for p in mid) / len(mid)
    path = "M " + " L ".join(f"{x:.1f} {y:.1f}" for x, y in points)
    return Line(path=path, label=label, lx=lx, ly=ly)
