"""``print_summary``: Keras's model table for any ``nn.Module``, built on torchinfo."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torchinfo
from torch import nn
from torch.nn.parameter import is_lazy

from ._forward import checked_model, forward_error, gc_paused, kept_modes
from ._inputs import ExampleInput, build_inputs
from ._layout import Edge, Layout, layout, resolve_depth
from ._table import columns, format_row, wrap
from ._trace import INPUT, MODULE, Node, Tracer

__all__ = ["ModelSummary", "SummaryRow", "format_shape", "print_summary", "readable_size"]

_CHAIN_LENGTH, _CHAIN_POSITIONS = 65, (0.45, 0.85, 1.0)
_GRAPH_LENGTH, _GRAPH_POSITIONS = 98, (0.33, 0.55, 0.67, 1.0)


class SummaryRow(NamedTuple):
    """One row of the table: a module (all its calls), a functional op or a model input."""

    name: str
    type_name: str
    output_shape: str
    params: int | None  # None: lazy parameters not yet initialized
    trainable: str  # "Y", "N", "partial" or "-" (no parameters)
    connected_to: tuple[str, ...]
    level: int  # nesting level under expanded containers (0: top)


@dataclass(frozen=True)
class ModelSummary:
    """What ``print_summary`` printed, with the totals as attributes; ``str()`` is the table.

    Parameters shared by several modules are counted once. Buffers (BatchNorm statistics
    and the like) are not parameters and are counted apart, as torch counts them.
    """

    lines: tuple[str, ...]
    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    param_bytes: int
    trainable_bytes: int
    non_trainable_bytes: int
    total_buffers: int
    buffer_bytes: int
    uninitialized_params: int  # lazy parameter tensors still uninitialized
    is_chain: bool
    line_length: int
    torchinfo: Any = field(repr=False, compare=False, default=None)  # ModelStatistics

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def __repr__(self) -> str:
        return (
            f"ModelSummary(rows={len(self.rows)}, total_params={self.total_params:,}, "
            f"trainable_params={self.trainable_params:,}, "
            f"non_trainable_params={self.non_trainable_params:,})"
        )


def readable_size(num_bytes: float) -> str:
    """Bytes as Keras 3 writes them: ``'4.82 KB'`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num_bytes < 1024:
            return f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} PB"


def format_shape(shape: Any) -> str:
    """``[1, 64]`` for one tensor; several tensors comma-separated; ``?`` when unknown."""
    if shape is None:
        return "?"
    if isinstance(shape, tuple):
        return "[" + ", ".join(map(str, shape)) + "]"
    parts: list[str] = []

    def flat(s: Any) -> None:
        if isinstance(s, tuple):
            parts.append(format_shape(s))
        elif isinstance(s, list):
            for item in s:
                flat(item)

    flat(shape)
    return ", ".join(parts) if parts else "?"


def _trainable(num: int | None, trainable: int) -> str:
    if num is None:
        return "?"
    if num == 0:
        return "-"
    if trainable == num:
        return "Y"
    return "N" if trainable == 0 else "partial"


def _count(module: nn.Module, recurse: bool) -> tuple[int | None, int]:
    total = trainable = 0
    for p in module.parameters(recurse=recurse):
        if is_lazy(p):
            return None, 0
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def _layer_infos(stats: Any) -> dict[int, list[Any]]:
    infos: dict[int, list[Any]] = {}
    for info in getattr(stats, "summary_list", []):
        infos.setdefault(info.layer_id, []).append(info)
    return infos


def _params_of(
    module: nn.Module, infos: dict[int, list[Any]], whole: bool
) -> tuple[int | None, int]:
    """(params, trainable) of a row: a layer's whole count (torchinfo's, which knows about
    pruning masks, when it has one), or a heading row's own parameters only."""
    if not whole:
        return _count(module, recurse=False)
    for info in infos.get(id(module), ()):
        if info.contains_lazy_param and any(is_lazy(p) for p in module.parameters()):
            return None, 0
        return int(info.num_params), int(info.trainable_params)
    return _count(module, recurse=True)


def _traced_rows(
    lay: Layout, infos: dict[int, list[Any]], model: nn.Module, links: bool
) -> list[SummaryRow]:
    nodes = lay.trace.nodes
    owners = lay.owner
    root_label = type(model).__name__.lower()
    into: dict[int, list[Edge]] = {}
    if links:
        for e in lay.edges:
            into.setdefault(e.dst, []).append(e)
    level: dict[int, int] = {}
    groups: dict[Any, list[Node]] = {}
    for idx in sorted(owners):
        owner = owners[idx]
        level[idx] = level[owner] + 1 if owner >= 0 else 0
        node = nodes[idx]
        if node.kind == INPUT and not links:
            continue  # a chain's table starts at its first layer, as Keras's Sequential
        key: Any = id(node.module) if node.kind == MODULE else ~idx
        calls = groups.get(key)
        if calls is None:
            groups[key] = [node]
        else:
            calls.append(node)

    rows = []
    clusters = lay.clusters
    for calls in groups.values():
        first = calls[0]
        if len(calls) == 1:
            shape = format_shape(first.out_shapes)
        else:
            shapes = {format_shape(n.out_shapes) for n in calls}
            shape = shapes.pop() if len(shapes) == 1 else "multiple"
        if first.module is not None and first.kind == MODULE:
            params, trainable = _params_of(first.module, infos, whole=first.idx not in clusters)
        else:
            params, trainable = 0, 0
        connected: list[str] = []
        if links:
            for n in calls:
                for e in into.get(n.idx, ()):
                    src = nodes[e.src]
                    connected.append(f"{src.name or root_label}[{src.call_index}][{e.pos}]")
        rows.append(
            SummaryRow(
                first.name or root_label,
                first.type_name,
                shape,
                params,
                _trainable(params, trainable),
                tuple(connected),
                level[first.idx],
            )
        )
    # Modules the forward pass never reached still own parameters: list them so the
    # Param # column adds up to the totals.
    called = {id(node.module) for node in nodes if node.module is not None}
    for name, child in model.named_children():
        if id(child) not in called and not any(id(m) in called for m in child.modules()):
            params, trainable = _count(child, recurse=True)
            rows.append(
                SummaryRow(
                    name,
                    type(child).__name__,
                    "(not called)",
                    params,
                    _trainable(params, trainable),
                    (),
                    0,
                )
            )
    return rows


def _own_row(model: nn.Module) -> SummaryRow | None:
    """A row for parameters the model holds itself (``self.scale = nn.Parameter(...)`` next
    to its submodules), which no layer row counts; None when it holds none."""
    if not any(True for _ in model.children()):
        return None  # a single layer: its own row already counts them
    if not any(True for _ in model.parameters(recurse=False)):
        return None
    params, trainable = _count(model, recurse=False)
    return SummaryRow(
        type(model).__name__.lower(),
        type(model).__name__,
        "(own params)",
        params,
        _trainable(params, trainable),
        (),
        0,
    )


def _static_rows(stats: Any, model: nn.Module, limit: float) -> list[SummaryRow]:
    names = {id(m): n for n, m in model.named_modules()}
    rows = []
    seen: set[int] = set()
    summary_list = list(getattr(stats, "summary_list", []))
    only_root = len(summary_list) == 1
    for info in summary_list:
        depth = int(info.depth)
        if info.layer_id in seen or depth > limit or (depth == 0 and not only_root):
            continue
        seen.add(info.layer_id)
        module = info.module
        whole = depth >= limit or info.is_leaf_layer
        lazy = info.contains_lazy_param and any(is_lazy(p) for p in module.parameters())
        if lazy:
            params: int | None = None
            trainable = 0
        elif whole:
            params, trainable = int(info.num_params), int(info.trainable_params)
        else:
            params = int(info.leftover_params())
            trainable = int(info.leftover_trainable_params())
        name = names.get(info.layer_id) or type(module).__name__.lower()
        rows.append(
            SummaryRow(
                name,
                type(module).__name__,
                "?",
                params,
                _trainable(params, trainable),
                (),
                max(depth - 1, 0),
            )
        )
    return rows


def _run_torchinfo(model: nn.Module, input_data: Any) -> Any:
    cache = getattr(getattr(torchinfo, "torchinfo", None), "_cached_forward_pass", None)
    stats = torchinfo.summary(model, input_data=input_data, verbose=0)
    # torchinfo keeps every summary in a module-level cache keyed by class name, which would
    # keep the model alive; drop the entry this call added.
    if isinstance(cache, dict):
        key = type(model).__name__
        if cache.get(key) is getattr(stats, "summary_list", None):
            cache.pop(key, None)
    return stats


def print_summary(
    model: nn.Module,
    line_length: int | None = None,
    positions: Sequence[float] | None = None,
    print_fn: Callable[[str], Any] | None = None,
    *,
    input_size: Any = None,
    input_data: Any = None,
    dtypes: Any = None,
    device: Any = None,
    expand_nested: bool = False,
    depth: int | None = None,
    show_trainable: bool = False,
) -> ModelSummary:
    """Print Keras's summary table of ``model`` and return it as a ``ModelSummary``.

    Columns ``Layer (type)``, ``Output Shape``, ``Param #``, plus ``Connected to`` when the
    model is not a simple chain (branches, merges, several inputs, a module called twice),
    then the totals. One row per module call site at the shown depth (a module called
    several times has one row listing every call in ``Connected to``, as a Keras shared
    layer does); functional ops that merge tensors (``x + y``, ``torch.cat``) get rows too.
    Output shapes come from one forward pass on an example input (eval mode, no autograd,
    run by ``torchinfo.summary``); without one, shapes show as ``?``. Parameter counts
    come from torchinfo per row; the totals count every parameter of the model once.

    Args:
        model: any ``nn.Module``.
        line_length: total width of the table (default 65, or 98 with ``Connected to``).
            No printed line is longer; long fields wrap onto more lines.
        positions: each column's end, as fractions of ``line_length`` (last <= 1) or
            absolute positions (default ``[.45, .85, 1.]`` / ``[.33, .55, .67, 1.]``).
        print_fn: called with each line (default ``print``).
        input_size: shape of the example input, batch included, e.g. ``(1, 3, 32, 32)``,
            or a list of shapes for several inputs.
        input_data: the example input itself: a tensor, a list of positional arguments or
            a dict of keyword arguments.
        dtypes: dtype(s) of the ``input_size`` tensors (default float32).
        device: device the example input is created on (the model is not moved).
        expand_nested: show the layers inside nested modules (containers become rows
            of their own, their contents indented below them).
        depth: deepest nesting level shown (1 = the model's direct children); default 1,
            or unlimited with ``expand_nested``.
        show_trainable: add Keras's ``Trainable`` column (Y, N, partial, or - for none),
            11 characters wide; the default width grows by as much, as in Keras, but a
            given ``line_length`` includes it.

    Returns:
        A ``ModelSummary``: ``str()`` is the table; ``total_params``,
        ``trainable_params``, ``non_trainable_params``, ``param_bytes``,
        ``total_buffers``, ``buffer_bytes``, ``rows`` and more as attributes.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` (or is a TorchScript module and an
            example input is given), or an argument has the wrong type.
        ValueError: bad ``line_length``/``positions``/``depth``/input arguments, or the
            forward pass failed on the example input (``kviz.ForwardError``).

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        >>> s = print_summary(model, input_size=(1, 4), print_fn=lambda line: None)
        >>> s.total_params, s.rows[0].output_shape
        (40, '[1, 8]')
    """
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"print_fn must be callable or None; got {print_fn!r}")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth must be an int >= 1 or None; got {depth!r}")
    limit = resolve_depth(depth, expand_nested)
    example = build_inputs(input_size, input_data, dtypes, device)
    model = checked_model(model, traced=example is not None)
    with gc_paused():
        return _summarize(model, line_length, positions, print_fn, example, limit, show_trainable)


def _summarize(
    model: nn.Module,
    line_length: int | None,
    positions: Sequence[float] | None,
    print_fn: Callable[[str], Any] | None,
    example: ExampleInput | None,
    limit: float,
    show_trainable: bool,
) -> ModelSummary:
    """The work of print_summary once its arguments are checked."""
    if example is not None:
        args, kwargs = example
        tracer = Tracer(model, in_shapes=False)
        tracer.add_inputs(args, kwargs)
        modules: list[nn.Module] | None = tracer.modules
        with kept_modes(model, modules), tracer.tracing(arm=False), tracer.root_forward():
            try:
                stats = _run_torchinfo(model, dict(kwargs) if kwargs else list(args))
            except Exception as exc:
                cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc
                raise forward_error(model, example, cause) from cause
        lay = layout(tracer.trace, limit)
        chain = lay.is_chain()
        rows = _traced_rows(lay, _layer_infos(stats), model, links=not chain)
    else:
        stats = _run_torchinfo(model, None)
        modules = None
        chain = True
        rows = _static_rows(stats, model, limit)

    own = _own_row(model)
    if own is not None:
        rows.append(own)

    names = ["Layer (type)", "Output Shape", "Param #"]
    if not chain:
        names.append("Connected to")
    if show_trainable:
        names.append("Trainable")
    cols = columns(
        names,
        line_length,
        positions,
        default_length=_CHAIN_LENGTH if chain else _GRAPH_LENGTH,
        default_positions=_CHAIN_POSITIONS if chain else _GRAPH_POSITIONS,
        trainable=show_trainable,
    )
    width = cols.line_length
    lines: list[str] = []
    lines.extend(wrap(f'Model: "{type(model).__name__}"', width))
    lines.append("_" * width)
    lines.extend(format_row([[n] for n in names], cols))
    lines.append("=" * width)
    for i, row in enumerate(rows):
        indent = "  " * row.level
        fields = [
            [f"{indent}{row.name} ({row.type_name})"],
            [row.output_shape],
            ["?" if row.params is None else f"{row.params:,}"],
        ]
        if not chain:
            fields.append(list(row.connected_to))
        if show_trainable:
            fields.append([row.trainable])
        lines.extend(format_row(fields, cols))
        lines.append("=" * width if i == len(rows) - 1 else "_" * width)
    if not rows:
        lines.append("=" * width)

    totals = _totals(model, modules)
    footer = [
        f"Total params: {totals['total']:,} ({readable_size(totals['bytes'])})",
        f"Trainable params: {totals['trainable']:,} ({readable_size(totals['trainable_bytes'])})",
        f"Non-trainable params: {totals['total'] - totals['trainable']:,} "
        f"({readable_size(totals['bytes'] - totals['trainable_bytes'])})",
    ]
    if totals["buffers"]:
        footer.append(f"Buffers: {totals['buffers']:,} ({readable_size(totals['buffer_bytes'])})")
    if totals["lazy"]:
        footer.append(
            f"Uninitialized lazy parameters: {totals['lazy']} tensors (not counted); give "
            f"input_size or input_data to initialize them"
        )
    for text in footer:
        lines.extend(wrap(text, width))
    lines.append("_" * width)

    emit = print if print_fn is None else print_fn
    for line in lines:
        emit(line)
    return ModelSummary(
        lines=tuple(lines),
        rows=tuple(rows),
        total_params=totals["total"],
        trainable_params=totals["trainable"],
        non_trainable_params=totals["total"] - totals["trainable"],
        param_bytes=totals["bytes"],
        trainable_bytes=totals["trainable_bytes"],
        non_trainable_bytes=totals["bytes"] - totals["trainable_bytes"],
        total_buffers=totals["buffers"],
        buffer_bytes=totals["buffer_bytes"],
        uninitialized_params=totals["lazy"],
        is_chain=chain,
        line_length=width,
        torchinfo=stats,
    )


def _totals(model: nn.Module, modules: list[nn.Module] | None) -> dict[str, int]:
    # Each Parameter counts once, however many modules share it (model.parameters() does
    # the same, but through a slower path that matters on models with 1,000s of them).
    seen: set[int] = set()
    parameter = nn.Parameter
    total = trainable = size = trainable_size = lazy = buffers = buffer_size = 0
    for module in model.modules() if modules is None else modules:
        for p in module._parameters.values():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if type(p) is not parameter and is_lazy(p):
                lazy += 1
                continue
            n = p.numel()
            nbytes = p.nbytes
            total += n
            size += nbytes
            if p.requires_grad:
                trainable += n
                trainable_size += nbytes
        if module._buffers:
            for b in module._buffers.values():
                if b is None or id(b) in seen or is_lazy(b):
                    continue
                seen.add(id(b))
                buffers += b.numel()
                buffer_size += b.nbytes
    return {
        "total": total,
        "trainable": trainable,
        "bytes": size,
        "trainable_bytes": trainable_size,
        "buffers": buffers,
        "buffer_bytes": buffer_size,
        "lazy": lazy,
    }
