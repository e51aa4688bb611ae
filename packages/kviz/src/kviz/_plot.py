"""``plot_model`` and ``model_to_dot``: Keras's model diagram for any ``nn.Module``."""

from __future__ import annotations

import logging
import math
import numbers
import os
import warnings
from typing import Any

from torch import nn

from ._autograd import autograd_dot
from ._dot import layout_to_dot
from ._forward import checked_model, gc_paused, trace_model
from ._inputs import build_inputs
from ._layout import Layout, check_range, layout, range_bounds, resolve_depth, static_trace
from ._render import file_format, render
from ._summary import check_depth, unregistered_note
from ._trace import INPUT, OUTPUT, is_plain_sequential, is_script

__all__ = ["model_to_dot", "plot_model"]

logger = logging.getLogger("kviz")

_RANKDIRS = ("TB", "LR", "BT", "RL")
_GRAPHS = ("layers", "autograd")


def _check_dpi(dpi: Any) -> float:
    if isinstance(dpi, numbers.Real) and not isinstance(dpi, bool):
        value = float(dpi)
        if math.isfinite(value) and value > 0:
            return value
    raise ValueError(f"dpi must be a positive number, got {dpi!r}")


def _keep_outputs(lay: Layout) -> Layout:
    """Output nodes are drawn when they show something the layers do not: several outputs,
    or an output taken from a layer whose result also flows on (an LSTM's hidden state)."""
    nodes = lay.trace.nodes
    outputs = {n.idx for n in lay.shown if n.kind == OUTPUT}
    if not outputs:
        return lay
    feeds: dict[int, int] = {}
    for e in lay.edges:
        if e.dst not in outputs:
            feeds[e.src] = feeds.get(e.src, 0) + 1
    sources = [e.src for e in lay.edges if e.dst in outputs]
    keep = len(outputs) > 1 or any(feeds.get(s, 0) > 0 or nodes[s].kind == INPUT for s in sources)
    if keep:
        return lay
    return _restrict(lay, {n.idx for n in lay.shown if n.idx not in outputs} | set(lay.clusters))


def _restrict(lay: Layout, keep: set[int]) -> Layout:
    """``lay`` with only the nodes and clusters in ``keep``."""
    result = Layout(
        lay.trace,
        [n for n in lay.shown if n.idx in keep],
        [e for e in lay.edges if e.src in keep and e.dst in keep],
    )
    result.clusters = {
        c: [i for i in inner if i in keep] for c, inner in lay.clusters.items() if c in keep
    }
    result.owner = {i: o for i, o in lay.owner.items() if i in keep}
    result.calls = lay.calls
    return result


def _in_range(lay: Layout, layer_range: Any, root_label: str) -> Layout:
    """The part of ``lay`` Keras's ``layer_range`` selects (top-level layers from the first
    match of the start pattern to the last match of the end pattern, with their insides)."""
    nodes = lay.trace.nodes
    top = sorted(i for i, owner in lay.owner.items() if owner < 0)
    lo, hi = range_bounds([nodes[i].name or root_label for i in top], layer_range)
    chosen = set(top[lo:hi])
    keep = set()
    for i in lay.owner:
        j = i
        while lay.owner.get(j, -1) >= 0:
            j = lay.owner[j]
        if j in chosen:
            keep.add(i)
    return _restrict(lay, keep)


def _check(
    model: Any, rankdir: Any, dpi: Any, graph: Any, depth: Any
) -> tuple[nn.Module, float, int | None]:
    module = checked_model(model)
    if rankdir not in _RANKDIRS:
        raise ValueError(f"rankdir must be one of {list(_RANKDIRS)}, got {rankdir!r}")
    value = _check_dpi(dpi)
    if graph not in _GRAPHS:
        raise ValueError(f"graph must be one of {list(_GRAPHS)}, got {graph!r}")
    return module, value, check_depth(depth)


def _dot_source(
    model: nn.Module,
    show_shapes: bool,
    show_dtype: bool,
    show_layer_names: bool,
    rankdir: str,
    expand_nested: bool,
    dpi: Any,
    layer_range: Any,
    show_layer_activations: bool,
    show_trainable: bool,
    input_size: Any,
    input_data: Any,
    dtypes: Any,
    device: Any,
    depth: Any,
    graph: str,
    show_functional: bool,
) -> str:
    model, dpi_value, depth_value = _check(model, rankdir, dpi, graph, depth)
    check_range(layer_range)
    example = build_inputs(input_size, input_data, dtypes, device)
    if graph == "autograd":
        if example is None:
            raise ValueError(
                "graph='autograd' needs an example input: give input_size or input_data"
            )
        return autograd_dot(model, example, show_shapes=show_shapes, rankdir=rankdir, dpi=dpi_value)
    with gc_paused():
        if example is not None:
            trace = trace_model(model, example, functional=show_functional)
            note = unregistered_note(trace)
            if note:
                # This function, then model_to_dot / plot_model, then the user's call.
                warnings.warn(note, UserWarning, stacklevel=3)
        elif is_script(model) or is_plain_sequential(model) or not any(model.children()):
            trace = static_trace(model)
        else:
            raise ValueError(
                f"plot_model needs an example input to follow the tensors through "
                f"{type(model).__name__}.forward: give input_size (e.g. (1, 3, 32, 32)) or "
                f"input_data (only a plain nn.Sequential or a single layer can be drawn "
                f"without one)"
            )
        lay = _keep_outputs(layout(trace, resolve_depth(depth_value, expand_nested)))
        if layer_range is not None:
            lay = _in_range(lay, layer_range, type(model).__name__.lower())
        return layout_to_dot(
            lay,
            title=type(model).__name__,
            show_shapes=show_shapes,
            show_dtype=show_dtype,
            show_layer_names=show_layer_names,
            show_activations=show_layer_activations,
            show_trainable=show_trainable,
            rankdir=rankdir,
            dpi=dpi_value,
        )


def model_to_dot(
    model: nn.Module,
    show_shapes: bool = False,
    show_layer_names: bool = True,
    rankdir: str = "TB",
    expand_nested: bool = False,
    dpi: float = 96,
    *,
    show_dtype: bool = False,
    layer_range: Any = None,
    show_layer_activations: bool = False,
    show_trainable: bool = False,
    input_size: Any = None,
    input_data: Any = None,
    dtypes: Any = None,
    device: Any = None,
    depth: int | None = None,
    graph: str = "layers",
    show_functional: bool = False,
) -> str:
    """The DOT source of `model`'s diagram (what `plot_model` renders); no Graphviz
    needed. The arguments mean what they mean in `plot_model`.

    Returns:
        The DOT text (Keras returns a pydot graph; kviz has no pydot dependency).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad argument value, as in `plot_model`.
        kviz.ForwardError: the forward pass failed on the example input.

    Examples:
        >>> from torch import nn
        >>> text = model_to_dot(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        >>> text.count(" -> ")  # input -> 0 -> 1
        2
    """
    return _dot_source(
        model, show_shapes, show_dtype, show_layer_names, rankdir, expand_nested, dpi,
        layer_range, show_layer_activations, show_trainable, input_size, input_data,
        dtypes, device, depth, graph, show_functional,
    )  # fmt: skip


def plot_model(
    model: nn.Module,
    to_file: str | os.PathLike[str] = "model.png",
    show_shapes: bool = False,
    show_layer_names: bool = True,
    rankdir: str = "TB",
    expand_nested: bool = False,
    dpi: float = 96,
    layer_range: Any = None,
    show_layer_activations: bool = False,
    show_trainable: bool = False,
    show_dtype: bool = False,
    *,
    input_size: Any = None,
    input_data: Any = None,
    dtypes: Any = None,
    device: Any = None,
    depth: int | None = None,
    graph: str = "layers",
    show_functional: bool = False,
) -> Any:
    """Draw `model` as a graph of layers and write it to `to_file`, as Keras does.

    One node per module call (`name: Class`), one per functional op that merges tensors
    (`x + residual`, `torch.cat`, named after the block that ran it: `layer1.0.add`), one
    per model input; an edge wherever a tensor flows from one to the next, so skip
    connections and multi-input merges show. A module called more than once (a shared
    layer) gets one node per call, titled `(call i/n)`, joined to its other calls by a
    dashed line; a module registered under several parents is titled `(shared)` too.
    Ops that transform a single tensor (views, activations called as functions, indexing)
    are folded into the edge they sit on, unless `show_functional`. The model's outputs
    get nodes of their own when there are several, or when one is taken from a layer
    whose result also flows on (an LSTM's returned hidden state).

    Args:
        model: any `nn.Module`.
        to_file: output file; its extension picks the format: `.png`, `.svg`, `.pdf`,
            `.jpg`, `.gif`, `.ps`, `.eps`, or `.dot`/`.gv` for the DOT text (which needs
            no Graphviz).
        show_shapes: show each node's input and output shapes.
        show_layer_names: show module names (else only class names).
        rankdir: `'TB'` (vertical), `'LR'` (horizontal), `'BT'` or `'RL'`.
        expand_nested: draw nested modules as clusters holding their layers.
        dpi: dots per inch of the image (an int or a float).
        layer_range: two layer names or regex patterns, `[start, end]`: draw only the
            top-level layers from the first one matching `start` to the last one
            matching `end` (both included), as in Keras.
        show_layer_activations: show the activation of layers that have one (an
            activation module's own name, or a layer's `activation`/`nonlinearity`).
        show_trainable: show whether each layer's parameters are trainable (Y, N,
            partial).
        show_dtype: show each node's output dtype. The first seven arguments keep Keras
            2's positions (as `keras.utils.plot_model` documents them); Keras 2.11's
            additions follow, with `show_dtype` last (Keras 2.11 put it fourth, which
            would shift every Keras 2 positional call).
        input_size: the shape of an example input (as in `print_summary`); an example
            input is needed for anything but a plain `nn.Sequential`.
        input_data: an example input itself (tensor, tuple or dict), instead of a size.
        dtypes: dtypes for the inputs made from `input_size`.
        device: device the example input is created on (the model is not moved: give
            the device its parameters are on).
        depth: deepest nesting level drawn (default 1, or unlimited with expand_nested).
        graph: `'layers'` (default) or `'autograd'` for the autograd graph of one
            forward pass (backward functions, parameters by name, outputs).
        show_functional: draw every functional call between modules (`F.max_pool2d`,
            `torch.flatten`, `F.relu`, `x.view`) as a node of its own, so that each
            change of shape has a visible cause.

    Returns:
        An `IPython.display.Image` (`SVG` for .svg) when IPython is installed, for
        notebooks, as in Keras; else None. Nothing is returned for .pdf and .dot.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad argument value (each message names the argument).
        kviz.ForwardError: the forward pass failed on the example input.
        kviz.GraphvizNotFoundError: a format other than .dot and no runnable `dot` program.
        FileNotFoundError: the folder of `to_file` does not exist.

    Examples:
        >>> import os, tempfile
        >>> from torch import nn
        >>> path = os.path.join(tempfile.mkdtemp(), "model.dot")  # .png needs Graphviz
        >>> plot_model(nn.Sequential(nn.Linear(4, 2)), to_file=path) is None
        True
    """
    fmt = file_format(to_file)
    source = _dot_source(
        model, show_shapes, show_dtype, show_layer_names, rankdir, expand_nested, dpi,
        layer_range, show_layer_activations, show_trainable, input_size, input_data,
        dtypes, device, depth, graph, show_functional,
    )  # fmt: skip
    path = render(source, to_file, fmt)
    logger.info("wrote %s (%s)", path, fmt)
    if fmt in ("dot", "pdf", "ps", "eps"):
        return None
    try:
        from IPython import display  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    if fmt == "svg":
        return display.SVG(filename=str(path))
    return display.Image(filename=str(path))
