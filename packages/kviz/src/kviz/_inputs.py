"""Example inputs: ``input_size`` / ``input_data`` / ``dtypes`` / ``device``, as torchinfo
reads them, turned into the positional and keyword arguments of one forward call."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._nest import map_tensors

__all__ = ["ExampleInput", "build_inputs", "move"]

ExampleInput = tuple[tuple[Any, ...], dict[str, Any]]


def _is_shape(value: Any) -> bool:
    # numbers.Integral: shapes computed with numpy (np.int64 dimensions) are shapes too.
    return isinstance(value, (list, tuple, torch.Size)) and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in value
    )


def _shapes(input_size: Any) -> list[tuple[int, ...]]:
    if _is_shape(input_size) and len(input_size) > 0:
        shapes = [tuple(int(d) for d in input_size)]
    elif (
        isinstance(input_size, (list, tuple))
        and input_size
        and all(_is_shape(s) for s in input_size)
    ):
        # In a list of shapes, [] or () is a 0-d (scalar) input.
        shapes = [tuple(int(d) for d in s) for s in input_size]
    else:
        raise TypeError(
            f"input_size must be a shape such as (1, 3, 32, 32) or a list of shapes, one "
            f"per model input ([] for a 0-d input), got {input_size!r}"
        )
    for shape in shapes:
        if any(d <= 0 for d in shape):
            raise ValueError(f"input_size must hold positive dimensions, got {input_size!r}")
    return shapes


def _dtypes(dtypes: Any, count: int) -> list[torch.dtype]:
    if dtypes is None:
        return [torch.float32] * count
    if isinstance(dtypes, torch.dtype):
        return [dtypes] * count
    if isinstance(dtypes, (list, tuple)) and all(isinstance(d, torch.dtype) for d in dtypes):
        if len(dtypes) != count:
            raise ValueError(
                f"dtypes must have one dtype per input ({count}), got {len(dtypes)}: "
                f"{list(dtypes)!r}"
            )
        return list(dtypes)
    raise TypeError(
        f"dtypes must be a torch.dtype or a list of them, one per input, got {dtypes!r}"
    )


def _device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be a torch.device or a string such as 'cpu' or 'cuda:0', got {device!r}"
        ) from exc


def move(data: Any, device: torch.device) -> Any:
    """``data`` with every tensor moved to ``device`` (its containers kept)."""
    return map_tensors(lambda t: t.to(device), data)


def build_inputs(input_size: Any, input_data: Any, dtypes: Any, device: Any) -> ExampleInput | None:
    """The ``(args, kwargs)`` of the example forward call, or None when no input is given.

    ``input_size``: one shape (batch dimension included) or a list of shapes; tensors are
    random for floating dtypes and zeros otherwise (valid indices for embeddings).
    ``input_data``: a tensor (one argument), a list or tuple (positional arguments) or a
    dict (keyword arguments), as in ``torchinfo.summary``.

    Raises:
        ValueError: both inputs given, a bad shape, a dtype count that does not match.
        TypeError: an input of the wrong type.
    """
    if input_size is not None and input_data is not None:
        raise ValueError("give input_size or input_data, not both")
    dev = _device(device)
    if input_size is not None:
        shapes = _shapes(input_size)
        kinds = _dtypes(dtypes, len(shapes))
        tensors = []
        for shape, dtype in zip(shapes, kinds, strict=False):
            try:
                if dtype.is_floating_point or dtype.is_complex:
                    t = torch.rand(shape, device=dev).to(dtype)
                else:
                    t = torch.zeros(shape, dtype=dtype, device=dev)
            except RuntimeError as exc:
                raise ValueError(
                    f"input_size={input_size!r}: cannot create a {dtype} tensor of shape "
                    f"{shape} on {dev or 'cpu'}: {exc}"
                ) from None
            tensors.append(t)
        return tuple(tensors), {}
    if input_data is None:
        if dtypes is not None:
            raise ValueError("dtypes applies to input_size; give input_size too")
        return None
    if dtypes is not None:
        raise ValueError("dtypes applies to input_size; input_data carries its own dtypes")
    try:
        data = move(input_data, dev) if dev is not None else input_data
    except RuntimeError as exc:
        raise ValueError(f"cannot move input_data to device={device!r}: {exc}") from None
    if isinstance(data, torch.Tensor):
        return (data,), {}
    if isinstance(data, Mapping):
        if not all(isinstance(k, str) for k in data):
            raise TypeError(
                f"input_data as a dict is passed as keyword arguments; its keys must be "
                f"strings, got {list(data)!r}"
            )
        return (), dict(data)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return tuple(data), {}
    raise TypeError(
        f"input_data must be a tensor, a list/tuple of positional arguments or a dict of "
        f"keyword arguments, got {type(input_data).__name__}"
    )
