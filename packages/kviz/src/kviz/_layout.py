"""Turn a recorded ``Trace`` into what is drawn or tabulated at a given nesting depth.

A module call deeper than the depth limit, or one that is a layer (no module calls inside
it), *collapses*: everything recorded inside it is drawn as that one node. A container call
above the limit *expands*: it becomes a cluster (plot) or a heading row (summary) and its
contents are drawn. Edges are re-pointed accordingly and de-duplicated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import nn

from ._trace import INPUT, MODULE, OUTPUT, Node, Trace, is_plain_sequential, is_script

__all__ = ["Edge", "Layout", "layout", "range_bounds", "resolve_depth", "static_trace"]


class Edge(NamedTuple):
    """A tensor flowing from output ``pos`` of node ``src`` into node ``dst``."""

    src: int
    dst: int
    pos: int


@dataclass
class Layout:
    """The nodes and edges to show, and the expanded containers (clusters)."""

    trace: Trace
    shown: list[Node]
    edges: list[Edge]
    # expanded container call index -> the shown nodes and sub-clusters directly inside it
    clusters: dict[int, list[int]] = field(default_factory=dict)
    # node index -> index of the innermost expanded container holding it (-1: top level)
    owner: dict[int, int] = field(default_factory=dict)
    # module id -> how many of its calls are shown
    calls: dict[int, int] = field(default_factory=dict)

    def node(self, idx: int) -> Node:
        return self.trace.nodes[idx]

    def is_chain(self) -> bool:
        """True when the graph is one input followed by a simple chain of distinct layers."""
        inputs = [n for n in self.shown if n.kind == INPUT]
        if len(inputs) > 1 or any(c > 1 for c in self.calls.values()):
            return False
        nodes = self.trace.nodes
        order = [n.idx for n in self.shown if n.kind != OUTPUT]
        into: dict[int, list[int]] = {}
        out_degree: dict[int, int] = {}
        for e in self.edges:
            if nodes[e.dst].kind == OUTPUT:
                continue
            into.setdefault(e.dst, []).append(e.src)
            out_degree[e.src] = out_degree.get(e.src, 0) + 1
        for i, idx in enumerate(order):
            sources = into.get(idx, [])
            if out_degree.get(idx, 0) > 1 or len(sources) > 1:
                return False
            if i > 0 and (not sources or sources[0] != order[i - 1]):
                return False
        return True


def resolve_depth(depth: int | None, expand_nested: bool) -> float:
    """The nesting limit: ``depth`` if given, else 1 (Keras) or unlimited (expand_nested)."""
    if depth is None:
        return math.inf if expand_nested else 1
    return depth


def layout(trace: Trace, limit: float) -> Layout:
    """Compute the shown nodes, edges and clusters of ``trace`` at nesting ``limit``."""
    nodes = trace.nodes
    n = len(nodes)
    rep = list(range(n))
    sink: list[int] = [-1] * n  # the collapsed call that absorbs a node's descendants
    expanded = [False] * n
    for node in nodes:
        i = node.idx
        p = node.parent
        if p >= 0 and sink[p] >= 0:
            rep[i] = sink[p]
            sink[i] = sink[p]
            continue
        if node.kind == MODULE:
            if node.atomic or (node.depth >= limit and node.depth > 0):
                sink[i] = i
            else:
                expanded[i] = True

    def source(idx: int, pos: int) -> tuple[int, int]:
        # Follow containers that returned a tensor they did not produce; then collapse.
        seen = 0
        while expanded[idx] and seen < n:
            through = nodes[idx].passthrough
            real = through.get(pos) if through else None
            if real is None:
                break
            idx, pos = real
            seen += 1
        r = rep[idx]
        if r != idx:
            out_map = nodes[r].out_map
            pos = out_map.get((idx, pos), 0) if out_map else 0
        return r, pos

    shown = [node for node in nodes if rep[node.idx] == node.idx and not expanded[node.idx]]
    edges: list[Edge] = []
    seen_edges: set[tuple[int, int, int]] = set()
    for node in nodes:
        if expanded[node.idx]:
            continue  # its contents carry its edges
        dst = rep[node.idx]
        for src_idx, src_pos in node.inputs:
            if rep[src_idx] == src_idx and not expanded[src_idx]:
                src, pos = src_idx, src_pos  # the common case, without a call
            else:
                src, pos = source(src_idx, src_pos)
            if src == dst or expanded[src]:
                continue
            key = (src, dst, pos)
            if key not in seen_edges:
                seen_edges.add(key)
                edges.append(Edge(src, dst, pos))

    result = Layout(trace, shown, edges)
    for node in nodes:
        i = node.idx
        if not (expanded[i] or (rep[i] == i)) or (expanded[i] and node.parent < 0):
            continue  # absorbed, or the root container (the whole model)
        owner = node.parent
        while owner >= 0 and not (expanded[owner] and nodes[owner].parent >= 0):
            owner = nodes[owner].parent
        result.owner[i] = owner
        if expanded[i]:
            result.clusters.setdefault(i, [])
        if owner >= 0:
            result.clusters.setdefault(owner, []).append(i)
    for node in shown:
        if node.kind == MODULE and node.module is not None:
            mid = id(node.module)
            result.calls[mid] = result.calls.get(mid, 0) + 1
    return result


def static_trace(model: nn.Module) -> Trace:
    """A trace built from the module tree alone (no forward pass), for ``nn.Sequential``.

    Children of plain ``nn.Sequential`` containers are chained in order; any other module
    is one layer. Shapes are unknown.
    """
    trace = Trace(model)
    nodes = trace.nodes
    all_names: dict[int, list[str]] = {}  # every name of each module, first name first
    for name, m in model.named_modules(remove_duplicate=False):
        all_names.setdefault(id(m), []).append(name)
    nodes.append(Node(0, INPUT, "input", "Input", -1, 0))

    def visit(module: nn.Module, parent: int, prev: tuple[int, int]) -> tuple[int, int]:
        # Iterative over children, recursive over nesting (bounded by the module tree).
        idx = len(nodes)
        depth = nodes[parent].depth + 1 if parent >= 0 else 0
        names = all_names.get(id(module), [""])
        node = Node(idx, MODULE, names[0], type(module).__name__, parent, depth)
        node.module = module
        node.inputs = [prev]
        node.shared = len(names) > 1
        nodes.append(node)
        children = [] if is_script(module) else list(module.children())
        if children and is_plain_sequential(module):
            if parent >= 0:
                nodes[parent].has_child = True
            last = prev
            for child in children:
                last = visit(child, idx, last)
                node.has_child = True
            if last[0] > idx:
                node.out_map = {last: 0}
            else:
                node.passthrough = {0: last}
            return last
        node.atomic = True
        return (idx, 0)

    visit(model, -1, (0, 0))
    calls: dict[int, int] = {}
    for node in nodes:
        if node.module is not None:
            node.call_index = calls.get(id(node.module), 0)
            calls[id(node.module)] = node.call_index + 1
    return trace


def range_bounds(names: list[str], layer_range: Any) -> tuple[int, int]:
    """Keras's ``layer_range``: the ``[start, stop)`` indices of ``names`` (the top-level
    layers, in order) from the first name matching ``layer_range[0]`` to the last matching
    ``layer_range[1]`` (``re.match``, so exact names and regex patterns both work).
    ``layer_range`` has passed ``check_range`` (callers check it before the forward pass).

    Raises:
        ValueError: a pattern is invalid or matches no layer name.
    """
    try:
        lower = [i for i, name in enumerate(names) if re.match(layer_range[0], name)]
        upper = [i for i, name in enumerate(names) if re.match(layer_range[1], name)]
    except re.error as exc:
        raise ValueError(
            f"layer_range holds an invalid pattern ({exc}), got {layer_range!r}"
        ) from None
    if not lower or not upper:
        raise ValueError(
            f"layer_range {list(layer_range)!r} matches no layer name; the layers are {names!r}"
        )
    if min(lower) > max(upper):
        return min(upper), max(lower) + 1
    return min(lower), max(upper) + 1


def check_range(layer_range: Any) -> None:
    """Check the form of Keras's ``layer_range``: None or a pair of strings.

    Raises:
        TypeError: not a list or tuple of strings. ValueError: not two of them.
    """
    if layer_range is None:
        return
    if isinstance(layer_range, (str, bytes)) or not isinstance(layer_range, Sequence):
        raise TypeError(
            f"layer_range must be a list or tuple of two layer names (or patterns), "
            f"got {layer_range!r}"
        )
    if len(layer_range) != 2:
        raise ValueError(
            f"layer_range must hold 2 names (start and end layer), got {len(layer_range)}: "
            f"{list(layer_range)!r}"
        )
    if not all(isinstance(p, str) for p in layer_range):
        raise TypeError(f"layer_range must hold strings only, got {list(layer_range)!r}")
