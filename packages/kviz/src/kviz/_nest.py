"""kviz's one walker over nested structures of tensors.

Every place in kviz that looks inside an input, an output or an argument list goes through
``items`` here, so that tuples, lists, dicts, ``OrderedDict``, ``defaultdict``, namedtuples
and dataclass instances are treated alike everywhere: a namedtuple's and a dataclass's items
are named by their fields, a mapping's by its keys, a list's and a tuple's by position.
Anything else (a tensor, a string, a number, None, a ``torch.distributions`` object) is a
leaf.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["flat_tensors", "items", "map_tensors", "named_tensors", "shape_of"]

# Nesting deeper than this is not followed (a guard against self-referencing containers).
MAX_DEPTH = 32


def items(obj: Any) -> Iterator[tuple[str, Any]] | None:
    """The ``(name, item)`` pairs inside ``obj``, or None when ``obj`` is a leaf."""
    if isinstance(obj, (list, tuple)):
        fields = getattr(type(obj), "_fields", None)
        if isinstance(obj, tuple) and isinstance(fields, tuple):
            return zip(fields, obj, strict=False)  # a namedtuple
        return ((str(i), v) for i, v in enumerate(obj))
    if isinstance(obj, Mapping):
        return ((str(k), v) for k, v in obj.items())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return None


def flat_tensors(obj: Any, out: list[torch.Tensor], _depth: int = 0) -> list[torch.Tensor]:
    """Append every tensor found in ``obj`` to ``out``, in order, and return ``out``."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif _depth < MAX_DEPTH:
        inner = items(obj)
        if inner is not None:
            for _, item in inner:
                flat_tensors(item, out, _depth + 1)
    return out


def named_tensors(
    obj: Any, name: str, out: list[tuple[str, torch.Tensor]], _depth: int = 0
) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in ``obj`` with a dotted path for a name (``batch.image``, ``pair.0``)."""
    if isinstance(obj, torch.Tensor):
        out.append((name, obj))
    elif _depth < MAX_DEPTH:
        inner = items(obj)
        if inner is not None:
            for key, item in inner:
                named_tensors(item, f"{name}.{key}", out, _depth + 1)
    return out


def shape_of(obj: Any, _depth: int = 0) -> Any:
    """The shapes of the tensors in ``obj``: a ``torch.Size`` (a tuple) for a tensor, a list
    for a structure holding tensors, None when it holds none."""
    if isinstance(obj, torch.Tensor):
        return obj.shape
    if _depth < MAX_DEPTH:
        inner = items(obj)
        if inner is not None:
            shapes = [shape_of(item, _depth + 1) for _, item in inner]
            return [s for s in shapes if s is not None] or None
    return None


def map_tensors(fn: Callable[[torch.Tensor], Any], obj: Any, _depth: int = 0) -> Any:
    """``obj`` rebuilt with ``fn`` applied to every tensor (containers of the same types)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if _depth >= MAX_DEPTH or items(obj) is None:
        return obj

    def sub(value: Any) -> Any:
        return map_tensors(fn, value, _depth + 1)

    if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
        return type(obj)(*(sub(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        try:
            return type(obj)(sub(v) for v in obj)
        except TypeError:
            return [sub(v) for v in obj] if isinstance(obj, list) else tuple(sub(v) for v in obj)
    if isinstance(obj, Mapping):
        try:
            rebuilt = copy.copy(obj)  # keeps a defaultdict's factory, an OrderedDict's order
            for key, value in obj.items():
                rebuilt[key] = sub(value)  # type: ignore[index]
            return rebuilt
        except TypeError:
            return {k: sub(v) for k, v in obj.items()}
    changes = {f.name: sub(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    return dataclasses.replace(obj, **changes)
