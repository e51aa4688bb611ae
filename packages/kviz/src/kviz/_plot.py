"""``plot_model`` and ``model_to_dot``: Keras's model diagram for any ``nn.Module``."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ._autograd import autograd_dot
from ._dot import layout_to_dot
from ._forward import checked_model, gc_paused, trace_model
from ._inputs import build_inputs
from ._layout import layout, resolve_depth, static_trace
from ._render import file_format, render

__all__ = ["model_to_dot", "plot_model"]

_RANKDIRS = ("TB", "LR", "BT", "RL")
_GRAPHS = ("layers", "autograd")


def _check(model: Any, rankdir: Any, dpi: Any, graph: Any, depth: Any) -> nn.Module:
    module = checked_model(model, traced=True)
    if rankdir not in _RANKDIRS:
        raise ValueError(f"rankdir must be one of {list(_RANKDIRS)}; got {rankdir!r}")
    if not isinstance(dpi, int) or isinstance(dpi, bool) or dpi <= 0:
        raise ValueError(f"dpi must be a positive int; got {dpi!r}")
    if graph not in _GRAPHS:
        raise ValueError(f"graph must be one of {list(_GRAPHS)}; got {graph!r}")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth must be an int >= 1 or None; got {depth!r}")
    return module


def model_to_dot(
    model: nn.Module,
    show_shapes: bool = False,
    show_layer_names: bool = True,
    rankdir: str = "TB",
    expand_nested: bool = False,
    dpi: int = 96,
    *,
    input_size: Any = None,
    input_data: Any = None,
    dtypes: Any = None,
    device: Any = None,
    depth: int | None = None,
    graph: str = "layers",
) -> str:
    """The DOT source of ``model``'s diagram (what ``plot_model`` renders); no Graphviz
    needed. The arguments mean what they mean in ``plot_model``.

    Returns:
        The DOT text (Keras returns a pydot graph; kviz has no pydot dependency).

    Raises:
        TypeError / ValueError: bad arguments, as in ``plot_model``.
        kviz.ForwardError: the forward pass failed on the example input.

    Examples:
        >>> from torch import nn
        >>> text = model_to_dot(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        >>> text.count(" -> ")  # input -> 0 -> 1
        2
    """
    model = _check(model, rankdir, dpi, graph, depth)
    example = build_inputs(input_size, input_data, dtypes, device)
    if graph == "autograd":
        if example is None:
            raise ValueError(
                "graph='autograd' needs an example input: give input_size or input_data"
            )
        return autograd_dot(model, example, show_shapes=show_shapes, rankdir=rankdir, dpi=dpi)
    with gc_paused():
        if example is not None:
            trace = trace_model(model, example)
        elif type(model).forward is nn.Sequential.forward or not any(model.children()):
            trace = static_trace(model)
        else:
            raise ValueError(
                f"plot_model needs an example input to follow the tensors through "
                f"{type(model).__name__}.forward: give input_size (e.g. (1, 3, 32, 32)) or "
                f"input_data (only a plain nn.Sequential or a single layer can be drawn "
                f"without one)"
            )
        lay = layout(trace, resolve_depth(depth, expand_nested))
        return layout_to_dot(
            lay,
            title=type(model).__name__,
            show_shapes=show_shapes,
            show_layer_names=show_layer_names,
            rankdir=rankdir,
            dpi=dpi,
        )


def plot_model(
    model: nn.Module,
    to_file: str | os.PathLike[str] = "model.png",
    show_shapes: bool = False,
    show_layer_names: bool = True,
    rankdir: str = "TB",
    expand_nested: bool = False,
    dpi: int = 96,
    *,
    input_size: Any = None,
    input_data: Any = None,
    dtypes: Any = None,
    device: Any = None,
    depth: int | None = None,
    graph: str = "layers",
) -> Any:
    """Draw ``model`` as a graph of layers and write it to ``to_file``, as Keras does.

    One node per module call (``name: Class``), one per functional op that merges tensors
    (``x + residual``, ``torch.cat``), one per model input; an edge wherever a tensor flows
    from one to the next, so skip connections and multi-input merges show. A module called
    more than once (a shared layer) gets one node per call, titled ``(call i/n)``, joined
    to its other calls by a dashed line. Ops that transform a single tensor (views,
    activations called as functions, indexing) are folded into the edge they sit on.

    Args:
        model: any ``nn.Module``.
        to_file: output file; its extension picks the format: ``.png``, ``.svg``,
            ``.pdf``, ``.jpg``, ``.gif``, ``.ps``, ``.eps``, or ``.dot``/``.gv`` for the DOT
            text (which needs no Graphviz).
        show_shapes: show each node's input and output shapes.
        show_layer_names: show module names (else only class names).
        rankdir: ``'TB'`` (vertical), ``'LR'`` (horizontal), ``'BT'`` or ``'RL'``.
        expand_nested: draw nested modules as clusters holding their layers.
        dpi: dots per inch of the image.
        input_size: the shape of an example input (as in ``print_summary``); an example
            input is needed for anything but a plain ``nn.Sequential``.
        input_data: an example input itself (tensor, tuple or dict), instead of a size.
        dtypes: dtypes for the inputs made from ``input_size``.
        device: device the example input is created on (the model is not moved: give
            the device its parameters are on).
        depth: deepest nesting level drawn (default 1, or unlimited with expand_nested).
        graph: ``'layers'`` (default) or ``'autograd'`` for torchviz's autograd graph.

    Returns:
        An ``IPython.display.Image`` (``SVG`` for .svg) when IPython is installed, for
        notebooks, as in Keras; else None. Nothing is returned for .pdf and .dot.

    Raises:
        TypeError / ValueError: bad arguments (each message names the argument); a
            TorchScript ``model`` (a ``torch.compile`` wrapper is drawn as the module it
            wraps).
        kviz.ForwardError: the forward pass failed on the example input.
        kviz.GraphvizNotFoundError: a format other than .dot and no ``dot`` program.
        FileNotFoundError: the folder of ``to_file`` does not exist.

    Examples:
        >>> import os, tempfile
        >>> from torch import nn
        >>> path = os.path.join(tempfile.mkdtemp(), "model.dot")  # .png needs Graphviz
        >>> plot_model(nn.Sequential(nn.Linear(4, 2)), to_file=path) is None
        True
    """
    fmt = file_format(to_file)
    source = model_to_dot(
        model,
        show_shapes,
        show_layer_names,
        rankdir,
        expand_nested,
        dpi,
        input_size=input_size,
        input_data=input_data,
        dtypes=dtypes,
        device=device,
        depth=depth,
        graph=graph,
    )
    path = render(source, to_file, fmt)
    if fmt in ("dot", "pdf", "ps", "eps"):
        return None
    try:
        from IPython import display  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    if fmt == "svg":
        return display.SVG(filename=str(path))
    return display.Image(filename=str(path))
