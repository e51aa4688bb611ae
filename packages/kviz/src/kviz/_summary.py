"""``print_summary``: Keras's model table for any ``nn.Module``, from kviz's own trace.

Counting rule: every ``nn.Parameter`` is counted once, by its storage (``numel()``), in the
first row that holds it; a later row that holds it too says so (``+N shared``) without
counting it again. So the ``Param #`` column adds up to ``Total params``. Pruning masks
(buffers named ``<name>_mask`` that ``torch.nn.utils.prune`` registers) are buffers, never
parameters; a pruned weight counts its whole storage, and a footer line says how many of
those entries the masks set to zero.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import prune

from ._forward import checked_model, gc_paused, kept_modes, trace_model
from ._inputs import ExampleInput, build_inputs
from ._layout import Edge, Layout, check_range, layout, range_bounds, resolve_depth
from ._table import as_int, columns, format_row, wrap
from ._trace import INPUT, MODULE, OUTPUT, Node, Trace, is_script

__all__ = ["EXTRA_COLUMNS", "ModelSummary", "SummaryRow", "format_shape", "print_summary"]

logger = logging.getLogger("kviz")

_CHAIN_LENGTH, _CHAIN_POSITIONS = 65, (0.45, 0.85, 1.0)
_GRAPH_LENGTH, _GRAPH_POSITIONS = 98, (0.33, 0.55, 0.67, 1.0)
_TRAINABLE_WIDTH = 11  # Keras widens the table by this much for the "Trainable" column
_EXTRA_WIDTH = 12

# extra_columns name -> column title
EXTRA_COLUMNS = {"mult_adds": "Mult-Adds", "param_bytes": "Param size"}


class SummaryRow(NamedTuple):
    """One row of the table: a module (all its calls under one name), a functional op, a
    model input, a module the forward pass never called, or the model's own parameters."""

    name: str
    """Dotted module name (``encoder.block.conv1``), op name (``layer1.0.add``) or input
    name (``x``)."""
    type_name: str
    """The module's class name, ``Input``, or the op (``Tensor.add``, ``torch.cat``)."""
    output_shape: str
    """``[1, 8, 32, 32]``; several tensors comma-separated; ``multiple`` when calls differ;
    ``?`` without an example input; ``(not called)``; ``(own params)``."""
    params: int | None
    """Parameters counted in this row (None: lazy parameters not yet initialized)."""
    trainable: str
    """``Y``, ``N``, ``partial`` or ``-`` (no parameters), from ``requires_grad``."""
    connected_to: tuple[str, ...]
    """``name[call][tensor]`` of each tensor flowing in (tables that branch only)."""
    level: int
    """Nesting level under expanded containers (0: top)."""
    shared: int = 0
    """Parameters this row holds that an earlier row counts (tied or shared weights)."""
    param_bytes: int = 0
    """Bytes of the parameters counted in ``params``."""
    mult_adds: int | None = None
    """torchinfo's multiply-adds of the row (only with ``extra_columns=['mult_adds']``)."""


@dataclass(frozen=True)
class ModelSummary:
    """What ``print_summary`` printed, with the totals as attributes; ``str()`` is the table.

    Parameters shared by several modules are counted once. Buffers (BatchNorm statistics
    and the like) are not parameters and are counted apart, as torch counts them.
    """

    lines: tuple[str, ...]
    """The printed lines."""
    rows: tuple[SummaryRow, ...]
    """The rows of the table (all of them, whatever ``layer_range`` printed)."""
    total_params: int
    """Every parameter once (the sum of the ``params`` of the rows)."""
    trainable_params: int
    """Parameters with ``requires_grad``."""
    non_trainable_params: int
    """Parameters without ``requires_grad``."""
    param_bytes: int
    """Bytes of all parameters."""
    trainable_bytes: int
    """Bytes of the trainable parameters."""
    non_trainable_bytes: int
    """Bytes of the other parameters."""
    total_buffers: int
    """Elements of all buffers (BatchNorm statistics, pruning masks, ...)."""
    buffer_bytes: int
    """Bytes of all buffers."""
    uninitialized_params: int
    """Lazy parameter tensors still uninitialized (not counted)."""
    pruned_params: int
    """Parameter entries set to zero by ``torch.nn.utils.prune`` masks."""
    is_chain: bool
    """True when the table has no ``Connected to`` column (a simple chain)."""
    line_length: int
    """Width of the rulers."""
    total_mult_adds: int | None = None
    """torchinfo's total multiply-adds (with ``extra_columns=['mult_adds']``)."""
    torchinfo: Any = field(repr=False, compare=False, default=None)
    """torchinfo's ``ModelStatistics`` when the ``mult_adds`` column was asked for."""

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
    if isinstance(shape, str):
        return shape  # not a tensor: the type of what was returned
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


class _Counter:
    """Hands each parameter to the first row that asks for it (the counting rule)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def take(self, module: nn.Module, recurse: bool) -> tuple[int | None, int, int, str]:
        """(counted, shared, bytes, trainable text) of a row."""
        new = shared = nbytes = trainable = held = 0
        lazy = False
        for p in module.parameters(recurse=recurse):
            if is_lazy(p):
                lazy = True
                continue
            n = p.numel()
            held += n
            if p.requires_grad:
                trainable += n
            if id(p) in self.seen:
                shared += n
                continue
            self.seen.add(id(p))
            new += n
            nbytes += p.nbytes
        if lazy:
            return None, shared, nbytes, "?"
        return new, shared, nbytes, _trainable(held, trainable)


def _row(
    name: str,
    type_name: str,
    shape: str,
    counted: tuple[int | None, int, int, str],
    connected: tuple[str, ...],
    level: int,
) -> SummaryRow:
    params, shared, nbytes, trainable = counted
    return SummaryRow(name, type_name, shape, params, trainable, connected, level, shared, nbytes)


_NONE = (0, 0, 0, "-")


def _traced_rows(
    lay: Layout, model: nn.Module, links: bool, counter: _Counter
) -> tuple[list[SummaryRow], dict[str, int], set[str]]:
    """The rows of a traced model, the level of each module row by name, and the names of
    the rows that count their module's whole subtree."""
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
        if node.kind == OUTPUT or (node.kind == INPUT and not links):
            continue  # a chain's table starts at its first layer, as Keras's Sequential
        if node.kind == MODULE:
            key: Any = (id(node.module), node.name)
        elif node.kind == INPUT:
            key = ~idx
        else:
            key = node.name  # an op: one row for every call of its block
        calls = groups.get(key)
        if calls is None:
            groups[key] = [node]
        else:
            calls.append(node)

    rows = []
    levels: dict[str, int] = {}
    whole_names: set[str] = set()
    clusters = lay.clusters
    for calls in groups.values():
        first = calls[0]
        if len(calls) == 1:
            shape = format_shape(first.out_shapes)
        else:
            shapes = {format_shape(n.out_shapes) for n in calls}
            shape = shapes.pop() if len(shapes) == 1 else "multiple"
        name = first.name or root_label
        if first.kind == MODULE and first.module is not None:
            # The model itself counts only its own parameters: submodules its forward
            # did not call are listed as such below.
            whole = first.idx not in clusters and first.module is not model
            counted = counter.take(first.module, recurse=whole)
            levels[first.name] = level[first.idx]
            if whole:
                whole_names.add(first.name)
        else:
            counted = _NONE
        connected: list[str] = []
        if links:
            for n in calls:
                for e in into.get(n.idx, ()):
                    src = nodes[e.src]
                    connected.append(f"{src.name or root_label}[{src.call_index}][{e.pos}]")
        rows.append(_row(name, first.type_name, shape, counted, tuple(connected), level[first.idx]))
    return rows, levels, whole_names


def _uncalled_rows(
    model: nn.Module,
    trace: Trace,
    levels: dict[str, int],
    whole_names: set[str],
    counter: _Counter,
) -> list[SummaryRow]:
    """Rows for the modules the forward pass never reached (their parameters still count),
    each the topmost such module of its subtree."""
    reached: set[str] = {""}
    for node in trace.nodes:
        if node.kind == MODULE and node.name:
            parts = node.name.split(".")
            for i in range(1, len(parts) + 1):
                reached.add(".".join(parts[:i]))
    rows = []
    skip: list[str] = []  # subtrees already covered
    for name, module in model.named_modules():
        if not name or name in reached:
            continue
        if any(name.startswith(prefix) for prefix in skip):
            continue
        parts = name.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
        if any(p in whole_names for p in prefixes):
            continue  # inside a row that counts its whole subtree
        skip.append(name + ".")
        level = 0
        for p in reversed(prefixes):
            if p in levels:
                level = levels[p] + 1
                break
        counted = counter.take(module, recurse=True)
        rows.append(_row(name, type(module).__name__, "(not called)", counted, (), level))
    return rows


def _static_rows(model: nn.Module, limit: float, counter: _Counter) -> list[SummaryRow]:
    """Rows from the module tree alone (no forward pass): shapes unknown."""
    rows: list[SummaryRow] = []
    if not any(True for _ in model.children()):
        counted = counter.take(model, recurse=True)
        return [_row(type(model).__name__.lower(), type(model).__name__, "?", counted, (), 0)]
    # (name, module, depth) in module order; iterative over siblings, bounded by nesting.
    stack: list[tuple[str, nn.Module, int]] = [
        (name, child, 1) for name, child in reversed(model._modules.items()) if child is not None
    ]
    while stack:
        name, module, depth = stack.pop()
        children = (
            []
            if is_script(module)
            else [
                (f"{name}.{n}", c, depth + 1) for n, c in module._modules.items() if c is not None
            ]
        )
        whole = not children or depth >= limit
        counted = counter.take(module, recurse=whole)
        rows.append(_row(name, type(module).__name__, "?", counted, (), depth - 1))
        if not whole:
            stack.extend(reversed(children))
    return rows


def _own_row(model: nn.Module, counter: _Counter) -> SummaryRow | None:
    """A row for parameters the model holds itself (``self.scale = nn.Parameter(...)`` next
    to its submodules), which no layer row counts; None when it holds none."""
    if not any(True for _ in model.parameters(recurse=False)):
        return None
    counted = counter.take(model, recurse=False)
    if not counted[0]:
        return None  # already counted: the model is a row of its own
    return _row(type(model).__name__.lower(), type(model).__name__, "(own params)", counted, (), 0)


def _in_range(rows: list[SummaryRow], layer_range: Any) -> list[SummaryRow]:
    """The rows Keras's ``layer_range`` selects: top-level rows from the first match of the
    start pattern to the last match of the end pattern, with the rows nested in them."""
    top = [i for i, r in enumerate(rows) if r.level == 0]
    lo, hi = range_bounds([rows[i].name for i in top], layer_range)
    start = top[lo]
    stop = top[hi] if hi < len(top) else len(rows)
    return rows[start:stop]


def _mult_adds(
    model: nn.Module, example: ExampleInput, rows: list[SummaryRow], notes: list[str]
) -> tuple[list[SummaryRow], int | None, Any]:
    """torchinfo's Mult-Adds per row; any failure gives ``?`` and a note, never an error."""
    try:
        import torchinfo
    except ImportError as exc:
        if exc.name != "torchinfo":
            raise
        notes.append(
            "extra_columns=['mult_adds'] needs torchinfo, which is not installed "
            "(pip install torchinfo); the column shows '?'"
        )
        return rows, None, None
    args, kwargs = example
    try:
        with kept_modes(model), torch.no_grad():
            stats = torchinfo.summary(
                model, input_data=dict(kwargs) if kwargs else list(args), verbose=0
            )
    except Exception as exc:
        notes.append(
            f"torchinfo could not count Mult-Adds for {type(model).__name__} "
            f"({type(exc).__name__}: {exc}); the column shows '?'"
        )
        logger.info("torchinfo failed on %s", type(model).__name__, exc_info=True)
        return rows, None, None
    finally:
        _drop_torchinfo_cache(torchinfo, model)
    leaf: dict[int, int] = {}
    for info in getattr(stats, "summary_list", []):
        if info.is_leaf_layer:
            leaf[id(info.module)] = leaf.get(id(info.module), 0) + int(info.macs)
    modules = {name: m for name, m in model.named_modules()}
    out = []
    for r in rows:
        module = modules.get(r.name)
        if module is None or r.output_shape in ("(not called)", "(own params)"):
            macs = 0
        else:
            macs = sum(leaf.get(id(m), 0) for m in module.modules())
        out.append(r._replace(mult_adds=macs))
    return out, int(stats.total_mult_adds), stats


def _drop_torchinfo_cache(torchinfo: Any, model: nn.Module) -> None:
    # torchinfo keeps every summary in a module-level cache keyed by class name, which would
    # keep the model alive.
    cache = getattr(getattr(torchinfo, "torchinfo", None), "_cached_forward_pass", None)
    if isinstance(cache, dict):
        cache.pop(type(model).__name__, None)


def _check_extra(extra_columns: Any) -> list[str]:
    if isinstance(extra_columns, str):
        extra_columns = [extra_columns]
    try:
        extra = list(extra_columns)
    except TypeError:
        extra = None
    if extra is None or not all(isinstance(c, str) and c in EXTRA_COLUMNS for c in extra):
        raise ValueError(
            f"extra_columns must be a list of {sorted(EXTRA_COLUMNS)}, got {extra_columns!r}"
        )
    return list(dict.fromkeys(extra))


def check_depth(depth: Any) -> int | None:
    """``depth`` as an int >= 1 (numpy integers too), or None.

    Raises:
        TypeError: not an int. ValueError: below 1.
    """
    if depth is None:
        return None
    value = as_int(depth, "depth")
    if value < 1:
        raise ValueError(f"depth must be an int >= 1 or None, got {depth!r}")
    return value


def print_summary(
    model: nn.Module,
    line_length: int | None = None,
    positions: Sequence[float] | None = None,
    print_fn: Callable[[str], Any] | None = None,
    expand_nested: bool = False,
    show_trainable: bool = False,
    layer_range: Sequence[str] | None = None,
    *,
    input_size: Any = None,
    input_data: Any = None,
    dtypes: Any = None,
    device: Any = None,
    depth: int | None = None,
    extra_columns: Sequence[str] = (),
) -> ModelSummary:
    """Print Keras's summary table of ``model`` and return it as a ``ModelSummary``.

    Columns `Layer (type)`, `Output Shape`, `Param #`, plus `Connected to` when the model
    is not a simple chain (branches, merges, several inputs, a module called twice), then
    the totals. One row per module call site at the shown depth (a module called several
    times has one row listing every call in `Connected to`, as a Keras shared layer does);
    functional ops that merge tensors (`x + y`, `torch.cat`) get rows too, named after the
    block that ran them (`layer1.0.add`). Modules the forward pass never called are listed
    with `(not called)` for a shape. Output shapes come from one forward pass on an example
    input (eval mode, no autograd), recorded by kviz itself; without one, shapes show as
    `?`. Every parameter is counted once, in the first row that holds it; a later row
    holding it too shows `+N shared`, so the `Param #` column adds up to `Total params`.

    Args:
        model: any `nn.Module` (a `torch.compile` wrapper is summarized as the module it
            wraps; TorchScript parts are one row each).
        line_length: width of the rulers (default 65, or 98 with `Connected to`).
        positions: each column's end, as fractions of `line_length` (last <= 1) or
            absolute positions (default `[.45, .85, 1.]` / `[.33, .55, .67, 1.]`).
        print_fn: called with each line (default `print`).
        expand_nested: show the layers inside nested modules (containers become rows
            of their own, their contents indented below them).
        show_trainable: add Keras's `Trainable` column (Y, N, partial, or - for none),
            11 characters wide; the default width grows by as much, as in Keras, but a
            given `line_length` includes it.
        layer_range: two layer names or regex patterns, `[start, end]`: print only the
            top-level rows from the first one matching `start` to the last one matching
            `end` (both included), as in Keras; the totals still cover the whole model.
        input_size: shape of the example input, batch included, e.g. `(1, 3, 32, 32)`,
            or a list of shapes for several inputs (`[]` in the list: a 0-d input).
        input_data: the example input itself: a tensor, a list of positional arguments or
            a dict of keyword arguments (strings, numbers, None and nested containers
            are passed as they are).
        dtypes: dtype(s) of the `input_size` tensors (default float32).
        device: device the example input is created on (the model is not moved).
        depth: deepest nesting level shown (1 = the model's direct children); default 1,
            or unlimited with `expand_nested`.
        extra_columns: more columns, each 12 characters wide: `'mult_adds'` (torchinfo's
            multiply-adds; needs an example input) and `'param_bytes'` (the size of each
            row's parameters).

    Returns:
        A `ModelSummary`: `str()` is the table; `total_params`, `trainable_params`,
        `non_trainable_params`, `param_bytes`, `total_buffers`, `buffer_bytes`, `rows`
        and more as attributes.

    Raises:
        TypeError: `model` is not an `nn.Module`, or an argument has the wrong type.
        ValueError: bad `line_length`/`positions`/`depth`/`layer_range`/input arguments.
        kviz.ForwardError: the forward pass failed on the example input (a `ValueError`).

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        >>> s = print_summary(model, input_size=(1, 4), print_fn=lambda line: None)
        >>> s.total_params, s.rows[0].output_shape
        (40, '[1, 8]')
    """
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"print_fn must be callable or None, got {print_fn!r}")
    limit = resolve_depth(check_depth(depth), expand_nested)
    extra = _check_extra(extra_columns)
    check_range(layer_range)
    example = build_inputs(input_size, input_data, dtypes, device)
    if "mult_adds" in extra and example is None:
        raise ValueError(
            "extra_columns=['mult_adds'] needs an example input: give input_size or input_data"
        )
    model = checked_model(model)
    notes: list[str] = []
    with gc_paused():
        result = _summarize(
            model,
            line_length,
            positions,
            print_fn,
            example,
            limit,
            show_trainable,
            layer_range,
            extra,
            notes,
        )
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return result


def unregistered_note(trace: Trace) -> str | None:
    """A warning text for modules the model calls without registering them, or None."""
    held = {name: sum(p.numel() for p in m.parameters()) for name, m in trace.unregistered.items()}
    with_params = {name: n for name, n in held.items() if n}
    if not with_params:
        return None
    names = ", ".join(sorted(with_params))
    return (
        f"{type(trace.model).__name__} calls modules it does not register ({names}: "
        f"{sum(with_params.values()):,} parameters), kept in a plain list or dict: "
        f"model.parameters(), state_dict() and .to() do not see them; use nn.ModuleList "
        f"or nn.ModuleDict"
    )


def _summarize(
    model: nn.Module,
    line_length: int | None,
    positions: Sequence[float] | None,
    print_fn: Callable[[str], Any] | None,
    example: ExampleInput | None,
    limit: float,
    show_trainable: bool,
    layer_range: Any,
    extra: list[str],
    notes: list[str],
) -> ModelSummary:
    """The work of print_summary once its arguments are checked."""
    counter = _Counter()
    extra_modules: list[nn.Module] = []
    footer_extra: list[str] = []
    if example is not None:
        trace = trace_model(model, example, details=False)
        note = unregistered_note(trace)
        if note:
            notes.append(note)
        for m in trace.unregistered.values():
            extra_modules.extend(m.modules())
    if example is not None and not is_script(model):
        lay = layout(trace, limit)
        chain = lay.is_chain()
        rows, levels, whole = _traced_rows(lay, model, not chain, counter)
        rows.extend(_uncalled_rows(model, trace, levels, whole, counter))
    else:
        chain = True
        rows = _static_rows(model, limit, counter)
        if example is not None:
            outs = [n for n in trace.nodes if n.kind == OUTPUT]
            shapes = ", ".join(format_shape(n.out_shapes) for n in outs) or "?"
            footer_extra.append(
                f"Output shape: {shapes} (TorchScript model: its layers' shapes are not visible)"
            )
    own = _own_row(model, counter)
    if own is not None:
        rows.append(own)

    total_mult_adds: int | None = None
    stats: Any = None
    if "mult_adds" in extra and example is not None:
        rows, total_mult_adds, stats = _mult_adds(model, example, rows, notes)
    shown = rows if layer_range is None else _in_range(rows, layer_range)

    names = ["Layer (type)", "Output Shape", "Param #"]
    if not chain:
        names.append("Connected to")
    widths: list[int] = []
    for key in extra:
        names.append(EXTRA_COLUMNS[key])
        widths.append(_EXTRA_WIDTH)
    if show_trainable:
        names.append("Trainable")
        widths.append(_TRAINABLE_WIDTH)
    cols = columns(
        names,
        line_length,
        positions,
        default_length=_CHAIN_LENGTH if chain else _GRAPH_LENGTH,
        default_positions=_CHAIN_POSITIONS if chain else _GRAPH_POSITIONS,
        extras=widths,
    )
    width = cols.line_length
    lines: list[str] = []
    lines.extend(wrap(f'Model: "{type(model).__name__}"', width))
    lines.append("_" * width)
    lines.extend(format_row([[n] for n in names], cols))
    lines.append("=" * width)
    for i, row in enumerate(shown):
        indent = "  " * row.level
        param_cell = ["?" if row.params is None else f"{row.params:,}"]
        if row.shared:
            param_cell.append(f"+{row.shared:,} shared")
        fields = [[f"{indent}{row.name} ({row.type_name})"], [row.output_shape], param_cell]
        if not chain:
            fields.append(list(row.connected_to))
        for key in extra:
            if key == "mult_adds":
                fields.append(["?" if row.mult_adds is None else f"{row.mult_adds:,}"])
            else:
                fields.append([readable_size(row.param_bytes) if row.params else "0"])
        if show_trainable:
            fields.append([row.trainable])
        lines.extend(format_row(fields, cols))
        lines.append("=" * width if i == len(shown) - 1 else "_" * width)
    if not shown:
        lines.append("=" * width)

    totals = _totals(model, extra_modules)
    footer = [
        f"Total params: {totals['total']:,} ({readable_size(totals['bytes'])})",
        f"Trainable params: {totals['trainable']:,} ({readable_size(totals['trainable_bytes'])})",
        f"Non-trainable params: {totals['total'] - totals['trainable']:,} "
        f"({readable_size(totals['bytes'] - totals['trainable_bytes'])})",
    ]
    if totals["buffers"]:
        footer.append(f"Buffers: {totals['buffers']:,} ({readable_size(totals['buffer_bytes'])})")
    if totals["pruned"]:
        footer.append(
            f"Pruned: {totals['pruned']:,} of the parameters above are masked to zero "
            f"(torch.nn.utils.prune)"
        )
    if totals["lazy"]:
        footer.append(
            f"Uninitialized lazy parameters: {totals['lazy']} tensors (not counted); give "
            f"input_size or input_data to initialize them"
        )
    if total_mult_adds is not None:
        footer.append(f"Total mult-adds: {total_mult_adds:,}")
    footer.extend(footer_extra)
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
        pruned_params=totals["pruned"],
        is_chain=chain,
        line_length=width,
        total_mult_adds=total_mult_adds,
        torchinfo=stats,
    )


def _pruned(module: nn.Module) -> int:
    """Entries that ``torch.nn.utils.prune`` masks hold at zero in ``module``."""
    count = 0
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod):
            mask = module._buffers.get(f"{hook._tensor_name}_mask")
            if isinstance(mask, torch.Tensor):
                count += int(mask.numel() - int(torch.count_nonzero(mask)))
    return count


def _totals(model: nn.Module, extra_modules: list[nn.Module]) -> dict[str, int]:
    # Each Parameter counts once, however many modules share it (model.parameters() does
    # the same, but through a slower path that matters on models with 1,000s of them).
    seen: set[int] = set()
    parameter = nn.Parameter
    total = trainable = size = trainable_size = lazy = buffers = buffer_size = pruned = 0
    modules = list(model.modules()) + extra_modules
    for module in modules:
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
        if module._forward_pre_hooks:
            pruned += _pruned(module)
    return {
        "total": total,
        "trainable": trainable,
        "bytes": size,
        "trainable_bytes": trainable_size,
        "buffers": buffers,
        "buffer_bytes": buffer_size,
        "lazy": lazy,
        "pruned": pruned,
    }
