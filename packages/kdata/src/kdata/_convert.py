"""Turning numpy batches into tensors, and pinning them; kdata's one nested-structure walker."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["accelerator_available", "map_structure", "pin_batch", "to_tensors"]

# numpy kinds torch can hold: bool, signed/unsigned ints, floats, complex
_TENSOR_KINDS = frozenset("biufc")


def map_structure(fn: Callable[[Any], Any], batch: Any) -> Any:
    """Apply `fn` to every leaf of a nested batch, keeping each container's type.

    The one walker of kdata. Containers: tuple, list, namedtuple, dict and any other
    mapping (`OrderedDict`, `defaultdict` with its `default_factory`, ...), and dataclass
    instances (their `init` fields). Everything else (arrays, tensors, strings, scalars) is
    a leaf. A mapping type that cannot be rebuilt from a dict comes back as a `dict`.

    Examples:
        >>> from collections import OrderedDict
        >>> out = map_structure(lambda v: v * 2, OrderedDict(a=1, b=(2, [3])))
        >>> type(out).__name__, dict(out)
        ('OrderedDict', {'a': 2, 'b': (4, [6])})
    """
    kind = type(batch)
    if kind is tuple:
        return tuple([map_structure(fn, item) for item in batch])
    if kind is list:
        return [map_structure(fn, item) for item in batch]
    if kind is dict:
        return {key: map_structure(fn, value) for key, value in batch.items()}
    if isinstance(batch, tuple):
        items = [map_structure(fn, item) for item in batch]
        if hasattr(batch, "_fields"):  # a namedtuple
            return kind(*items)
        return kind(items)  # a tuple subclass
    if isinstance(batch, list):
        return kind([map_structure(fn, item) for item in batch])
    if isinstance(batch, Mapping):
        converted = {key: map_structure(fn, value) for key, value in batch.items()}
        if isinstance(batch, defaultdict):
            return kind(batch.default_factory, converted)
        try:
            return kind(converted)
        except TypeError:
            return converted
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            field.name: map_structure(fn, getattr(batch, field.name))
            for field in dataclasses.fields(batch)
            if field.init
        }
        return dataclasses.replace(batch, **changes)
    return fn(batch)


def _array_to_tensor(array: np.ndarray[Any, Any], copy: bool) -> Any:
    if array.dtype.kind not in _TENSOR_KINDS:
        return array.copy() if copy else array  # strings, objects: stay arrays
    if array.flags.writeable and array.dtype.isnative:
        try:
            tensor = torch.from_numpy(array)
        except (TypeError, ValueError):  # negative strides, ...
            pass
        else:
            return torch.from_numpy(array.copy()) if copy else tensor
    # read-only, byte-swapped or negative strides: one copy, native order, positive strides
    return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), order="C"))


def _leaf_to_tensor(leaf: Any, copy: bool) -> Any:
    if isinstance(leaf, np.ndarray):
        return _array_to_tensor(leaf, copy)
    if isinstance(leaf, np.generic):
        if leaf.dtype.kind in _TENSOR_KINDS:
            return torch.as_tensor(leaf)
        return leaf
    if copy and isinstance(leaf, torch.Tensor):
        return leaf.clone()
    return leaf


def _leaf_to_tensor_copy(leaf: Any) -> Any:
    return _leaf_to_tensor(leaf, True)


def _leaf_to_tensor_shared(leaf: Any) -> Any:
    return _leaf_to_tensor(leaf, False)


def to_tensors(batch: Any, *, copy: bool = False) -> Any:
    """Turn the numpy arrays (and numpy scalars) of a batch into tensors, recursively.

    Tuples, lists, namedtuples, dicts (`OrderedDict`, `defaultdict`, any mapping) and
    dataclasses keep their structure and type; arrays of strings or objects and everything
    else pass through unchanged.

    Args:
        batch: an array, a scalar, or a nested tuple/list/dict of them.
        copy: `False` (default): a tensor shares its array's memory where numpy allows it
            (`torch.from_numpy`, no copy), and tensors pass through as they are. `True`:
            every tensor in the result owns fresh memory (arrays and tensors copied), so
            a later change to the source arrays cannot reach the batch.

    Returns:
        The same structure with tensors in place of numeric numpy arrays.

    Examples:
        >>> import numpy as np
        >>> x, y = to_tensors((np.zeros((2, 3)), np.array([1, 0])))
        >>> tuple(x.shape), y.dtype
        ((2, 3), torch.int64)
        >>> source = np.zeros(2)
        >>> shared, copied = to_tensors(source), to_tensors(source, copy=True)
        >>> source[0] = 7.0
        >>> float(shared[0]), float(copied[0])
        (7.0, 0.0)
    """
    leaf = _leaf_to_tensor_copy if copy else _leaf_to_tensor_shared
    if type(batch) is tuple:
        # (x, y) of plain arrays is by far the most common batch: convert it without a
        # walk per item, since this runs once per batch (the loader's overhead)
        items = []
        for item in batch:
            if type(item) is np.ndarray and item.flags.writeable:
                try:
                    # numpy's copy then from_numpy: half the time of a torch clone
                    items.append(torch.from_numpy(item.copy() if copy else item))
                    continue
                except (TypeError, ValueError):
                    pass
            items.append(map_structure(leaf, item))
        return tuple(items)
    if type(batch) is np.ndarray and batch.flags.writeable:
        try:
            # the common case first: one call, no dtype inspection (a per-batch cost)
            return torch.from_numpy(batch.copy() if copy else batch)
        except (TypeError, ValueError):
            pass
    return map_structure(leaf, batch)


def unaliased_tensors(batch: Any, _probe: list[int] | None = None) -> Any:
    """`to_tensors(batch, copy=True)`, without copying arrays that nothing else can reach.

    Call it as `unaliased_tensors(batch)` where `batch` is a local variable holding what
    `__getitem__` returned, and nothing else refers to it (the loader's fetch loop). An
    array that owns its memory (no `base`) and is referred to only by the batch (its
    reference count says so, measured against the same call made on fresh arrays when this
    module is imported) was made for this batch: a gather, arithmetic, a fresh read. Its
    memory cannot be the user's, so it becomes a tensor without a copy. Everything else
    (views, arrays the sequence keeps, tensors, nested structures) is copied.
    """
    limits = _LIMITS
    if type(batch) is tuple:
        fresh_tuple = sys.getrefcount(batch)
        if _probe is not None:
            _probe.append(fresh_tuple)
        item_limit = -1 if limits is None or fresh_tuple > limits[0] else limits[1]
        items = []
        for item in batch:
            count = sys.getrefcount(item)
            if _probe is not None:
                _probe.append(count)
            elif type(item) is np.ndarray:
                flags = item.flags
                owned = count <= item_limit and item.base is None and flags.owndata
                try:
                    if owned and flags.writeable:
                        items.append(torch.from_numpy(item))
                    else:
                        items.append(torch.from_numpy(item.copy()))
                    continue
                except (TypeError, ValueError):  # strings, objects, byte-swapped
                    pass
            items.append(to_tensors(item, copy=True))
        return tuple(items)
    if type(batch) is np.ndarray:
        count = sys.getrefcount(batch)
        if _probe is not None:
            _probe.append(count)
        elif limits is not None and count <= limits[2] and batch.base is None:
            flags = batch.flags
            if flags.owndata and flags.writeable:
                try:
                    return torch.from_numpy(batch)
                except (TypeError, ValueError):
                    pass
    return to_tensors(batch, copy=True)


def _calibrate() -> tuple[int, int, int] | None:
    """Reference counts that mean "only the batch refers to it", for `unaliased_tensors`.

    Measured by making the loader's call on fresh arrays; None (always copy) where the
    interpreter has no reference counts or they are not stable.
    """
    if not hasattr(sys, "getrefcount"):
        return None
    seen = []
    for _ in range(3):
        probe: list[int] = []
        batch: Any = (np.empty(1), np.empty(1))
        unaliased_tensors(batch, _probe=probe)
        batch = np.empty(1)
        unaliased_tensors(batch, _probe=probe)
        seen.append(tuple(probe))
    if len(set(seen)) != 1 or len(seen[0]) != 4:
        return None
    tuple_count, item_count, _, array_count = seen[0]
    return tuple_count, item_count, array_count


_LIMITS: tuple[int, int, int] | None = None
_LIMITS = _calibrate()


def accelerator_available() -> bool:
    """Whether a device that benefits from pinned memory is present (CUDA, XPU, ...)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def _pin_leaf(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu" and not leaf.is_pinned():
        return leaf.pin_memory()
    return leaf


def pin_batch(batch: Any) -> Any:
    """Copy every CPU tensor of a (nested) batch into pinned (page-locked) memory.

    Containers keep their type (as `to_tensors`). Without an accelerator there is nothing
    to pin for: the batch comes back unchanged.

    Examples:
        >>> import torch
        >>> out = pin_batch({"x": torch.zeros(2)})
        >>> sorted(out)
        ['x']
    """
    if not accelerator_available():
        return batch
    return map_structure(_pin_leaf, batch)


def warn_no_accelerator(stacklevel: int = 3) -> None:
    """Say, as DataLoader does, that `pin_memory=True` has nothing to pin for."""
    warnings.warn(
        "pin_memory=True, but no accelerator is available: batches are not pinned",
        UserWarning,
        stacklevel=stacklevel,
    )


def _copy_leaf(leaf: Any) -> Any:
    if isinstance(leaf, np.ndarray):
        return leaf.copy()
    if isinstance(leaf, torch.Tensor):
        return leaf.clone()
    return leaf


def copy_batch(batch: Any) -> Any:
    """A copy of a (nested) batch whose arrays and tensors own fresh memory."""
    return map_structure(_copy_leaf, batch)
