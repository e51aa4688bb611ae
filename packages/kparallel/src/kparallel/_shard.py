"""Sharding a dataset, or a ``kdata.Sequence``-like object, across ranks.

Duck typing only (no import of kdata): anything with ``__len__`` and ``__getitem__`` is a
dataset of items; if it also has ``on_epoch_end`` it is taken to be a Keras-style
``Sequence`` whose items are whole batches, and the epoch hook is forwarded.

The protocol shared with sibling packages: every object ``shard`` returns carries
``__kshard__ = (rank, world_size)``; an object whose ``__kshard__`` is not ``None`` is
already a shard, and both ``shard`` and kdata refuse to shard it again.
"""

from __future__ import annotations

import operator
from typing import Any, Protocol, cast, runtime_checkable

from torch.utils.data import Dataset, DistributedSampler

from ._distributed import current_context
from ._split import as_int

__all__ = ["ShardedDataset", "ShardedSequence", "SizedIndexable", "shard"]


@runtime_checkable
class SizedIndexable(Protocol):
    """What ``shard`` needs: ``len(data)`` and ``data[i]``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


def _refuse_sharded(data: object) -> None:
    mark = getattr(data, "__kshard__", None)
    if mark is not None:
        raise ValueError(
            f"data is already sharded (its __kshard__ is {mark!r}: rank, world_size); "
            "sharding it again would give each rank a share of a share. Shard the "
            "original data once."
        )


class ShardedDataset(Dataset[Any]):
    """This rank's share of a dataset: the indices ``DistributedSampler`` gives this rank.

    The indices are exactly those of ``torch.utils.data.DistributedSampler(data,
    num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)``
    after ``set_epoch(epoch)`` (it computes them): every rank gets the same number of
    items. Without ``drop_last`` the order is padded by repeating its first items up to a
    multiple of ``world_size`` (so a few items are seen twice per epoch); with it the tail
    past the last full round is dropped. With ``shuffle`` the order is a permutation seeded
    by ``seed + epoch``, the same on every rank; call ``set_epoch`` each epoch.

    It carries ``__kshard__ = (rank, world_size)``: sibling packages (kdata) and ``shard``
    refuse to shard it again.

    Args:
        data: Anything with ``len`` and ``[i]``.
        rank: This rank, in ``[0, world_size)`` (numpy integers accepted).
        world_size: Number of ranks, >= 1.
        shuffle: Permute the order each epoch (same permutation on every rank).
        seed: Base seed of the permutation.
        drop_last: Drop the tail instead of padding it.

    Raises:
        ValueError: ``rank`` or ``world_size`` out of range, or ``data`` already sharded.
        TypeError: ``rank``, ``world_size`` or ``seed`` is not an int.

    Examples:
        >>> list(ShardedDataset(range(5), rank=1, world_size=2))
        [1, 3, 0]
        >>> ShardedDataset(range(5), rank=1, world_size=2).__kshard__
        (1, 2)
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
        world_size = as_int("world_size", world_size, minimum=1)
        rank = as_int("rank", rank)
        seed = as_int("seed", seed)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        _refuse_sharded(data)
        self.data = data
        self.rank = rank
        self.world_size = world_size
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.__kshard__: tuple[int, int] = (rank, world_size)
        self._indices = self._compute()

    def _compute(self) -> list[int]:
        # torch's own sampler computes the indices: equal to DistributedSampler by
        # construction, for every torch version.
        sampler: DistributedSampler[Any] = DistributedSampler(
            cast(Dataset[Any], self.data),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=self.drop_last,
        )
        sampler.set_epoch(self.epoch)
        return [int(i) for i in sampler]

    @property
    def indices(self) -> list[int]:
        """The underlying indices this rank reads, in order."""
        return list(self._indices)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (matters with ``shuffle``; same call on every rank)."""
        self.epoch = as_int("epoch", epoch)
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
            f"items={len(self)} of {len(self.data)}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, epoch={self.epoch})"
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
    """Give this rank its share of ``data``: ``DistributedSampler``'s indices for it.

    Every rank gets the same number of items (padded by repeating the first items unless
    ``drop_last``), so a loop with one collective per item never waits on a rank that
    ran out. The result carries ``__kshard__ = (rank, world_size)``.

    Args:
        data: A map-style dataset (``len`` and ``[i]``) or a ``Sequence``-like object
            (also ``on_epoch_end``; items are batches).
        rank: This rank; default from the process group (0 without one).
        world_size: Number of ranks; default from the process group (1 without one).
        shuffle: Permute the order each epoch (same permutation on every rank).
            ``DistributedSampler`` defaults to True; ``shard`` to False (a Keras
            ``Sequence`` keeps its batch order).
        seed: Base seed of the permutation.
        drop_last: Drop the items past the last full round instead of padding.

    Returns:
        A ``ShardedSequence`` for ``Sequence``-like data, else a ``ShardedDataset``.

    Raises:
        TypeError: ``data`` cannot be indexed (an ``IterableDataset``, say), or a
            non-int ``rank``/``world_size``.
        ValueError: ``rank``/``world_size`` out of range, or ``data`` is already a shard
            (its ``__kshard__`` is set).

    Examples:
        >>> [list(shard(range(10), rank=r, world_size=3)) for r in range(3)]
        [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
        >>> [list(shard(range(10), rank=r, world_size=3, drop_last=True)) for r in range(3)]
        [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    """
    _refuse_sharded(data)
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
