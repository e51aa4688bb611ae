"""The autograd graph of one forward pass, walked by kviz itself.

From each output's ``grad_fn``, ``next_functions`` lead back to the parameters
(``AccumulateGrad`` nodes) and inputs: the graph ``loss.backward()`` would run. The walk
is iterative, so a model of any depth draws without ``RecursionError``, and needs nothing
beyond torch (torchviz, which drew it before, imports ``distutils``, gone in Python 3.12).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._dot import quote
from ._forward import forward_error, kept_modes
from ._inputs import ExampleInput
from ._nest import flat_tensors

__all__ = ["autograd_dot", "count_autograd_nodes"]

_PARAM_FILL = "lightblue"
_OUTPUT_FILL = "darkolivegreen1"
_MAX_ATTR = 40  # longest attribute value shown in a node


def count_autograd_nodes(roots: list[Any]) -> int:
    """How many backward nodes are reachable from ``roots`` (walked without recursion)."""
    return len(_walk(roots))


def _walk(roots: list[Any]) -> list[Any]:
    """Every backward node reachable from ``roots``, each once, outputs first."""
    seen: set[int] = set()
    order: list[Any] = []
    stack = [r for r in reversed(roots) if r is not None]
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        order.append(fn)
        for nxt, _ in reversed(getattr(fn, "next_functions", ())):
            if nxt is not None and id(nxt) not in seen:
                stack.append(nxt)
    return order


def _size(shape: Any) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def _attributes(fn: Any) -> list[str]:
    """``name: value`` of a backward node's saved values (tensors by their shape)."""
    lines = []
    for attr in dir(fn):
        if not attr.startswith("_saved_"):
            continue
        try:
            value = getattr(fn, attr)
        except Exception:  # a freed saved tensor raises when read
            continue
        text = _size(value.shape) if isinstance(value, torch.Tensor) else str(value)
        if len(text) > _MAX_ATTR:
            text = text[: _MAX_ATTR - 3] + "..."
        lines.append(f"{attr[len('_saved_') :]}: {text}")
    return lines


def autograd_dot(
    model: nn.Module, example: ExampleInput, *, show_shapes: bool, rankdir: str, dpi: float
) -> str:
    """DOT source of the autograd graph of ``model`` on ``example``.

    Parameters are light blue boxes named as in ``model.named_parameters()`` with their
    shape, outputs green boxes with theirs, backward functions grey boxes (with their
    saved values when ``show_shapes``).

    Raises:
        ValueError: no output depends on anything that requires grad.
        kviz.ForwardError: the forward pass failed.
    """
    args, kwargs = example
    with kept_modes(model), torch.enable_grad():
        model.eval()
        try:
            output = model(*args, **kwargs)
        except Exception as exc:
            raise forward_error(model, example, exc) from exc
    outs = [t for t in flat_tensors(output, []) if t.grad_fn is not None]
    if not outs:
        raise ValueError(
            f"graph='autograd': no output of {type(model).__name__} has an autograd graph "
            f"(no parameter requires grad and no input does); use graph='layers'"
        )
    names = {id(p): name for name, p in model.named_parameters()}
    order = _walk([t.grad_fn for t in outs])
    ids = {id(fn): f"g{i}" for i, fn in enumerate(order)}
    lines = [
        f"digraph {quote(type(model).__name__ + ' (autograd)')} {{",
        f'  graph [rankdir={rankdir}, dpi={dpi:g}, size="12,12"];',
        "  node [shape=box, style=filled, align=left, fontsize=10, height=0.2, "
        'ranksep=0.1, fontname="monospace", fillcolor=lightgrey];',
    ]
    edges: list[str] = []
    for fn in order:
        node_id = ids[id(fn)]
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            name = names.get(id(variable), "")
            label = f"{name}\n{_size(variable.shape)}" if name else _size(variable.shape)
            lines.append(f"  {node_id} [label={quote(label)}, fillcolor={_PARAM_FILL}];")
        else:
            label = type(fn).__name__
            if show_shapes:
                attrs = _attributes(fn)
                if attrs:
                    label += "\n" + "\n".join(attrs)
            lines.append(f"  {node_id} [label={quote(label)}];")
        for nxt, _ in getattr(fn, "next_functions", ()):
            if nxt is not None:
                edges.append(f"  {ids[id(nxt)]} -> {node_id};")
    for i, t in enumerate(outs):
        label = f"output {i}\n{_size(t.shape)}" if len(outs) > 1 else f"output\n{_size(t.shape)}"
        lines.append(f"  o{i} [label={quote(label)}, fillcolor={_OUTPUT_FILL}];")
        edges.append(f"  {ids[id(t.grad_fn)]} -> o{i};")
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"
