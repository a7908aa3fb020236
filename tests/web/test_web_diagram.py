"""The FSM diagram's layout (pure Python): every step placed once, edges merged per pair,
self-loops on their step, both directions of a pair drawn apart."""

from __future__ import annotations

from gen_durable.client.graph import FsmGraph, GraphEdge
from gen_durable.web.diagram import END, START, layout


def graph(*edges: GraphEdge, declared: tuple[str, ...] = ("a", "b", "c")) -> FsmGraph:
    return FsmGraph(
        fsm="t.T",
        declared=declared,
        initial=declared[0] if declared else None,
        edges=edges,
        at_step={"b": {"awaiting": 2, "available": 1}},
        history_mode="all",
    )


def test_layout_places_each_step_once_and_merges_edges() -> None:
    drawn = layout(
        graph(
            GraphEdge(None, "a", "start", 4),
            GraphEdge("a", "b", "next", 3),
            GraphEdge("a", "b", "await", 1),
            GraphEdge("b", "a", "next", 1),  # a cycle
            GraphEdge("b", "b", "retry", 2),  # a self-loop
            GraphEdge("b", "c", "next", 2),
            GraphEdge("c", None, "done", 2),
            GraphEdge("x", "c", "next", 1),  # a step the class no longer declares
        )
    )
    nodes = {n.name: n for n in drawn.nodes}
    assert set(nodes) == {"a", "b", "c", "x", START, END}
    assert len({(n.x, n.y) for n in drawn.nodes}) == len(nodes)
    assert nodes["b"].waiting == 3 and nodes["b"].loops == "retry 2"
    assert nodes["x"].declared is False and nodes["a"].declared is True
    labels = sorted(line.label for line in drawn.lines)
    assert labels == ["await 1, next 3", "done 2", "next 1", "next 1", "next 2", "started 4"]
    arcs = [line.path for line in drawn.lines if " Q " in line.path]
    assert len(arcs) == 2  # a -> b and b -> a, curved apart
    assert drawn.width > max(n.x for n in drawn.nodes)


def test_without_history_the_declared_steps_are_drawn_from_the_start() -> None:
    drawn = layout(graph())
    assert {n.name for n in drawn.nodes} == {"a", "b", "c", START}
    assert [line.label for line in drawn.lines] == [""]
    assert [n.name for n in layout(graph(declared=())).nodes] == ["b"]  # seen in the table
