"""kparallel's one nested-structure walker.

Every place that looks inside a call's arguments or a model's outputs (finding the batch
size, splitting inputs, merging outputs, moving per-sample entries) goes through
``children``, so they all agree on what a container is:

* mappings: ``dict``, ``OrderedDict``, ``defaultdict`` (its ``default_factory`` kept) and
  any other ``Mapping`` that can be rebuilt from a dict (else a plain ``dict``);
* namedtuples (rebuilt by field), tuples and lists, subclasses included;
* dataclass instances (their ``init`` fields; rebuilt with ``dataclasses.replace``).

Anything else (tensors, numbers, strings, ``None``, other objects) is a leaf.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch

__all__ = ["children", "map_tensors"]

Rebuild = Callable[[list[Any]], Any]


def _rebuild_mapping(template: Mapping[Any, Any], keys: list[Any]) -> Rebuild:
    def rebuild(values: list[Any]) -> Any:
        items = dict(zip(keys, values, strict=True))
        if type(template) is dict:
            return items
        if isinstance(template, collections.defaultdict):
            return type(template)(template.default_factory, items)
        try:
            return cast(Any, type(template))(items)
        except TypeError:
            return items

    return rebuild


def _rebuild_sequence(template: tuple[Any, ...] | list[Any]) -> Rebuild:
    def rebuild(values: list[Any]) -> Any:
        if isinstance(template, tuple) and hasattr(template, "_fields"):  # a namedtuple
            return type(template)(*values)
        if type(template) in (tuple, list):
            return type(template)(values)
        try:
            return type(template)(values)
        except TypeError:
            return tuple(values) if isinstance(template, tuple) else values

    return rebuild


def children(obj: object) -> tuple[list[tuple[str, Any]], Rebuild] | None:
    """The parts of a container, each with its path suffix, and how to rebuild it.

    Args:
        obj: Any value.

    Returns:
        ``None`` for a leaf; else ``(parts, rebuild)`` where ``parts`` lists
        ``(suffix, value)`` in order (suffixes like ``"['key']"``, ``"[0]"``, ``".field"``)
        and ``rebuild(values)`` makes a container of the same kind from new values.

    Examples:
        >>> parts, rebuild = children({"a": 1, "b": (2, 3)})
        >>> [suffix for suffix, _ in parts]
        ["['a']", "['b']"]
        >>> rebuild([10, 20])
        {'a': 10, 'b': 20}
    """
    if isinstance(obj, torch.Tensor | str | bytes) or obj is None:
        return None
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        return [(f"[{k!r}]", obj[k]) for k in keys], _rebuild_mapping(obj, keys)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        fields = list(obj._fields)
        return [(f".{f}", v) for f, v in zip(fields, obj, strict=True)], _rebuild_sequence(obj)
    if isinstance(obj, tuple | list):
        return [(f"[{i}]", v) for i, v in enumerate(obj)], _rebuild_sequence(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = [f.name for f in dataclasses.fields(obj) if f.init]
        instance = obj

        def rebuild(values: list[Any]) -> Any:
            return dataclasses.replace(instance, **dict(zip(names, values, strict=True)))

        return [(f".{n}", getattr(obj, n)) for n in names], rebuild
    return None


def map_tensors(fn: Callable[[torch.Tensor], Any], obj: object) -> Any:
    """``obj`` rebuilt with ``fn`` applied to every tensor leaf (other leaves kept).

    Examples:
        >>> map_tensors(lambda t: t * 2, {"x": [torch.tensor(1.0)], "n": 3})
        {'x': [tensor(2.)], 'n': 3}
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    node = children(obj)
    if node is None:
        return obj
    parts, rebuild = node
    return rebuild([map_tensors(fn, value) for _, value in parts])
