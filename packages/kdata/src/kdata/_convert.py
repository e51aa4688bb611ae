"""Turning numpy batches into tensors, and pinning them, without copies where possible."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["to_tensors", "pin_batch", "accelerator_available"]

# numpy kinds torch can hold: bool, signed/unsigned ints, floats, complex
_TENSOR_KINDS = frozenset("biufc")


def to_tensors(batch: Any) -> Any:
    """Turn the numpy arrays (and numpy scalars) of a batch into tensors, recursively.

    Tuples, lists, dicts (any mapping) and namedtuples keep their structure; arrays become
    tensors sharing their memory where numpy allows it (``torch.from_numpy``); arrays of
    strings or objects, tensors and everything else pass through unchanged.

    Args:
        batch: an array, a scalar, or a nested tuple/list/dict of them.

    Returns:
        The same structure with tensors in place of numeric numpy arrays.

    Examples:
        >>> import numpy as np
        >>> x, y = to_tensors((np.zeros((2, 3)), np.array([1, 0])))
        >>> tuple(x.shape), y.dtype
        ((2, 3), torch.int64)
    """
    kind = type(batch)
    if kind is tuple:
        # (x, y) of plain arrays is by far the most common batch: convert it without a
        # recursive call per item, since this runs once per batch (the loader's overhead)
        items = []
        for item in batch:
            if type(item) is np.ndarray and item.flags.writeable:
                try:
                    items.append(torch.from_numpy(item))
                    continue
                except (TypeError, ValueError):
                    pass
            items.append(to_tensors(item))
        return tuple(items)
    if isinstance(batch, np.ndarray):
        if batch.flags.writeable:
            try:
                # the common case first: one call, no dtype inspection (a per-batch cost)
                return torch.from_numpy(batch)
            except (TypeError, ValueError):
                pass
        return _odd_array(batch)
    if isinstance(batch, np.generic):
        if batch.dtype.kind in _TENSOR_KINDS:
            return torch.as_tensor(batch)
        return batch
    if isinstance(batch, tuple):  # a namedtuple
        return type(batch)(*[to_tensors(item) for item in batch])
    if isinstance(batch, list):
        return [to_tensors(item) for item in batch]
    if isinstance(batch, Mapping):
        converted = {key: to_tensors(value) for key, value in batch.items()}
        if type(batch) is dict:
            return converted
        try:
            return type(batch)(converted)  # type: ignore[call-arg]
        except TypeError:
            return converted
    return batch


def _odd_array(batch: np.ndarray[Any, Any]) -> Any:
    """Arrays ``torch.from_numpy`` refuses or warns about: strings, read-only, byte-swapped,
    negative strides."""
    if batch.dtype.kind not in _TENSOR_KINDS:
        return batch
    # one copy, native byte order, positive strides, writable
    return torch.from_numpy(np.array(batch, dtype=batch.dtype.newbyteorder("="), order="C"))


def accelerator_available() -> bool:
    """Whether a device that benefits from pinned memory is present (CUDA, XPU, ...)."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def pin_batch(batch: Any) -> Any:
    """Copy every CPU tensor of a (nested) batch into pinned (page-locked) memory.

    Without an accelerator there is nothing to pin for: the batch comes back unchanged.

    Examples:
        >>> import torch
        >>> out = pin_batch({"x": torch.zeros(2)})
        >>> sorted(out)
        ['x']
    """
    if not accelerator_available():
        return batch
    return _pin(batch)


def _pin(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch if batch.is_pinned() or batch.device.type != "cpu" else batch.pin_memory()
    if isinstance(batch, tuple):
        if hasattr(batch, "_fields"):
            return type(batch)(*(_pin(item) for item in batch))
        return tuple(_pin(item) for item in batch)
    if isinstance(batch, list):
        return [_pin(item) for item in batch]
    if isinstance(batch, Mapping):
        return {key: _pin(value) for key, value in batch.items()}
    return batch


def warn_no_accelerator() -> None:
    """Say once, as DataLoader does, that ``pin_memory=True`` has nothing to pin for."""
    warnings.warn(
        "pin_memory=True, but no accelerator is available: batches are not pinned",
        UserWarning,
        stacklevel=3,
    )
