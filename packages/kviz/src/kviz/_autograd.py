"""The autograd graph of one forward pass, drawn by torchviz.

torchviz walks the graph recursively (one Python frame per backward node), which hits
``RecursionError`` on deep models at Python's default limit; the limit is raised for that
walk alone, sized from an iterative count of the graph's nodes.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._forward import forward_error, kept_modes
from ._inputs import ExampleInput
from ._trace import flat_tensors

__all__ = ["autograd_dot", "count_autograd_nodes"]

_LIMIT_LOCK = threading.Lock()


def count_autograd_nodes(roots: list[Any]) -> int:
    """How many backward nodes are reachable from ``roots`` (walked without recursion)."""
    seen: set[int] = set()
    stack = [r for r in roots if r is not None]
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        for nxt, _ in getattr(fn, "next_functions", ()):
            if nxt is not None and id(nxt) not in seen:
                stack.append(nxt)
    return len(seen)


@contextmanager
def _recursion_limit(at_least: int) -> Iterator[None]:
    with _LIMIT_LOCK:
        old = sys.getrecursionlimit()
        if at_least > old:
            sys.setrecursionlimit(at_least)
        try:
            yield
        finally:
            sys.setrecursionlimit(old)


def autograd_dot(
    model: nn.Module, example: ExampleInput, *, show_shapes: bool, rankdir: str, dpi: int
) -> str:
    """DOT source of the autograd graph of ``model`` on ``example`` (torchviz.make_dot).

    Raises:
        ImportError: torchviz cannot be imported.
        ValueError: no output depends on anything that requires grad, or the forward failed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchviz imports distutils
        try:
            import torchviz
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError(
                f"graph='autograd' needs torchviz (pip install torchviz): {exc}"
            ) from exc
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
    nodes = count_autograd_nodes([t.grad_fn for t in outs])
    params = {name: p for name, p in model.named_parameters()}
    # torchviz recurses once per node, a few frames deep each time.
    with _recursion_limit(sys.getrecursionlimit() + 4 * nodes + 200), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchviz's LooseVersion
        dot = torchviz.make_dot(
            tuple(outs) if len(outs) > 1 else outs[0], params=params, show_attrs=show_shapes
        )
        dot.graph_attr.update(rankdir=rankdir, dpi=str(dpi))
        source: str = dot.source
    return source
