"""The split and merge rules that both replica paths share.

Split: the batch size is dim 0 of the first tensor (of one or more dimensions) found in the
call's positional then keyword arguments, walking tuples, lists and dicts in order. Every
such tensor must have that dim 0 and is cut into contiguous, balanced chunks (7 rows on 3
replicas: 3, 2, 2); a batch smaller than the replica count uses fewer replicas (one row
each). Zero-dimensional tensors are copied to every replica's device; anything that is not
a tensor (ints, strings, None, flags, objects) goes to every replica unchanged.

Merge: the replicas' outputs must have the same structure; tensors are concatenated along
dim 0 on the target device, zero-dimensional ones (a per-replica loss, say) are stacked
into a vector with one entry per replica (as ``nn.DataParallel`` does); other values are
returned once when every replica returned an equal value, else as a list, one per replica.

How one tensor is moved is pluggable: the generic movers use ``narrow``/``to``/``cat`` (any
device, autograd-aware); the CUDA path passes ``torch.nn.parallel``'s Scatter and Gather.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch

__all__ = [
    "ScatterFn",
    "GatherFn",
    "batch_size_of",
    "generic_gather",
    "generic_scatter",
    "merge_outputs",
    "split_inputs",
    "split_sizes",
]

ScatterFn = Callable[[torch.Tensor, list[int], list[torch.device]], Sequence[torch.Tensor]]
GatherFn = Callable[[list[torch.Tensor], torch.device], torch.Tensor]


def generic_scatter(
    tensor: torch.Tensor, sizes: list[int], devices: list[torch.device]
) -> list[torch.Tensor]:
    """Cut ``tensor`` along dim 0 into ``sizes`` and move chunk i to ``devices[i]``.

    On the tensor's own device a chunk is a view (no copy); gradients flow back through
    ``narrow`` and ``to``.
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
    if isinstance(obj, Mapping):
        found: list[tuple[str, torch.Tensor]] = []
        for key, value in obj.items():
            found.extend(_tensors(value, f"{path}[{key!r}]"))
        return found
    if isinstance(obj, tuple | list):
        found = []
        for i, value in enumerate(obj):
            found.extend(_tensors(value, f"{path}[{i}]"))
        return found
    return []


def batch_size_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """Dim 0 of the first tensor of one or more dimensions, checking all agree.

    Returns:
        The batch size, or ``None`` when the call holds no such tensor.

    Raises:
        ValueError: two batch tensors disagree on dim 0 (the message names both).
    """
    leaves = _tensors(args, "args") + _tensors(dict(kwargs), "kwargs")
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


def split_sizes(batch: int, replicas: int) -> list[int]:
    """Balanced chunk sizes: ``batch`` rows over at most ``replicas`` replicas.

    Examples:
        >>> split_sizes(7, 3)
        [3, 2, 2]
        >>> split_sizes(2, 3)
        [1, 1]
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    used = max(1, min(replicas, batch))
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
    if isinstance(obj, Mapping):
        per_key = {k: _split(v, sizes, devices, scatter) for k, v in obj.items()}
        return [_rebuild_mapping(obj, {k: v[i] for k, v in per_key.items()}) for i in range(n)]
    if isinstance(obj, tuple | list):
        parts = [_split(v, sizes, devices, scatter) for v in obj]
        return [_rebuild_sequence(obj, [p[i] for p in parts]) for i in range(n)]
    return [obj] * n


def _rebuild_mapping(template: Mapping[Any, Any], items: dict[Any, Any]) -> Any:
    if type(template) is dict:
        return items
    try:
        return cast(Any, type(template))(items)
    except TypeError:
        return items


def _rebuild_sequence(template: tuple[Any, ...] | list[Any], items: list[Any]) -> Any:
    if isinstance(template, tuple) and hasattr(template, "_fields"):  # a namedtuple
        return type(template)(*items)
    if type(template) in (tuple, list):
        return type(template)(items)
    try:
        return type(template)(items)
    except TypeError:
        return tuple(items) if isinstance(template, tuple) else items


def split_inputs(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    devices: list[torch.device],
    *,
    scatter: ScatterFn = generic_scatter,
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """One ``(args, kwargs)`` per replica that gets rows (possibly fewer than ``devices``).

    Args:
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.
        devices: One device per replica.
        scatter: How one tensor is cut and moved (generic or ``torch.nn.parallel``).

    Returns:
        A list of ``(args, kwargs)``, one for each replica used, in device order.

    Raises:
        ValueError: batch tensors disagree on dim 0.
    """
    batch = batch_size_of(args, kwargs)
    sizes = [0] if batch is None else split_sizes(batch, len(devices))
    used = devices[: len(sizes)]
    split_args = _split(tuple(args), sizes, used, scatter)
    split_kwargs = _split(dict(kwargs), sizes, used, scatter)
    return [(tuple(a), dict(k)) for a, k in zip(split_args, split_kwargs, strict=True)]


def _equal(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # an == that returns an array or raises: treat as different
        return False


def merge_outputs(
    outputs: list[Any], target: torch.device, *, gather: GatherFn = generic_gather
) -> Any:
    """Merge the replicas' outputs into one result on ``target`` (see the module rules).

    Raises:
        ValueError: the replicas returned different structures.
    """
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(o, torch.Tensor) for o in outputs):
            raise ValueError("the replicas returned a tensor on some replicas only")
        if first.dim() == 0:
            return gather([o.reshape(1) for o in outputs], target)
        return gather(list(outputs), target)
    if isinstance(first, Mapping):
        keys = list(first.keys())
        for o in outputs[1:]:
            if not isinstance(o, Mapping) or list(o.keys()) != keys:
                raise ValueError(
                    f"the replicas returned dicts with different keys: {keys} vs "
                    f"{list(o.keys()) if isinstance(o, Mapping) else type(o).__name__}"
                )
        merged = {k: merge_outputs([o[k] for o in outputs], target, gather=gather) for k in keys}
        return _rebuild_mapping(first, merged)
    if isinstance(first, tuple | list):
        for o in outputs[1:]:
            if not isinstance(o, tuple | list) or len(o) != len(first):
                raise ValueError("the replicas returned sequences of different lengths")
        items = [
            merge_outputs([o[i] for o in outputs], target, gather=gather) for i in range(len(first))
        ]
        return _rebuild_sequence(first, items)
    if all(_equal(first, o) for o in outputs[1:]):
        return first
    return list(outputs)
