"""Batches of rows as slices: the sampler that keeps DataLoader's per-batch cost small."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Sampler
from torch.utils.data._utils.collate import default_collate

import kregistry
from kdata._convert import to_tensors
from kdata._hdf5 import BatchRows
from kdata._order import epoch_order, resolve_seed, resolve_shard, shard

__all__ = ["SliceBatchSampler", "batch_loader", "collate_batch"]

_SHUFFLES = (False, True, "batch")


class SliceBatchSampler(Sampler[Any]):
    """Batch keys for a dataset that takes slices: ``slice(a, b)`` per batch, not 256 ints.

    Use with ``DataLoader(dataset, sampler=..., batch_size=None)``: each batch is then one
    ``dataset[key]`` call (one contiguous HDF5 read for an :class:`HDF5Matrix`), and
    worker processes receive a slice instead of a list of Python ints.

    Args:
        length: number of rows (or a sized dataset).
        batch_size: rows per batch.
        shuffle: ``False`` (in order), ``"batch"`` (Keras's HDF5 mode: the order of the
            contiguous batches is shuffled, rows inside a batch stay in order, reads stay
            sequential) or ``True`` (a true random permutation of rows: each batch is an
            index array, read sorted and put back in random order).
        seed: seed of the shuffles; the order depends only on ``(seed, epoch)``.
        drop_last: drop the last, smaller batch (and, when sharded, the batches that
            cannot be split evenly between ranks).
        rank: this process's rank; with ``world_size`` each rank gets its share of the
            batches. Both ``None``: from the ``torch.distributed`` default group if
            initialized, else no sharding.
        world_size: the number of ranks.

    Each ``iter()`` is one epoch and advances the epoch number; :meth:`set_epoch` sets it.

    Raises:
        TypeError: ``length`` is neither an int nor sized, or ``batch_size`` is not an int.
        ValueError: ``length < 0``, ``batch_size < 1``, a bad ``shuffle``, ``rank`` or
            ``world_size``.

    Examples:
        >>> list(SliceBatchSampler(5, 2))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """

    def __init__(
        self,
        length: Any,
        batch_size: int = 32,
        *,
        shuffle: bool | str = False,
        seed: int | None = None,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if isinstance(length, (str, bytes)):
            raise TypeError(f"length must be an int or a sized dataset, got {length!r}")
        if not isinstance(length, int) and hasattr(length, "__len__"):
            length = len(length)
        try:
            length = operator.index(length)
        except TypeError:
            raise TypeError(f"length must be an int or a sized dataset, got {length!r}") from None
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not any(shuffle is choice or shuffle == choice for choice in _SHUFFLES) or (
            isinstance(shuffle, int) and not isinstance(shuffle, bool)
        ):
            raise ValueError(f"shuffle must be False, True or 'batch', got {shuffle!r}")
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world_size = resolve_shard(rank, world_size)
        self.seed = resolve_seed(seed, self.world_size, shuffle is not False)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the number of the next epoch (it fixes the shuffle)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def _batches(self) -> int:
        full, extra = divmod(int(self.length), self.batch_size)
        return full if self.drop_last or not extra else full + 1

    def __len__(self) -> int:
        count = self._batches()
        if self.world_size == 1:
            return count
        if self.drop_last:
            return count // self.world_size
        return len(range(self.rank, count, self.world_size))

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        count, size = self._batches(), self.batch_size
        order = shard(
            epoch_order(count, self.shuffle == "batch", self.seed, epoch),
            self.rank,
            self.world_size,
            self.drop_last,
        )
        if self.shuffle is True:
            rows = epoch_order(self.length, True, self.seed, epoch)
            for batch in order.tolist():
                yield rows[batch * size : (batch + 1) * size]
            return
        length = self.length
        for batch in order.tolist():
            start = batch * size
            yield slice(start, min(start + size, length))


def collate_batch(batch: Any) -> Any:
    """A ``collate_fn`` for datasets whose ``__getitems__`` returns :class:`BatchRows`.

    The rows were read as one block: the block becomes tensors directly (no per-row
    stacking). Any other batch goes through torch's ``default_collate``.

    Examples:
        >>> collate_batch([1, 2])
        tensor([1, 2])
    """
    if isinstance(batch, BatchRows):
        return to_tensors(batch.batch)
    return default_collate(batch)  # type: ignore[no-untyped-call]


def batch_loader(
    dataset: Any,
    batch_size: int = 32,
    *,
    shuffle: bool | str = False,
    seed: int | None = None,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    collate_fn: Callable[[Any], Any] | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
    **dataloader_kwargs: Any,
) -> DataLoader[Any]:
    """A ``DataLoader`` of batches fetched by slice (:class:`SliceBatchSampler`).

    For any dataset that takes slices and index arrays and returns whole batches
    (:class:`HDF5Matrix`, :class:`HDF5Dataset`, numpy arrays, tensors): each batch is one
    fetch, numpy batches become tensors, and the active kregistry scope is installed in
    worker processes.

    Args:
        dataset: the data.
        batch_size: rows per batch (as :class:`SliceBatchSampler`).
        shuffle: ``False``, ``True`` or ``"batch"`` (as :class:`SliceBatchSampler`).
        seed: the shuffling seed (as :class:`SliceBatchSampler`).
        drop_last: drop a last, short batch.
        rank: this rank's share, when sharded (default: from ``torch.distributed``).
        world_size: the number of ranks (default: from ``torch.distributed``).
        collate_fn: applied to each fetched batch; default: numpy arrays to tensors.
        worker_init_fn: the user's worker initializer (run after the scope is installed).
        **dataloader_kwargs: passed to ``DataLoader`` (``num_workers``, ``pin_memory``,
            ``multiprocessing_context``, ``persistent_workers``, ...).

    Raises:
        TypeError: ``dataloader_kwargs`` sets ``sampler`` or ``batch_sampler`` (the slice
            sampler is the point of this function).
        ValueError: a bad ``batch_size``, ``shuffle``, ``rank`` or ``world_size`` (as
            :class:`SliceBatchSampler`).

    Examples:
        >>> import numpy as np
        >>> [tuple(b.shape) for b in batch_loader(np.zeros((5, 3)), batch_size=2)]
        [(2, 3), (2, 3), (1, 3)]
    """
    taken = {"sampler", "batch_sampler"} & dataloader_kwargs.keys()
    if taken:
        raise TypeError(
            f"batch_loader sets {sorted(taken)} itself; pass shuffle=False/True/'batch' and "
            f"the other DataLoader arguments only"
        )
    sampler = SliceBatchSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
    )
    if dataloader_kwargs.get("num_workers", 0):
        dataloader_kwargs["worker_init_fn"] = kregistry.ScopedWorkerInit(then=worker_init_fn)
    elif worker_init_fn is not None:
        dataloader_kwargs["worker_init_fn"] = worker_init_fn
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=to_tensors if collate_fn is None else collate_fn,
        **dataloader_kwargs,
    )
