"""Sharding a dataset, or a ``kdata.Sequence``-like object, across ranks.

Duck typing only (no import of kdata): anything with ``__len__`` and ``__getitem__`` is a
dataset of items; if it also has ``on_epoch_end`` it is taken to be a Keras-style
``Sequence`` whose items are whole batches, and the epoch hook is forwarded.
"""

from __future__ import annotations

import operator
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset

from ._distributed import current_context

__all__ = ["ShardedDataset", "ShardedSequence", "SizedIndexable", "shard"]


@runtime_checkable
class SizedIndexable(Protocol):
    """What ``shard`` needs: ``len(data)`` and ``data[i]``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


class ShardedDataset(Dataset[Any]):
    """This rank's share of a dataset: items ``rank, rank + world_size, ...``.

    Across ranks every item appears exactly once per epoch (lengths differ by at most
    one) unless ``drop_last`` trims the tail so all ranks have the same length. With
    ``shuffle`` the order is a permutation seeded by ``seed + epoch``, the same on every
    rank, so the shares stay disjoint; call ``set_epoch`` each epoch to reshuffle.

    Args:
        data: Anything with ``len`` and ``[i]``.
        rank: This rank, in ``[0, world_size)``.
        world_size: Number of ranks, >= 1.
        shuffle: Permute the order each epoch (same permutation on every rank).
        seed: Base seed of the permutation.
        drop_last: Trim the tail so every rank has the same number of items.

    Raises:
        ValueError: ``rank`` or ``world_size`` out of range.

    Examples:
        >>> list(ShardedDataset(range(5), rank=1, world_size=2))
        [1, 3]
    """

    def __init__(
        self,
        data: SizedIndexable,
        rank: int,
        world_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        self.data = data
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._indices = self._compute()

    def _compute(self) -> list[int]:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            order = order[: n - n % self.world_size]
        return order[self.rank :: self.world_size]

    @property
    def indices(self) -> list[int]:
        """The underlying indices this rank reads, in order."""
        return list(self._indices)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (matters with ``shuffle``; same call on every rank)."""
        self.epoch = int(epoch)
        self._indices = self._compute()

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, bool):
            raise TypeError("index must be an int, got bool")
        try:
            index = operator.index(index)  # numpy integers from samplers too
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        n = len(self._indices)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a shard of {n} items")
        return self.data[self._indices[index]]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, "
            f"items={len(self)} of {len(self.data)}, shuffle={self.shuffle}, epoch={self.epoch})"
        )


class ShardedSequence(ShardedDataset):
    """This rank's share of a Keras-style ``Sequence`` (items are whole batches).

    ``on_epoch_end`` runs the wrapped sequence's hook (which must make the same change
    on every rank, e.g. a reshuffle with a seeded generator, or shares would overlap),
    then moves to the next epoch's order.
    """

    def on_epoch_end(self) -> None:
        hook = getattr(self.data, "on_epoch_end", None)
        if callable(hook):
            hook()
        self.set_epoch(self.epoch + 1)


def shard(
    data: SizedIndexable,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> ShardedDataset:
    """Give this rank its share of ``data``: every item to exactly one rank per epoch.

    Args:
        data: A map-style dataset (``len`` and ``[i]``) or a ``Sequence``-like object
            (also ``on_epoch_end``; items are batches).
        rank: This rank; default from the process group (0 without one).
        world_size: Number of ranks; default from the process group (1 without one).
        shuffle: Permute the order each epoch (same permutation on every rank).
        seed: Base seed of the permutation.
        drop_last: Trim the tail so every rank has the same number of items (needed by
            DDP loops that would otherwise wait for a missing step); then items past the
            last full round are skipped that epoch.

    Returns:
        A ``ShardedSequence`` for ``Sequence``-like data, else a ``ShardedDataset``.

    Raises:
        TypeError: ``data`` cannot be indexed (an ``IterableDataset``, say).
        ValueError: ``rank``/``world_size`` out of range.

    Examples:
        >>> [list(shard(range(10), rank=r, world_size=3)) for r in range(3)]
        [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    """
    if not isinstance(data, SizedIndexable):
        raise TypeError(
            f"shard(data=...) needs len(data) and data[i]; a {type(data).__name__} has not "
            "both (an IterableDataset must split its stream itself)"
        )
    ctx = current_context()
    rank = ctx.rank if rank is None else rank
    world_size = ctx.world_size if world_size is None else world_size
    cls = ShardedSequence if callable(getattr(data, "on_epoch_end", None)) else ShardedDataset
    return cls(data, rank, world_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
