"""Numpy indexing rules for the first (row) axis of a view, resolved before any read."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["RowPlan", "checked_rows", "has_array_index", "plan_rows", "split_key"]

_VALID = (
    "only integers, slices (`:`), ellipsis (`...`), None, lists and integer or boolean "
    "arrays are valid indices"
)


@dataclass
class RowPlan:
    """Which rows to read (view coordinates) and how to index the block that comes back.

    ``kind`` is ``"range"`` (``start``, ``stop``, ``step > 0``) or ``"rows"`` (``rows``:
    sorted, unique). ``local`` indexes the block read, giving the requested rows in the
    requested order (an int, a slice, an index array, or, for a mask over several leading
    axes, the mask's rows that were read).
    """

    kind: str
    local: Any
    start: int = 0
    stop: int = 0
    step: int = 1
    rows: np.ndarray[Any, Any] | None = None

    @property
    def count(self) -> int:
        if self.kind == "range":
            return len(range(self.start, self.stop, self.step))
        assert self.rows is not None
        return len(self.rows)


def _is_bool_scalar(key: Any) -> bool:
    if isinstance(key, (bool, np.bool_)):
        return True
    return isinstance(key, np.ndarray) and key.ndim == 0 and key.dtype == np.bool_


def _from_torch(key: Any) -> Any:
    if isinstance(key, torch.Tensor):
        return key.detach().cpu().numpy()
    if isinstance(key, tuple):
        return tuple(_from_torch(part) for part in key)
    return key


def split_key(key: Any) -> tuple[Any, Any, bool]:
    """``(row_key, rest, whole)``; tensors in ``key`` become numpy arrays.

    ``whole`` means the first element of the key does not select rows (``None``, a
    leading ``...``, a boolean scalar, which adds an axis): the full key then applies to
    all rows, and ``rest`` is that full key.
    """
    key = _from_torch(key)
    if isinstance(key, tuple):
        if not key:
            return slice(None), (), False
        first, rest = key[0], key[1:]
        if first is Ellipsis or first is None or _is_bool_scalar(first):
            return slice(None), key, True
        return first, rest, False
    if key is Ellipsis:
        return slice(None), (), False
    if key is None or _is_bool_scalar(key):
        return slice(None), key, True
    return key, (), False


def has_array_index(parts: tuple[Any, ...]) -> bool:
    """Whether ``parts`` holds an index that numpy broadcasts with an array row index."""
    return any(isinstance(part, (list, np.ndarray)) or _is_bool_scalar(part) for part in parts)


def _as_index_array(key: Any) -> np.ndarray[Any, Any] | None:
    if isinstance(key, torch.Tensor):
        key = key.detach().cpu().numpy()
    if isinstance(key, list):
        array = np.asarray(key)
        if array.size == 0:
            return np.zeros(0, dtype=np.intp)
        key = array
    if isinstance(key, np.ndarray):
        return key
    return None


def checked_rows(key: np.ndarray[Any, Any], length: int) -> np.ndarray[Any, Any]:
    """A 1-D integer index array checked against `length` rows, negatives wrapped."""
    rows = key.astype(np.int64, copy=False)
    if rows.size:
        low, high = int(rows.min()), int(rows.max())
        if low < -length or high >= length:
            bad = low if low < -length else high
            raise IndexError(f"index {bad} is out of bounds for axis 0 with size {length}")
        if low < 0:
            rows = np.where(rows < 0, rows + length, rows)
    return rows


def plan_rows(key: Any, length: int) -> RowPlan:
    """Resolve a row key against a view of ``length`` rows, with numpy's rules.

    Raises:
        IndexError: an index out of range, a mask of the wrong length, or a key type numpy
            would refuse.
    """
    if isinstance(key, slice):
        start, stop, step = key.indices(length)
        if step > 0:
            return RowPlan("range", slice(None), start, max(start, stop), step)
        count = len(range(start, stop, step))
        if count == 0:
            return RowPlan("range", slice(None), 0, 0, 1)
        low = start + (count - 1) * step
        return RowPlan("range", slice(None, None, -1), low, start + 1, -step)
    if isinstance(key, (bool, np.bool_)):
        raise IndexError(f"boolean scalar index {key!r} is not supported; {_VALID}")
    array = _as_index_array(key)
    if array is None:
        try:
            index = operator.index(key)
        except TypeError:
            raise IndexError(f"index {key!r} ({type(key).__name__}): {_VALID}") from None
        if not -length <= index < length:
            raise IndexError(f"index {index} is out of bounds for axis 0 with size {length}")
        index %= length if length else 1
        return RowPlan("range", 0, index, index + 1, 1)
    if array.dtype == np.bool_:
        if array.ndim == 0 or array.shape[0] != length:
            raise IndexError(
                f"boolean index of shape {array.shape} does not match the {length} rows "
                f"(a row mask needs one entry per row along its first axis)"
            )
        if array.ndim == 1:
            return RowPlan("rows", slice(None), rows=np.flatnonzero(array))
        # a mask over several leading axes: read the rows it touches, apply the rest
        rows = np.flatnonzero(array.any(axis=tuple(range(1, array.ndim))))
        return RowPlan("rows", array[rows], rows=rows)
    if array.dtype.kind not in "iu":
        raise IndexError(f"index array of dtype {array.dtype}: {_VALID}")
    if array.ndim == 0:
        return plan_rows(int(array), length)
    flat = checked_rows(array.reshape(-1), length)
    if flat.size <= 1 or bool(np.all(flat[1:] > flat[:-1])):
        # already sorted and unique: the block read is the answer
        local: Any = slice(None) if array.ndim == 1 else np.arange(flat.size).reshape(array.shape)
        return RowPlan("rows", local, rows=flat)
    rows, inverse = np.unique(flat, return_inverse=True)
    return RowPlan("rows", inverse.reshape(array.shape), rows=rows)
