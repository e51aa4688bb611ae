"""The split and merge rules that both replica paths share.

Containers are whatever kparallel's one walker (``_tree.children``) opens: dicts
(``OrderedDict``, ``defaultdict``...), tuples, namedtuples, lists and dataclasses.

Split: the batch size is dim 0 of the first tensor (of one or more dimensions) found in the
call's positional then keyword arguments. Every such tensor must have that dim 0 and is cut
into contiguous, balanced chunks (7 rows on 3 replicas: 3, 2, 2); a batch smaller than the
replica count uses fewer replicas. With ``min_rows=2`` (a module whose batch-statistics
layers train) no chunk gets a single row: fewer replicas are used instead. Zero-dimensional
tensors are copied to every replica's device; anything that is not a tensor (ints, strings,
None, flags, objects) goes to every replica unchanged.

Merge, part by part, the replicas' outputs against their chunk sizes:

* a tensor whose dim 0 is its replica's chunk size on every replica (a batch tensor) is
  concatenated along dim 0 on the target device;
* ``None`` on every replica stays ``None``;
* tuples, namedtuples, lists, dicts and dataclasses of the same shape on every replica
  keep their structure, merged part by part;
* a list whose length is its replica's chunk size on every replica, whose entries all have
  one type, and that cannot be merged as a structure of batch tensors, is a per-sample
  list: the lists are concatenated (the entries' tensors moved to the target device);
* anything else (numbers, strings, 0-dim tensors, tensors without a batch dimension,
  structures that differ between replicas) goes to the user's ``merge`` function when one
  was given, else raises ``MergeError`` naming the part's path.

How one tensor is moved is pluggable: the generic movers use ``split``/``to``/``cat`` (any
device, autograd-aware); the CUDA path passes ``torch.nn.parallel``'s Scatter and Gather.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._errors import MergeError
from ._tree import children, map_tensors

__all__ = [
    "GatherFn",
    "MergeFn",
    "ScatterFn",
    "batch_size_of",
    "generic_gather",
    "generic_scatter",
    "merge_outputs",
    "split_inputs",
    "split_sizes",
]

logger = logging.getLogger("kparallel")

ScatterFn = Callable[[torch.Tensor, list[int], list[torch.device]], Sequence[torch.Tensor]]
GatherFn = Callable[[list[torch.Tensor], torch.device], torch.Tensor]
MergeFn = Callable[[str, list[Any], list[int]], Any]


def generic_scatter(
    tensor: torch.Tensor, sizes: list[int], devices: list[torch.device]
) -> list[torch.Tensor]:
    """Cut ``tensor`` along dim 0 into ``sizes`` and move chunk i to ``devices[i]``.

    On the tensor's own device a chunk is a view (no copy); gradients flow back through
    ``split`` and ``to``.
    """
    chunks = torch.split(tensor, sizes, dim=0)
    return [chunk.to(device) for chunk, device in zip(chunks, devices, strict=True)]


def generic_gather(tensors: list[torch.Tensor], target: torch.device) -> torch.Tensor:
    """Concatenate ``tensors`` along dim 0 on ``target`` (autograd-aware)."""
    if len(tensors) == 1:
        return tensors[0].to(target)
    return torch.cat([t.to(target) for t in tensors], dim=0)


def _tensors(obj: object, path: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor leaf of ``obj`` with its path, in walking order."""
    if isinstance(obj, torch.Tensor):
        return [(path, obj)]
    node = children(obj)
    if node is None:
        return []
    return [leaf for suffix, value in node[0] for leaf in _tensors(value, path + suffix)]


def batch_size_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """Dim 0 of the first tensor of one or more dimensions, checking all agree.

    Returns:
        The batch size, or ``None`` when the call holds no such tensor.

    Raises:
        ValueError: two batch tensors disagree on dim 0 (the message names both).
    """
    leaves = _tensors(tuple(args), "args") + _tensors(dict(kwargs), "kwargs")
    batched = [(p, t) for p, t in leaves if t.dim() >= 1]
    if not batched:
        return None
    first_path, first = batched[0]
    size = int(first.shape[0])
    for path, tensor in batched[1:]:
        if int(tensor.shape[0]) != size:
            raise ValueError(
                f"multi_gpu_model splits every input tensor along dim 0, but {path} has "
                f"{tensor.shape[0]} rows while {first_path} has {size}. Pass per-batch "
                "tensors only; a tensor shared by all rows can be a module attribute "
                "or a 0-dim tensor."
            )
    return size


def as_int(name: str, value: object, minimum: int | None = None) -> int:
    """`value` as an int (numpy integers too, bools refused), or a TypeError naming `name`;
    below `minimum` (when given) a ValueError."""
    wanted = "an int" if minimum is None else f"an int >= {minimum}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {wanted}, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be {wanted}, got {value!r} ({type(value).__name__})"
        ) from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return number


def split_sizes(batch: int, replicas: int, *, min_rows: int = 1) -> list[int]:
    """Balanced chunk sizes: ``batch`` rows over at most ``replicas`` replicas.

    Args:
        batch: Rows in the batch, >= 0.
        replicas: Replicas available, >= 1.
        min_rows: Keyword-only: the fewest rows a chunk may get (fewer replicas are used
            instead); ``multi_gpu_model`` passes 2 while batch-statistics layers train. A
            batch smaller than ``min_rows`` stays whole, on one replica.

    Returns:
        One size per replica used, largest first, summing to ``batch`` (``[0]`` for an
        empty batch).

    Raises:
        ValueError: a negative batch, or ``replicas`` / ``min_rows`` below 1.
        TypeError: an argument that is not an int (numpy integers are accepted).

    Examples:
        >>> split_sizes(7, 3)
        [3, 2, 2]
        >>> split_sizes(2, 3)
        [1, 1]
        >>> split_sizes(5, 3, min_rows=2)
        [3, 2]
    """
    batch = as_int("batch", batch)
    replicas = as_int("replicas", replicas)
    min_rows = as_int("min_rows", min_rows)
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if min_rows < 1:
        raise ValueError(f"min_rows must be >= 1, got {min_rows}")
    used = max(1, min(replicas, batch // min_rows))
    base, extra = divmod(batch, used)
    return [base + 1] * extra + [base] * (used - extra)


def _split(
    obj: object, sizes: list[int], devices: list[torch.device], scatter: ScatterFn
) -> list[Any]:
    n = len(sizes)
    if isinstance(obj, torch.Tensor):
        if obj.dim() == 0:
            return [obj.to(device) for device in devices]
        return list(scatter(obj, sizes, devices))
    node = children(obj)
    if node is None:
        return [obj] * n
    parts, rebuild = node
    split_parts = [_split(value, sizes, devices, scatter) for _, value in parts]
    return [rebuild([p[i] for p in split_parts]) for i in range(n)]


def split_inputs(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    devices: list[torch.device],
    *,
    scatter: ScatterFn = generic_scatter,
    min_rows: int = 1,
) -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], list[int]]:
    """One ``(args, kwargs)`` per replica that gets rows (possibly fewer than ``devices``).

    Args:
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.
        devices: One device per replica.
        scatter: How one tensor is cut and moved (generic or ``torch.nn.parallel``).
        min_rows: The fewest rows a chunk may get (see ``split_sizes``).

    Returns:
        ``(parts, sizes)``: a list of ``(args, kwargs)``, one for each replica used, in
        device order, and the chunk sizes. A call without a batch tensor has nothing to
        split: one part (for the first replica) and no sizes (``[]``).

    Raises:
        ValueError: batch tensors disagree on dim 0.
    """
    batch = batch_size_of(args, kwargs)
    sizes = [0] if batch is None else split_sizes(batch, len(devices), min_rows=min_rows)
    used = devices[: len(sizes)]
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "multi_gpu_model: %s rows split %s over %s",
            batch,
            sizes,
            ", ".join(str(d) for d in used),
        )
    split_args = _split(tuple(args), sizes, used, scatter)
    split_kwargs = _split(dict(kwargs), sizes, used, scatter)
    parts = [(tuple(a), dict(k)) for a, k in zip(split_args, split_kwargs, strict=True)]
    return parts, ([] if batch is None else sizes)


class _NotBatched(Exception):
    """Internal: a part that the rule cannot merge (carries the path and the reason)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def _describe(values: list[Any]) -> str:
    def one(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"tensor of shape {tuple(v.shape)}"
        text = repr(v)
        return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"

    return ", ".join(one(v) for v in values)


class _Merger:
    def __init__(
        self,
        sizes: list[int],
        target: torch.device,
        gather: GatherFn,
        merge: MergeFn | None,
    ) -> None:
        self.sizes = sizes
        self.target = target
        self.gather = gather
        self.merge = merge

    def fallback(self, path: str, values: list[Any], reason: str, strict: bool) -> Any:
        if strict:
            raise _NotBatched(path, reason)
        if self.merge is not None:
            return self.merge(path, list(values), list(self.sizes))
        raise MergeError(
            f"multi_gpu_model cannot merge {path}: {reason} (the replicas returned "
            f"{_describe(values)} for chunks of {self.sizes} rows). Its rule concatenates "
            "tensors whose dim 0 is the batch, keeps tuples, lists, dicts and dataclasses "
            "of them, and concatenates per-sample lists (one entry per row); return one of "
            "those, or pass multi_gpu_model(..., merge=fn), fn(path, values, sizes) -> "
            "merged value, to merge this part yourself.",
            path=path,
        )

    def per_sample(self, values: list[Any]) -> bool:
        if not all(
            type(v) is list and len(v) == n for v, n in zip(values, self.sizes, strict=True)
        ):
            return False
        types = {type(entry) for v in values for entry in v}
        return len(types) <= 1

    def run(self, values: list[Any], path: str, strict: bool) -> Any:
        sizes = self.sizes
        first = values[0]
        if all(isinstance(v, torch.Tensor) for v in values):
            if all(
                v.dim() >= 1 and int(v.shape[0]) == n for v, n in zip(values, sizes, strict=True)
            ):
                return self.gather(list(values), self.target)
            reason = (
                "a 0-dim tensor (one per replica)"
                if all(v.dim() == 0 for v in values)
                else "a tensor without a batch dimension (dim 0 is not each chunk's rows)"
            )
            return self.fallback(path, values, reason, strict)
        if all(v is None for v in values):
            return None
        nodes = [children(v) for v in values]
        if nodes[0] is None or any(
            node is None or type(v) is not type(first)
            for node, v in zip(nodes, values, strict=True)
        ):
            if self.per_sample(values):
                return self.concat(values)
            kinds = sorted({type(v).__name__ for v in values})
            reason = (
                f"a value of type {kinds[0]}, not a batch tensor"
                if len(kinds) == 1
                else f"different types on different replicas ({', '.join(kinds)})"
            )
            return self.fallback(path, values, reason, strict)
        parts_list = [node[0] for node in nodes if node is not None]
        suffixes = [s for s, _ in parts_list[0]]
        if any([s for s, _ in parts] != suffixes for parts in parts_list[1:]):
            if self.per_sample(values):
                return self.concat(values)
            return self.fallback(
                path, values, "a container whose keys or length differ by replica", strict
            )
        if type(first) is list and self.per_sample(values):
            # Read as structure when every part is a batch tensor (or a structure of
            # them); else as one entry per row.
            try:
                return self.structure(values, nodes, path, strict=True)
            except _NotBatched:
                return self.concat(values)
        return self.structure(values, nodes, path, strict)

    def structure(self, values: list[Any], nodes: list[Any], path: str, strict: bool) -> Any:
        parts_list = [node[0] for node in nodes]
        merged = [
            self.run([parts[i][1] for parts in parts_list], path + suffix, strict)
            for i, (suffix, _) in enumerate(parts_list[0])
        ]
        return nodes[0][1](merged)

    def concat(self, values: list[Any]) -> list[Any]:
        target = self.target
        return [map_tensors(lambda t: t.to(target), e) for e in itertools.chain(*values)]


def merge_outputs(
    outputs: list[Any],
    sizes: list[int],
    target: torch.device,
    *,
    gather: GatherFn = generic_gather,
    merge: MergeFn | None = None,
) -> Any:
    """Merge the replicas' outputs into one result on ``target`` (see the module rules).

    Args:
        outputs: One output per replica used, in device order.
        sizes: The rows each of those replicas received; ``[]`` when the call had no
            batch to split (one output, returned with its tensors moved to ``target``).
        target: Where merged tensors go.
        gather: How batch tensors are concatenated.
        merge: ``merge(path, values, sizes)`` for the parts the rule cannot merge.

    Returns:
        The merged output, shaped as the plain model's would be.

    Raises:
        MergeError: a part the rule cannot merge, and no ``merge`` function (the message
            and its ``path`` attribute name the part, e.g. ``output['count']``).
    """
    if not sizes and len(outputs) == 1:
        return map_tensors(lambda t: t.to(target), outputs[0])
    if len(outputs) != len(sizes):
        raise ValueError(f"got {len(outputs)} outputs for {len(sizes)} chunk sizes")
    return _Merger(list(sizes), target, gather, merge).run(list(outputs), "output", strict=False)
