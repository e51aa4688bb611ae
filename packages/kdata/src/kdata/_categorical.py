"""``to_categorical`` and ``normalize``: Keras 2's results, for numpy arrays and tensors."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["to_categorical", "normalize"]

# to_categorical gathers rows of a num_classes x num_classes identity up to this many
# classes (at most 8 MiB of float64); beyond it, it fills zeros and sets the ones
_MAX_IDENTITY_CLASSES = 1024

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int": torch.int64,
    "int64": torch.int64,
    "long": torch.int64,
    "bool": torch.bool,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}


def _torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype if isinstance(dtype, str) else None
    if name is None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name is None or name not in _TORCH_DTYPES:
        raise TypeError(
            f"dtype={dtype!r} is not a dtype a tensor can hold; use a name such as 'float32', "
            f"'float64', 'int64', 'uint8', 'bool', a numpy dtype or a torch.dtype"
        )
    return _TORCH_DTYPES[name]


def _numpy_dtype(dtype: Any) -> np.dtype[Any]:
    if isinstance(dtype, torch.dtype):
        for name, candidate in _TORCH_DTYPES.items():
            if candidate == dtype and name != "bfloat16":
                return np.dtype(name)
        raise TypeError(f"dtype={dtype!r} has no numpy equivalent; use e.g. 'float32'")
    try:
        resolved: np.dtype[Any] = np.dtype(dtype)
        return resolved
    except TypeError:
        raise TypeError(
            f"dtype={dtype!r} is not a numpy dtype; use e.g. 'float32', 'int64', 'uint8'"
        ) from None


def _check_num_classes(num_classes: Any) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool):
        raise TypeError(f"num_classes must be a positive int or None, got {num_classes!r}")
    try:
        value = operator.index(num_classes)
    except TypeError:
        raise TypeError(
            f"num_classes must be a positive int or None, got {num_classes!r} "
            f"({type(num_classes).__name__})"
        ) from None
    if value < 1:
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    return value


def _label_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    # Keras 2: a trailing axis of size 1 is dropped, unless it is the only axis
    if len(shape) > 1 and shape[-1] == 1:
        return shape[:-1]
    return shape


def _check_range(
    low: Any,
    high: Any,
    num_classes: int | None,
    argmin: Callable[[], Any],
    argmax: Callable[[], Any],
) -> int:
    """The number of classes, after checking the labels' range (numpy and torch alike).

    ``argmin`` and ``argmax`` give the flat positions for the message, only on error.
    """
    if low < 0:
        raise ValueError(
            f"class indices must be >= 0, got {low!r} at flat position {int(argmin())}"
        )
    if num_classes is None:
        return int(high) + 1
    if high >= num_classes:
        raise ValueError(
            f"class index {high!r} (flat position {int(argmax())}) is out of range for "
            f"num_classes={num_classes}; labels must be in [0, {num_classes})"
        )
    return num_classes


@overload
def to_categorical(
    y: torch.Tensor, num_classes: int | None = None, dtype: Any = "float32"
) -> torch.Tensor: ...
@overload
def to_categorical(
    y: npt.ArrayLike, num_classes: int | None = None, dtype: Any = "float32"
) -> np.ndarray[Any, Any]: ...
def to_categorical(
    y: Any, num_classes: int | None = None, dtype: Any = "float32"
) -> np.ndarray[Any, Any] | torch.Tensor:
    """One-hot encode integer class labels (numpy array-like or tensor).

    Keras 2's contract: the result has shape ``y.shape + (num_classes,)``, except that a
    trailing axis of size 1 is replaced (``(3, 1)`` gives ``(3, num_classes)``); ``(1,)``
    gives ``(1, num_classes)``. Unlike Keras, labels are checked: a negative, non-integral
    or too large label is an error instead of a silently wrong row.

    Args:
        y: class indices, numpy array-like or tensor (ints, or floats holding whole
            numbers, or bools).
        num_classes: total number of classes; by default ``max(y) + 1``.
        dtype: dtype of the result (a name such as ``'float32'``, a numpy dtype or, for
            tensors, a ``torch.dtype``).

    Returns:
        A numpy array for array-like input; a tensor on ``y``'s device for tensor input.

    Raises:
        ValueError: a label is negative, not a whole number, not finite, or not less than
            ``num_classes``; ``num_classes`` is less than 1; ``y`` is empty and
            ``num_classes`` is not given.
        TypeError: ``y`` does not hold numbers, or ``num_classes``/``dtype`` is of the
            wrong type.

    Examples:
        >>> to_categorical([0, 2, 1], num_classes=3)
        array([[1., 0., 0.],
               [0., 0., 1.],
               [0., 1., 0.]], dtype=float32)
    """
    classes = _check_num_classes(num_classes)
    if isinstance(y, torch.Tensor):
        return _to_categorical_torch(y, classes, _torch_dtype(dtype))
    return _to_categorical_numpy(y, classes, _numpy_dtype(dtype))


def _to_categorical_numpy(
    y: Any, num_classes: int | None, dtype: np.dtype[Any]
) -> np.ndarray[Any, Any]:
    labels = np.asarray(y)
    if labels.dtype.kind not in "biuf":
        raise TypeError(
            f"y must hold integer class indices, got an array of dtype {labels.dtype} "
            f"(e.g. {labels.ravel()[:1].tolist()!r})"
        )
    shape = _label_shape(labels.shape)
    flat = labels.reshape(-1)
    if flat.size == 0:
        if num_classes is None:
            raise ValueError("y is empty, so num_classes cannot be inferred: pass num_classes")
        return np.zeros((*shape, num_classes), dtype=dtype)
    if flat.dtype.kind == "f":
        bad = ~np.isfinite(flat) | (flat != np.floor(flat))
        if bad.any():
            raise ValueError(
                f"y must hold whole-number class indices, got {flat[bad][0].item()!r} at flat "
                f"position {int(np.argmax(bad))}"
            )
    num_classes = _check_range(
        flat.min().item(),
        flat.max().item(),
        num_classes,
        lambda: np.argmin(flat),
        lambda: np.argmax(flat),
    )
    index = flat.astype(np.intp, copy=False)
    if num_classes <= min(index.size, _MAX_IDENTITY_CLASSES):
        # gathering rows of an identity matrix writes each output byte once (no zero-fill
        # pass); the identity stays small, and no larger than the output
        out = np.take(np.eye(num_classes, dtype=dtype), index, axis=0)
    else:
        # many classes, few labels: an identity of num_classes**2 would dwarf the output
        out = np.zeros((index.size, num_classes), dtype=dtype)
        out[np.arange(index.size), index] = 1
    return out.reshape((*shape, num_classes))


def _to_categorical_torch(
    y: torch.Tensor, num_classes: int | None, dtype: torch.dtype
) -> torch.Tensor:
    if y.dtype.is_complex:
        raise TypeError(f"y must hold integer class indices, got a tensor of dtype {y.dtype}")
    shape = _label_shape(tuple(y.shape))
    flat = y.reshape(-1)
    if flat.numel() == 0:
        if num_classes is None:
            raise ValueError("y is empty, so num_classes cannot be inferred: pass num_classes")
        return torch.zeros((*shape, num_classes), dtype=dtype, device=y.device)
    if flat.dtype.is_floating_point:
        bad = ~torch.isfinite(flat) | (flat != torch.floor(flat))
        if bool(bad.any()):
            position = int(torch.argmax(bad.to(torch.uint8)))
            raise ValueError(
                f"y must hold whole-number class indices, got {flat[position].item()!r} at "
                f"flat position {position}"
            )
    if flat.dtype == torch.bool:
        flat = flat.to(torch.int64)
    low, high = torch.aminmax(flat)
    num_classes = _check_range(
        low.item(),
        high.item(),
        num_classes,
        lambda: torch.argmin(flat),
        lambda: torch.argmax(flat),
    )
    index = flat.to(torch.int64).unsqueeze(1)
    # one zero-filled output and a scatter: F.one_hot builds an int64 matrix first, then
    # .float() copies it again
    out = torch.zeros((flat.numel(), num_classes), dtype=dtype, device=y.device)
    out.scatter_(1, index, 1)
    return out.reshape((*shape, num_classes))


@overload
def normalize(x: torch.Tensor, axis: int = -1, order: float = 2) -> torch.Tensor: ...
@overload
def normalize(x: npt.ArrayLike, axis: int = -1, order: float = 2) -> np.ndarray[Any, Any]: ...
def normalize(x: Any, axis: int = -1, order: float = 2) -> np.ndarray[Any, Any] | torch.Tensor:
    """Normalize an array (or tensor) to unit ``order``-norm along ``axis``.

    Keras 2's result: ``x / norm(x, order, axis)``, where a zero vector stays zero (its
    norm is taken as 1, so there is no NaN). Any axis and any vector-norm order
    (``1``, ``2``, ``np.inf``, ``0``, ``3``, ...) work, for numpy and torch.

    Args:
        x: the data, numpy array-like or tensor.
        axis: the axis along which vectors are normalized.
        order: the norm's order, as for ``np.linalg.norm`` on vectors.

    Returns:
        A normalized copy of ``x``'s shape (Keras 2 turned a 1-D ``x`` into shape
        ``(1, n)``; here it stays ``(n,)``): a floating-point numpy array (int input
        becomes float64, as in Keras), or a tensor on ``x``'s device (int input becomes
        the default float dtype).

    Raises:
        TypeError: ``axis`` is not an int, ``order`` not a number, or ``x`` not numeric.
        ValueError: ``axis`` is out of range for ``x``.

    Examples:
        >>> normalize([[3.0, 4.0], [0.0, 0.0]])
        array([[0.6, 0.8],
               [0. , 0. ]])
    """
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {axis!r} ({type(axis).__name__})")
    if isinstance(order, bool) or not isinstance(order, (int, float, np.integer, np.floating)):
        raise TypeError(f"order must be a number (1, 2, np.inf, ...), got {order!r}")
    if isinstance(x, torch.Tensor):
        return _normalize_torch(x, int(axis), float(order))
    array = np.asarray(x)
    if array.dtype.kind not in "biufc":
        raise TypeError(f"x must be numeric, got an array of dtype {array.dtype}")
    axis = _check_axis(int(axis), array.ndim)
    # keepdims: a 1-D input keeps its shape (Keras 2 returned shape (1, n) for it)
    norms = np.linalg.norm(array, order, axis, keepdims=True)
    norms[norms == 0] = 1
    return array / norms  # type: ignore[no-any-return]


def _check_axis(axis: int, ndim: int) -> int:
    if ndim == 0:
        raise ValueError("x must have at least one dimension to normalize along, got a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for an input with {ndim} dimension(s)")
    return axis


def _normalize_torch(x: torch.Tensor, axis: int, order: float) -> torch.Tensor:
    if not (x.dtype.is_floating_point or x.dtype.is_complex):
        x = x.to(torch.get_default_dtype())
    axis = _check_axis(axis, x.ndim)
    norms = torch.linalg.vector_norm(x, ord=order, dim=axis, keepdim=True)
    norms = torch.where(norms == 0, torch.ones_like(norms), norms)
    return x / norms
