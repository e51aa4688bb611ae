"""Batches of rows as slices: the sampler that keeps DataLoader's per-batch cost small."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

import kregistry
from kdata._convert import to_tensors
from kdata._hdf5 import BatchRows, HDF5Dataset, HDF5Matrix, warn_random_on_compressed
from kdata._order import (
    _as_int,
    epoch_order,
    resolve_seed,
    resolve_shard,
    shard,
    shard_length,
)

__all__ = ["SliceBatchSampler", "batch_loader", "collate_batch"]

_SHUFFLES = (False, True, "batch", "chunks")
_MAX_WINDOW = 16  # chunk-rows mixed together by shuffle="chunks" (by default)


def _chunk_layout(dataset: Any) -> tuple[int, int, int] | None:
    """``(offset, chunk_rows, window)`` of a chunked HDF5 view: chunk boundaries sit at
    view rows ``k * chunk_rows - offset``; ``window`` chunk-rows fit the chunk cache."""
    if isinstance(dataset, HDF5Dataset):
        layouts = [_chunk_layout(matrix) for matrix in dataset.matrices]
        found = [layout for layout in layouts if layout is not None]
        if not found:
            return None
        # the largest chunks decide (members are usually chunked alike)
        offset, rows, _ = max(found, key=lambda layout: layout[1])
        return offset, rows, min(layout[2] for layout in found)
    if not isinstance(dataset, HDF5Matrix):
        return None
    reader = dataset._reader
    info = reader.info
    if info.chunks is None:
        return None
    # a batch at the border of two windows needs the chunks of both: half the cache each
    held = reader.cache_bytes // max(info.chunk_row_bytes, 1)
    window = max(1, min(_MAX_WINDOW, held // 2))
    return dataset.start % info.chunks[0], info.chunks[0], window


def chunk_order(
    length: int, chunk_rows: int, offset: int, window: int, seed: int, epoch: int
) -> np.ndarray[Any, Any]:
    """A permutation of ``range(length)`` that keeps reads inside a few chunks at a time.

    The rows are cut at chunk boundaries (view row ``k * chunk_rows - offset``); the order
    of the chunks is shuffled; then the rows of each run of ``window`` consecutive chunks
    (in that order) are shuffled together. Fixed by ``(seed, epoch)``.
    """
    rng = np.random.default_rng([seed, epoch])
    first = (chunk_rows - offset) % chunk_rows or chunk_rows
    starts: np.ndarray[Any, Any] = np.concatenate(
        ([0], np.arange(first, length, chunk_rows))
    ).astype(np.int64)
    if not length:
        starts = starts[:0]
    ends = np.append(starts[1:], length)
    chosen = rng.permutation(len(starts))
    pieces = []
    for at in range(0, len(chosen), window):
        group = chosen[at : at + window]
        rows = np.concatenate([np.arange(starts[g], ends[g], dtype=np.int64) for g in group])
        rng.shuffle(rows)
        pieces.append(rows)
    if not pieces:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(pieces)


def _positive(value: Any, name: str) -> int:
    return _as_int(value, name, minimum=1)


class SliceBatchSampler(Sampler[Any]):
    """Batch keys for a dataset that takes slices: ``slice(a, b)`` per batch, not 256 ints.

    Use with ``DataLoader(dataset, sampler=..., batch_size=None)``: each batch is then one
    ``dataset[key]`` call (one contiguous HDF5 read for an `HDF5Matrix`), and
    worker processes receive a slice instead of a list of Python ints.

    Args:
        length: number of rows, or the dataset (sized; an `HDF5Matrix` or `HDF5Dataset`
            also gives its chunk layout for ``shuffle="chunks"``).
        batch_size: rows per batch.
        shuffle: ``False`` (in order), ``"batch"`` (Keras's HDF5 mode: the order of the
            contiguous batches is shuffled, rows inside a batch stay in order, reads stay
            sequential), ``"chunks"`` (for chunked, compressed data: the order of the
            HDF5 chunks is shuffled and rows are shuffled within a window of chunks, so
            each chunk is decompressed about once per epoch) or ``True`` (a true random
            permutation of rows: each batch is an index array, read sorted and put back
            in random order; slow on compressed chunks, which it decompresses again and
            again: a one-time warning says so).
        seed: seed of the shuffles; the order depends only on ``(seed, epoch)``.
        drop_last: drop the last, smaller batch (and, when sharded, the batches that
            cannot be split evenly between ranks).
        rank: this process's rank; with ``world_size`` each rank gets its share of the
            batches (as `torch.utils.data.DistributedSampler` splits them: equal
            counts, padded by repeating batches unless ``drop_last``). Both ``None``:
            from the ``torch.distributed`` default group if initialized, else no sharding.
        world_size: the number of ranks.
        chunk_rows: rows per chunk for ``shuffle="chunks"`` (default: the dataset's).
        window: chunks whose rows are mixed by ``shuffle="chunks"`` (default: half as
            many as the dataset's chunk cache holds, at most 16).

    Each ``iter()`` is one epoch and advances the epoch number; ``set_epoch`` sets it.

    Raises:
        TypeError: ``length`` is neither an int nor sized, or ``batch_size``,
            ``chunk_rows`` or ``window`` is not an int.
        ValueError: ``length < 0``, ``batch_size < 1``, a bad ``shuffle``, ``rank`` or
            ``world_size``, or ``shuffle="chunks"`` without a chunk size.

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
        chunk_rows: int | None = None,
        window: int | None = None,
    ) -> None:
        if isinstance(length, (str, bytes)):
            raise TypeError(f"length must be an int or a sized dataset, got {length!r}")
        dataset = None
        if not isinstance(length, (int, np.integer)) and hasattr(length, "__len__"):
            dataset, length = length, len(length)
        try:
            length = operator.index(length)
        except TypeError:
            raise TypeError(f"length must be an int or a sized dataset, got {length!r}") from None
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        batch_size = _positive(batch_size, "batch_size")
        if isinstance(shuffle, np.bool_):
            shuffle = bool(shuffle)
        if not any(shuffle is choice or shuffle == choice for choice in _SHUFFLES) or (
            isinstance(shuffle, int) and not isinstance(shuffle, bool)
        ):
            raise ValueError(f"shuffle must be False, True, 'batch' or 'chunks', got {shuffle!r}")
        self.length = int(length)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = resolve_shard(rank, world_size)
        self.seed = resolve_seed(seed, self.world_size, shuffle is not False)
        self.epoch = 0
        self.chunk_rows: int | None = None
        self.chunk_offset = 0
        self.window = 1
        if shuffle == "chunks":
            layout = _chunk_layout(dataset)
            if chunk_rows is not None:
                self.chunk_rows = _positive(chunk_rows, "chunk_rows")
                self.chunk_offset = layout[0] if layout and layout[1] == self.chunk_rows else 0
            elif layout is not None:
                self.chunk_offset, self.chunk_rows, self.window = layout
            else:
                what = type(dataset).__name__ if dataset is not None else repr(length)
                raise ValueError(
                    f"shuffle='chunks' needs chunk_rows=... or a chunked HDF5Matrix or "
                    f"HDF5Dataset as length, got {what}"
                )
            if window is not None:
                self.window = _positive(window, "window")
        elif shuffle is True and dataset is not None:
            warn_random_on_compressed(dataset, stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        """Set the number of the next epoch (it fixes the shuffle)."""
        self.epoch = _as_int(epoch, "epoch", minimum=0)

    def _batches(self) -> int:
        full, extra = divmod(int(self.length), self.batch_size)
        return full if self.drop_last or not extra else full + 1

    def __len__(self) -> int:
        return shard_length(self._batches(), self.world_size, self.drop_last)

    def _rows(self, epoch: int) -> np.ndarray[Any, Any]:
        if self.shuffle == "chunks":
            assert self.chunk_rows is not None
            return chunk_order(
                self.length, self.chunk_rows, self.chunk_offset, self.window, self.seed, epoch
            )
        return epoch_order(self.length, True, self.seed, epoch)

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        count, size = self._batches(), self.batch_size
        order = shard(
            epoch_order(count, self.shuffle == "batch", self.seed, epoch),
            self.rank,
            self.world_size,
            self.drop_last,
        )
        if self.shuffle is True or self.shuffle == "chunks":
            rows = self._rows(epoch)
            for batch in order.tolist():
                yield rows[batch * size : (batch + 1) * size]
            return
        length = self.length
        for batch in order.tolist():
            start = batch * size
            yield slice(start, min(start + size, length))


def collate_batch(batch: Any) -> Any:
    """A ``collate_fn`` for datasets whose ``__getitems__`` returns `BatchRows`.

    The rows were read as one block: the block becomes tensors directly (no per-row
    stacking). Any other batch goes through torch's ``default_collate``. (torch's
    default collate now takes the same fast path for kdata's datasets, giving lists for
    tuple samples as it always does; this one gives tuples.)

    Examples:
        >>> collate_batch([1, 2])
        tensor([1, 2])
    """
    if isinstance(batch, BatchRows):
        return to_tensors(batch.batch)
    return default_collate(batch)  # type: ignore[no-untyped-call]


class _Rows(Dataset[Any]):
    """Batches of a numpy array or tensor: ``copy=True`` makes every batch its own memory
    (a slice of an array is a view of it otherwise)."""

    def __init__(self, data: Any, copy: bool) -> None:
        self.data = data
        self.copy = copy

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> Any:
        out = self.data[key]
        if not self.copy:
            return out
        if isinstance(out, torch.Tensor):
            return out.clone() if isinstance(key, slice) else out
        if isinstance(out, np.ndarray):
            # a slice is a view; a gather is already new memory (a plain ndarray)
            return np.array(out) if isinstance(key, slice) or type(out) is not np.ndarray else out
        return out


class _Zipped(Dataset[Any]):
    """``(x, y, ...)`` (or dict) batches from array-likes of equal length."""

    def __init__(self, members: list[Any], keys: tuple[str, ...] | None) -> None:
        self.members = members
        self.keys = keys

    def __len__(self) -> int:
        return len(self.members[0])

    def __getitem__(self, key: Any) -> Any:
        parts = [member[key] for member in self.members]
        if self.keys is None:
            return tuple(parts)
        return dict(zip(self.keys, parts, strict=False))


class _BatchLoader(DataLoader[Any]):
    """The ``DataLoader`` `batch_loader` returns: without workers (and without pinning),
    each batch is ``collate_fn(dataset[key])`` with nothing around it; DataLoader's own
    single-process iterator (profiler records, checks) costs more than reading a batch of
    a hot file. With workers or ``pin_memory``, DataLoader's machinery runs as always."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if self.num_workers or self.pin_memory:
            return super().__iter__()
        # draw the per-epoch seed as DataLoader does, so torch's global RNG advances alike
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._batches(iter(self.sampler))

    def _batches(self, keys: Iterator[Any]) -> Iterator[Any]:
        dataset, collate = self.dataset, self.collate_fn
        for key in keys:
            yield collate(dataset[key])


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor, HDF5Matrix, HDF5Dataset)) or (
        hasattr(value, "shape") and hasattr(value, "__getitem__") and hasattr(value, "__len__")
    )


def _prepare(dataset: Any, copy: bool) -> Any:
    """The dataset batch_loader reads: array structures zipped, arrays copied."""
    if isinstance(dataset, (np.ndarray, torch.Tensor)):
        return _Rows(dataset, copy)
    keys: tuple[str, ...] | None = None
    if isinstance(dataset, Mapping) and dataset:
        keys, members = tuple(dataset), list(dataset.values())
    elif type(dataset) is tuple and dataset:  # a list stays a dataset of samples
        members = list(dataset)
    else:
        return dataset
    if not all(_is_array_like(member) for member in members):
        return dataset
    labels = list(keys) if keys is not None else [f"#{i}" for i in range(len(members))]
    lengths = {label: len(member) for label, member in zip(labels, members, strict=False)}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"dataset members must have the same number of rows, got {lengths} "
            f"(one row of each per sample)"
        )
    if all(isinstance(member, HDF5Matrix) for member in members):
        if keys is None:
            return HDF5Dataset.from_matrices(*members)
        return HDF5Dataset.from_matrices(**dict(zip(keys, members, strict=False)))
    return _Zipped([_prepare(member, copy) for member in members], keys)


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
    copy: bool = True,
    chunk_rows: int | None = None,
    window: int | None = None,
    **dataloader_kwargs: Any,
) -> DataLoader[Any]:
    """A ``DataLoader`` of batches fetched by slice (`SliceBatchSampler`).

    For any dataset that takes slices and index arrays and returns whole batches
    (`HDF5Matrix`, `HDF5Dataset`, numpy arrays, tensors), and for a tuple or dict
    of them (Keras's ``(x, y)``: equal lengths, one row of each per sample; a tuple of
    `HDF5Matrix` views is read as `HDF5Dataset.from_matrices`): each batch is one fetch,
    numpy batches become tensors, and the active kregistry scope is installed in worker
    processes.

    Args:
        dataset: the data.
        batch_size: rows per batch (as `SliceBatchSampler`).
        shuffle: ``False``, ``True``, ``"batch"`` or ``"chunks"`` (as `SliceBatchSampler`).
        seed: the shuffling seed (as `SliceBatchSampler`).
        drop_last: drop a last, short batch.
        rank: this rank's share, when sharded (default: from ``torch.distributed``).
        world_size: the number of ranks (default: from ``torch.distributed``).
        collate_fn: applied to each fetched batch; default: numpy arrays to tensors.
        worker_init_fn: the user's worker initializer (run after the scope is installed).
        copy: batches of numpy arrays and tensors are copies, never views of your arrays
            (``False``: slices are views, zero-copy; writing to a batch writes to your
            array).
        chunk_rows: rows per chunk for ``shuffle="chunks"`` (default: the dataset's).
        window: chunks mixed together by ``shuffle="chunks"`` (as `SliceBatchSampler`).
        **dataloader_kwargs: passed to ``DataLoader`` (``num_workers``, ``pin_memory``,
            ``multiprocessing_context``, ``persistent_workers``, ...).

    Raises:
        TypeError: ``dataloader_kwargs`` sets ``sampler`` or ``batch_sampler`` (the slice
            sampler is the point of this function).
        ValueError: a bad ``batch_size``, ``shuffle``, ``rank`` or ``world_size`` (as
            `SliceBatchSampler`), or members of a tuple/dict of different lengths.

    Examples:
        >>> import numpy as np
        >>> [tuple(b.shape) for b in batch_loader(np.zeros((5, 3)), batch_size=2)]
        [(2, 3), (2, 3), (1, 3)]
        >>> x, y = np.zeros((5, 3)), np.arange(5)
        >>> [yb.tolist() for _, yb in batch_loader((x, y), batch_size=2)]
        [[0, 1], [2, 3], [4]]
    """
    taken = {"sampler", "batch_sampler"} & dataloader_kwargs.keys()
    if taken:
        raise TypeError(
            f"batch_loader sets {sorted(taken)} itself; pass shuffle=False/True/'batch'/"
            f"'chunks' and the other DataLoader arguments only"
        )
    data = _prepare(dataset, bool(copy))
    if shuffle is True:
        warn_random_on_compressed(data, stacklevel=2)
    sampler = SliceBatchSampler(
        data if shuffle == "chunks" else len(data),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        chunk_rows=chunk_rows,
        window=window,
    )
    if dataloader_kwargs.get("num_workers", 0):
        dataloader_kwargs["worker_init_fn"] = kregistry.ScopedWorkerInit(then=worker_init_fn)
    elif worker_init_fn is not None:
        dataloader_kwargs["worker_init_fn"] = worker_init_fn
    return _BatchLoader(
        data,
        batch_size=None,
        sampler=sampler,
        collate_fn=to_tensors if collate_fn is None else collate_fn,
        **dataloader_kwargs,
    )
