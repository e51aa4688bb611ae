"""``HDF5Matrix`` (Keras's array-like HDF5 view, as a torch Dataset) and ``HDF5Dataset``."""

from __future__ import annotations

import math
import operator
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Sequence as AbcSequence
from typing import Any, overload

import numpy as np
from torch.utils.data import Dataset
from torch.utils.data._utils import collate as _collate

import kregistry
from kdata._categorical import normalize
from kdata._convert import _array_to_tensor
from kdata._h5file import (
    LazyFile,
    Reader,
    file_stamp,
    inspect_dataset,
    open_checked,
)
from kdata._order import _as_int
from kdata._rows import RowPlan, checked_rows, has_array_index, plan_rows, split_key

__all__ = ["HDF5Matrix", "HDF5Dataset", "BatchRows"]

_NORMALIZER_NAMESPACE = "kdata.normalizer"
# kdata's built-in normalizer names (Keras's module objects): never stored in the user's
# custom objects, so they resolve after get_custom_objects().clear(); a user's object of
# the same name wins
BUILTIN_NORMALIZERS: dict[str, Callable[..., Any]] = {"normalize": normalize}
_ITER_ROWS = 1024


class _Row(np.ndarray[Any, Any]):
    """One row of a batch read in one go (a plain ndarray otherwise): torch's default
    collate finds this type in its collate map and takes the whole block at once."""


class _Sample(tuple):  # type: ignore[type-arg]
    """One ``(x, y, ...)`` sample of a batch read in one go (a plain tuple otherwise)."""

    __slots__ = ()


class _SampleDict(dict):  # type: ignore[type-arg]
    """One ``{key: row}`` sample of a batch read in one go (a plain dict otherwise)."""


def _row(block: np.ndarray[Any, Any], index: int) -> Any:
    if block.ndim == 1:
        return block[index : index + 1].view(_Row).reshape(())
    return block.view(_Row)[index]


class BatchRows(AbcSequence[Any]):
    """The samples of one batch, read in one go: what `__getitems__` returns.

    A sequence of ``len(indices)`` samples (rows, or tuples/dicts of rows) made on demand
    from ``.batch``, the same data already stacked (an array, or a tuple/dict of arrays).
    torch's default collate turns ``.batch`` into tensors with no per-row work (kdata
    registers its sample types in torch's ``default_collate_fn_map``); a `collate_fn` of
    your own receives the rows, as from any map-style dataset.

    Args:
        batch: the stacked samples: an array, a tuple of arrays, or a dict of arrays.

    Examples:
        >>> import numpy as np
        >>> rows = BatchRows(np.arange(6).reshape(3, 2))
        >>> len(rows), rows[-1].tolist(), [r.tolist() for r in rows][0]
        (3, [4, 5], [0, 1])
    """

    __slots__ = ("batch",)

    def __init__(self, batch: Any) -> None:
        self.batch = batch

    def _first(self) -> np.ndarray[Any, Any]:
        batch = self.batch
        if isinstance(batch, tuple):
            return batch[0]  # type: ignore[no-any-return]
        if isinstance(batch, dict):
            return next(iter(batch.values()))
        return batch  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._first())

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> BatchRows: ...

    def __getitem__(self, index: int | slice) -> Any:
        batch = self.batch
        if isinstance(index, slice):
            if isinstance(batch, tuple):
                return BatchRows(tuple(part[index] for part in batch))
            if isinstance(batch, dict):
                return BatchRows({key: part[index] for key, part in batch.items()})
            return BatchRows(batch[index])
        index = operator.index(index)
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"index {index} is out of range for a batch of {count} samples")
        index %= count
        if isinstance(batch, tuple):
            return _Sample(part[index] for part in batch)
        if isinstance(batch, dict):
            return _SampleDict((key, part[index]) for key, part in batch.items())
        return _row(batch, index)

    def __iter__(self) -> Iterator[Any]:
        batch = self.batch
        if isinstance(batch, (tuple, dict)):
            return (self[i] for i in range(len(self)))
        if batch.ndim == 1:
            return (_row(batch, i) for i in range(len(batch)))
        return iter(batch.view(_Row))

    def __reduce__(self) -> tuple[Any, ...]:
        return (BatchRows, (self.batch,))

    def __repr__(self) -> str:
        return f"BatchRows({len(self)} samples)"


def _numeric_block(array: Any) -> bool:
    return isinstance(array, np.ndarray) and array.dtype.kind in "biufc"


def _collate_rows(batch: Any, *, collate_fn_map: Any = None) -> Any:
    """torch's default collate for `_Row`: the whole block at once, or row by row."""
    if type(batch) is BatchRows and _numeric_block(batch.batch):
        return _array_to_tensor(batch.batch, False)
    return _collate.collate([np.asarray(row) for row in batch], collate_fn_map=collate_fn_map)


def _collate_samples(batch: Any, *, collate_fn_map: Any = None) -> Any:
    """torch's default collate for `_Sample`: a list of tensors, as torch gives for tuples."""
    if type(batch) is BatchRows and all(_numeric_block(part) for part in batch.batch):
        return [_array_to_tensor(part, False) for part in batch.batch]
    return _collate.collate([tuple(sample) for sample in batch], collate_fn_map=collate_fn_map)


def _collate_sample_dicts(batch: Any, *, collate_fn_map: Any = None) -> Any:
    """torch's default collate for `_SampleDict`: a dict of tensors."""
    if type(batch) is BatchRows and all(_numeric_block(p) for p in batch.batch.values()):
        return {key: _array_to_tensor(part, False) for key, part in batch.batch.items()}
    return _collate.collate([dict(sample) for sample in batch], collate_fn_map=collate_fn_map)


# torch documents extending default_collate by adding entries to this map; the keys are
# kdata's own types, so no other data is affected
_collate.default_collate_fn_map[_Row] = _collate_rows
_collate.default_collate_fn_map[_Sample] = _collate_samples
_collate.default_collate_fn_map[_SampleDict] = _collate_sample_dicts


def _view_bounds(start: Any, end: Any, rows: int, what: str) -> tuple[int, int]:
    start = _as_int(start, "start")
    end = rows if end is None else _as_int(end, "end")
    if start < 0:
        raise ValueError(f"start must be >= 0, got start={start} for {what}")
    if end > rows:
        raise ValueError(f"end={end} is past the {rows} rows of {what}")
    if start > end:
        raise ValueError(f"start must be <= end, got start={start} > end={end} for {what}")
    return start, end


def _resolve_normalizer(normalizer: Any) -> Callable[[Any], Any] | None:
    if normalizer is None:
        return None
    resolved = kregistry.resolve(
        normalizer,
        kind="normalizer",
        namespace=_NORMALIZER_NAMESPACE,
        module_objects=BUILTIN_NORMALIZERS,
    )
    return resolved  # type: ignore[no-any-return]


def _apply(normalizer: Callable[[Any], Any], block: np.ndarray[Any, Any]) -> Any:
    out = normalizer(block)
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)
    if out.ndim == 0 or out.shape[0] != block.shape[0]:
        raise ValueError(
            f"normalizer {normalizer!r} must keep the number of rows: it turned shape "
            f"{block.shape} into {out.shape}"
        )
    return out


def _check_picklable(value: Any, what: str) -> None:
    try:
        pickle.dumps(value)
    except Exception as error:
        raise TypeError(
            f"{what} {value!r} cannot be pickled, so this object cannot go to DataLoader "
            f"workers started with spawn; define it at module level "
            f"({type(error).__name__}: {error})"
        ) from None


class HDF5Matrix(Dataset[Any]):
    """A read-only, array-like view of rows ``[start, end)`` of an HDF5 dataset.

    Indexing follows numpy: ints and negative ints (relative to the view), slices with any
    step, unsorted and repeated index lists or arrays, boolean masks (over the rows or
    several leading axes), and tuples for the other axes (index arrays on several axes
    broadcast together); ``matrix[key]`` equals ``np.asarray(matrix)[key]`` and an index
    out of range raises ``IndexError``, but only the rows the key needs are read.
    ``len``, ``shape``, ``dtype``, ``ndim``, ``size`` and ``np.asarray(matrix)`` work.

    It is also a torch ``Dataset``: ``matrix[i]`` is a row, and
    ``matrix.__getitems__(indices)`` reads a whole batch in one HDF5 read (sorted, then
    put back in the asked order), so ``DataLoader(matrix, batch_size=256)`` with the
    default sampler and collate makes one read and one tensor per batch. Files are opened
    lazily, read-only, once per process, so the object pickles and works in DataLoader
    workers (fork and spawn). A contiguous, uncompressed numeric dataset is read through a
    read-only memory map; others through h5py's read-only fast reader, with a chunk cache
    large enough that batched reads decompress each chunk once.

    A file changed under a running job is detected: every read first checks the open
    file's size and modification time (truncated or rewritten in place), and the path is
    checked at every open and at least every 0.2 s (replaced by another file). The file
    is then opened again and read correctly if the dataset still fits the view, else
    `FileChangedError` is raised (logged on the ``"kdata"`` logger); stale offsets are
    never read, and a truncated memory-mapped file raises instead of killing the process
    (a change in the microseconds between the check and the read cannot be caught).

    Args:
        datapath: path of the HDF5 file.
        dataset: name of the dataset in the file (``"x"``, ``"group/x"``).
        start: first row of the view (file coordinates).
        end: one past the last row of the view; ``None``: the dataset's end.
        normalizer: applied to every block read (rows along axis 0): a callable, or a
            name resolved through kregistry (the custom objects in scope, the registry,
            ``kdata.normalizer>`` names, then kdata's built-in ``"normalize"``). ``shape``
            and ``dtype`` reflect its output.
        chunk_cache_bytes: HDF5 chunk cache size for this dataset (set per dataset, in
            every process); by default large enough for the chunks a batch spans. HDF5
            shares a dataset opened twice in one process: the first opener's cache holds.
        memory_map: read contiguous uncompressed datasets through a memory map.

    Raises:
        FileNotFoundError: ``datapath`` does not exist.
        KeyError: ``dataset`` is not in the file (the message lists those that are).
        TypeError: ``start``, ``end`` or ``chunk_cache_bytes`` is not an int.
        ValueError: a scalar dataset, ``start > end``, a bound outside the dataset, or a
            normalizer that changes the number of rows.
        kregistry.UnknownObjectError: an unknown normalizer name.

    Examples:
        >>> import tempfile, os, h5py, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "data.h5")
        >>> with h5py.File(path, "w") as f:
        ...     _ = f.create_dataset("x", data=np.arange(10.0).reshape(5, 2))
        >>> x = HDF5Matrix(path, "x", start=1, end=4)
        >>> x.shape, x[-1].tolist(), x[[2, 0, 2]][:, 0].tolist()
        ((3, 2), [6.0, 7.0], [6.0, 2.0, 6.0])
    """

    def __init__(
        self,
        datapath: str | os.PathLike[str],
        dataset: str,
        start: int = 0,
        end: int | None = None,
        normalizer: Callable[[Any], Any] | str | None = None,
        *,
        chunk_cache_bytes: int | None = None,
        memory_map: bool = True,
    ) -> None:
        path = os.fspath(datapath)
        self.datapath = path
        self.dataset = dataset
        self.normalizer = _resolve_normalizer(normalizer)
        cache = _cache_size(chunk_cache_bytes)
        with open_checked(path) as file:
            stamp = file_stamp(path)
            info = inspect_dataset(file, dataset, path)
            self.start, self.end = _view_bounds(start, end, info.shape[0], f"dataset {dataset!r}")
            self._lazy = LazyFile(path, stamp)
            self._reader = Reader(self._lazy, info, bool(memory_map), cache, self.end)
            self._info = info
            self._base_shape, self._base_dtype = self._probe(file)

    def _probe(self, file: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """Shape (after axis 0) and dtype of what the normalizer returns."""
        info = self._info
        if self.normalizer is None:
            return info.shape[1:], info.dtype
        stop = min(self.start + 1, info.shape[0])
        sample = np.asarray(file[info.name][self.start : stop])
        try:
            out = _apply(self.normalizer, sample)
        except ValueError:
            raise
        except Exception:
            if len(sample):
                raise
            return info.shape[1:], info.dtype  # an empty view: the normalizer may refuse it
        return tuple(out.shape[1:]), out.dtype

    # -- array-like ---------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """``(end - start,) + row shape`` (as the normalizer returns rows)."""
        return (self.end - self.start, *self._base_shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of what indexing returns (after the normalizer)."""
        return self._base_dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))

    @property
    def data(self) -> Any:
        """The underlying ``h5py.Dataset`` of this process's read-only handle (Keras name)."""
        return self._reader.dataset()

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The dataset's HDF5 chunk shape (``None``: contiguous)."""
        return self._reader.info.chunks

    @property
    def compression(self) -> bool:
        """Whether the dataset's chunks are compressed (or otherwise filtered)."""
        return self._reader.info.compressed

    def __len__(self) -> int:
        return self.end - self.start

    def _read(self, plan: RowPlan) -> np.ndarray[Any, Any]:
        if plan.kind == "range":
            block = self._reader.read_range(
                self.start + plan.start, self.start + plan.stop, plan.step
            )
        else:
            assert plan.rows is not None
            block = self._reader.read_sorted(plan.rows + self.start)
        return self._normalized(block)

    def _normalized(self, block: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """``block`` (rows read) through the normalizer, if any."""
        if self.normalizer is None:
            return block
        if len(block) == 0:
            # nothing to normalize (and many normalizers refuse empty input)
            return np.empty((0, *self._base_shape), dtype=self._base_dtype)
        return _apply(self.normalizer, block)  # type: ignore[no-any-return]

    def __getitem__(self, key: Any) -> Any:
        if self.normalizer is None:
            # the common keys, straight to the reader (within a few percent of h5py)
            kind = type(key)
            if kind is int:
                count = self.end - self.start
                if 0 <= key < count:
                    return self._reader.read_row(self.start + key)
                if -count <= key < 0:
                    return self._reader.read_row(self.end + key)
            elif kind is slice and key.step is None:
                first, stop, _ = key.indices(self.end - self.start)
                if first < stop:
                    return self._reader.read_range(self.start + first, self.start + stop)
        if type(key) is np.ndarray and key.ndim == 1 and key.dtype.kind in "iu":
            # the keys of a shuffling sampler: one gather in the asked order
            return self._gather(checked_rows(key, self.end - self.start))
        row_key, rest, whole = split_key(key)
        plan = plan_rows(row_key, len(self))
        block = self._read(plan)
        if whole:
            return block[key]
        local = plan.local
        if rest and plan.kind == "rows" and isinstance(local, slice) and has_array_index(rest):
            # numpy broadcasts a row index array with the other axes' arrays: a slice would not
            local = np.arange(plan.count)
        out = block[(local, *rest)] if rest else block[local]
        if isinstance(out, np.ndarray) and plan.kind == "range" and plan.local != slice(None):
            out = np.ascontiguousarray(out)  # a reversed slice: no negative strides
        return out

    def __getitems__(self, indices: AbcSequence[int]) -> BatchRows:
        """The rows at ``indices`` (one sample each, in order), read in one HDF5 read."""
        plan = _batch_plan(indices, len(self))
        if plan.kind == "range":
            return BatchRows(self._read(plan))
        if (
            self._reader.info.compressed
            and (self.datapath, self.dataset) not in _WARNED
            and _recompresses(self)
        ):
            warn_random_on_compressed(self, stacklevel=2)
        assert plan.rows is not None
        return BatchRows(self._gather(plan.rows))

    def _gather(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Rows at view rows ``rows`` (checked, 1-D, any order), normalized."""
        return self._normalized(self._reader.gather(rows + self.start if self.start else rows))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        if copy is False:
            raise ValueError("an HDF5Matrix cannot be turned into an array without a copy")
        out: np.ndarray[Any, Any] = np.asarray(self[:])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[Any]:
        """Yield the rows one by one, reading blocks of rows."""
        for block_start in range(0, len(self), _ITER_ROWS):
            yield from self[block_start : block_start + _ITER_ROWS]

    def __add__(self, other: Any) -> Any:
        # torch's Dataset "+" concatenates datasets; an array-like must not silently do that
        if isinstance(other, Dataset):
            return super().__add__(other)
        return NotImplemented

    # -- resources ----------------------------------------------------------------------

    def close(self) -> None:
        """Close this process's handle of the file (one per file and process, shared by
        every view of it); the next read opens it again."""
        self._lazy.close()

    def __getstate__(self) -> dict[str, Any]:
        if self.normalizer is not None:
            _check_picklable(self.normalizer, "normalizer")
        return self.__dict__.copy()

    def __repr__(self) -> str:
        return (
            f"HDF5Matrix({self.datapath!r}, {self.dataset!r}, start={self.start}, "
            f"end={self.end}, shape={self.shape}, dtype={self.dtype})"
        )


_WARNED: set[tuple[str, str]] = set()


def _members(dataset: Any) -> list[HDF5Matrix]:
    if isinstance(dataset, HDF5Matrix):
        return [dataset]
    if isinstance(dataset, HDF5Dataset):
        return list(dataset.matrices)
    return []


def _recompresses(matrix: HDF5Matrix) -> bool:
    """Whether random rows make HDF5 decompress chunks again: compressed chunks that do
    not all fit the chunk cache."""
    reader = matrix._reader
    info = reader.info
    if not (info.compressed and info.chunks):
        return False
    chunk_rows = math.ceil(info.shape[0] / max(info.chunks[0], 1))
    return info.chunk_row_bytes * chunk_rows > reader.cache_bytes


def warn_random_on_compressed(dataset: Any, stacklevel: int) -> None:
    """Say once per process and dataset that random rows of compressed chunks are slow.

    ``stacklevel``: as for ``warnings.warn``, counted from the caller of this function.
    """
    for member in _members(dataset):
        key = (member.datapath, member.dataset)
        # The set first: once warned, a random batch costs one lookup per member.
        if key in _WARNED or not _recompresses(member):
            continue
        _WARNED.add(key)
        warnings.warn(
            f"random rows (shuffle=True) of the compressed, chunked dataset "
            f"{member.dataset!r} in {member.datapath!r}: every batch decompresses each "
            f"chunk it touches again (often 100x slower than reading in order); use "
            f"kdata.batch_loader(..., shuffle='chunks') (chunk order shuffled, rows "
            f"shuffled within a window of chunks) or shuffle='batch'",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        return


def _batch_plan(indices: Any, length: int) -> RowPlan:
    """The plan of a DataLoader batch: a range for a run of consecutive ints (the default
    sampler's batches, no array conversion), else the checked rows in the asked order
    (``rows``, not sorted)."""
    if type(indices) is list and indices:
        first = indices[0]
        count = len(indices)
        if (
            type(first) is int
            and first >= 0
            and first + count <= length
            and indices[-1] == first + count - 1
            and indices == list(range(first, first + count))
        ):
            return RowPlan("range", slice(None), first, first + count, 1)
    array = np.asarray(indices)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise IndexError(
            f"indices must be a 1-D sequence of ints (one per sample), got {indices!r}"
        )
    return RowPlan("rows", slice(None), rows=checked_rows(array, length))


def _cache_size(value: int | None) -> int | None:
    if value is None:
        return None
    return _as_int(value, "chunk_cache_bytes", minimum=0)


class HDF5Dataset(Dataset[Any]):
    """Several HDF5 datasets (e.g. ``x`` and ``y``) read together, row by row.

    Sample ``i`` is a tuple (or dict) of row ``i`` of each dataset; every fetch reads each
    dataset once over the same rows. Indexing takes row keys as `HDF5Matrix` does (ints,
    slices, index arrays, masks) and returns a tuple (or dict) of arrays. With the default
    collate of ``DataLoader``, a batch is a list (or dict) of tensors, made without
    per-row work. `HDF5Dataset.from_matrices` pairs existing `HDF5Matrix` views (Keras's
    ``x = HDF5Matrix(...); y = HDF5Matrix(...)``), from one file or several.

    Args:
        datapath: path of the HDF5 file.
        datasets: dataset names; a list/tuple gives tuple samples, a mapping
            ``{key: dataset name}`` gives dict samples.
        start: first row of the view.
        end: one past the last row; ``None``: the common end of the datasets.
        normalizers: ``None``, or a mapping from dataset name (or dict key) to a
            normalizer (callable or kregistry name).
        chunk_cache_bytes: HDF5 chunk cache size of each dataset; by default sized from
            its chunks.
        memory_map: read contiguous uncompressed datasets through a memory map.

    Raises:
        FileNotFoundError: ``datapath`` does not exist.
        KeyError: a dataset is not in the file, or ``normalizers`` names no dataset.
        TypeError: ``datasets`` is a str.
        ValueError: datasets with different numbers of rows, an empty ``datasets``, or
            bad bounds (as `HDF5Matrix`).

    Examples:
        >>> import tempfile, os, h5py, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "xy.h5")
        >>> with h5py.File(path, "w") as f:
        ...     _ = f.create_dataset("x", data=np.ones((4, 3)))
        ...     _ = f.create_dataset("y", data=np.arange(4))
        >>> xy = HDF5Dataset(path, ["x", "y"])
        >>> x, y = xy[1:3]
        >>> x.shape, y.tolist()
        ((2, 3), [1, 2])
    """

    def __init__(
        self,
        datapath: str | os.PathLike[str],
        datasets: AbcSequence[str] | Mapping[str, str],
        start: int = 0,
        end: int | None = None,
        normalizers: Mapping[str, Callable[[Any], Any] | str] | None = None,
        *,
        chunk_cache_bytes: int | None = None,
        memory_map: bool = True,
    ) -> None:
        if isinstance(datasets, str):
            raise TypeError(
                f"datasets must be a list of names or a mapping key -> name, got the str "
                f"{datasets!r} (use HDF5Matrix for one dataset, or [{datasets!r}])"
            )
        if isinstance(datasets, Mapping):
            keys: tuple[str, ...] | None = tuple(datasets)
            names = [datasets[key] for key in datasets]
        else:
            keys = None
            names = list(datasets)
        if not names:
            raise ValueError("datasets must name at least one dataset, got none")
        normalizers = dict(normalizers or {})
        labels = list(keys) if keys is not None else names
        unknown = set(normalizers) - set(labels) - set(names)
        if unknown:
            raise KeyError(
                f"normalizers has entries for {sorted(unknown)}, which are not among the "
                f"datasets {labels}"
            )
        path = os.fspath(datapath)
        with open_checked(path) as file:
            infos = [inspect_dataset(file, name, path) for name in names]
        rows = {info.name: info.shape[0] for info in infos}
        if len(set(rows.values())) > 1:
            raise ValueError(f"datasets must have the same number of rows, got {rows}")
        matrices = [
            HDF5Matrix(
                path,
                name,
                start,
                end,
                normalizers.get(label, normalizers.get(name)),
                chunk_cache_bytes=chunk_cache_bytes,
                memory_map=memory_map,
            )
            for label, name in zip(labels, names, strict=False)
        ]
        self._setup(matrices, keys)

    @classmethod
    def from_matrices(cls, *matrices: HDF5Matrix, **named: HDF5Matrix) -> HDF5Dataset:
        """Pair `HDF5Matrix` views of equal length: samples are ``(x[i], y[i], ...)`` (or
        dicts, when given by keyword), each fetch one read per view.

        The Keras 2 habit ``x = HDF5Matrix(p, "x"); y = HDF5Matrix(q, "y", start=...)``
        then feeds ``DataLoader`` and `batch_loader` at `HDF5Dataset` speed. The views
        may come from different files and have different ``start``/``end``.

        Args:
            *matrices: the views, in sample order (tuple samples).
            **named: or the views by name (dict samples); not both.

        Returns:
            An `HDF5Dataset` over the views.

        Raises:
            TypeError: a member is not an `HDF5Matrix`, or both forms are given.
            ValueError: no views, or views of different lengths.

        Examples:
            >>> import tempfile, os, h5py, numpy as np
            >>> path = os.path.join(tempfile.mkdtemp(), "xy.h5")
            >>> with h5py.File(path, "w") as f:
            ...     _ = f.create_dataset("x", data=np.ones((6, 2)))
            ...     _ = f.create_dataset("y", data=np.arange(6))
            >>> x, y = HDF5Matrix(path, "x", end=4), HDF5Matrix(path, "y", start=2)
            >>> xb, yb = HDF5Dataset.from_matrices(x, y)[[0, 3]]
            >>> xb.shape, yb.tolist()
            ((2, 2), [2, 5])
        """
        if matrices and named:
            raise TypeError(
                "from_matrices takes views by position (tuple samples) or by name (dict "
                f"samples), not both; got {len(matrices)} positional and {sorted(named)}"
            )
        members = list(matrices) if matrices else list(named.values())
        if not members:
            raise ValueError("from_matrices needs at least one HDF5Matrix, got none")
        for member in members:
            if not isinstance(member, HDF5Matrix):
                raise TypeError(
                    f"from_matrices takes HDF5Matrix views, got {type(member).__name__}: {member!r}"
                )
        lengths = [len(member) for member in members]
        if len(set(lengths)) > 1:
            labels = list(named) if named else [f"#{i}" for i in range(len(members))]
            raise ValueError(
                "the views must have the same number of rows, got "
                + ", ".join(
                    f"{label}: {length} rows ({member.datapath!r} {member.dataset!r} "
                    f"[{member.start}:{member.end}])"
                    for label, length, member in zip(labels, lengths, members, strict=False)
                )
            )
        self = cls.__new__(cls)
        self._setup(members, tuple(named) if named else None)
        return self

    def _setup(self, matrices: list[HDF5Matrix], keys: tuple[str, ...] | None) -> None:
        self.matrices = matrices
        self.keys = keys
        self.names = tuple(matrix.dataset for matrix in matrices)
        paths = {matrix.datapath for matrix in matrices}
        self.datapath: str | None = matrices[0].datapath if len(paths) == 1 else None
        self.start, self.end = matrices[0].start, matrices[0].end
        self._length = len(matrices[0])

    def __len__(self) -> int:
        return self._length

    def _pack(self, parts: list[Any]) -> Any:
        if self.keys is None:
            return tuple(parts)
        return dict(zip(self.keys, parts, strict=False))

    def _blocks(self, key: Any) -> tuple[RowPlan, list[np.ndarray[Any, Any]]]:
        if isinstance(key, tuple):
            raise IndexError(
                f"HDF5Dataset takes a row key (int, slice, list, array, mask), got the tuple "
                f"{key!r}; index the members (.matrices) for other axes"
            )
        plan = plan_rows(key, len(self))
        if isinstance(plan.local, np.ndarray) and plan.local.dtype == np.bool_:
            raise IndexError(
                f"HDF5Dataset takes a one-dimensional row mask, got a boolean index of shape "
                f"{np.shape(key)}; index the members (.matrices) for other axes"
            )
        return plan, [matrix._read(plan) for matrix in self.matrices]

    def __getitem__(self, key: Any) -> Any:
        if type(key) is np.ndarray and key.ndim == 1 and key.dtype.kind in "iu":
            rows = checked_rows(key, len(self))  # a shuffling sampler's keys
            return self._pack([matrix._gather(rows) for matrix in self.matrices])
        plan, blocks = self._blocks(key)
        parts = [block[plan.local] for block in blocks]
        if plan.kind == "range" and plan.local not in (slice(None), 0):
            parts = [np.ascontiguousarray(part) for part in parts]
        return self._pack(parts)

    def __getitems__(self, indices: AbcSequence[int]) -> BatchRows:
        """Samples at ``indices``, each dataset read once (sorted) and put back in order."""
        plan = _batch_plan(indices, len(self))
        if plan.kind == "range":
            return BatchRows(self._pack([matrix._read(plan) for matrix in self.matrices]))
        assert plan.rows is not None
        if any(m._reader.info.compressed for m in self.matrices):
            warn_random_on_compressed(self, stacklevel=2)  # once per dataset, if it applies
        return BatchRows(self._pack([matrix._gather(plan.rows) for matrix in self.matrices]))

    def close(self) -> None:
        """Close this process's handles of the files; the next read opens them again."""
        for matrix in self.matrices:
            matrix.close()

    def __repr__(self) -> str:
        if self.datapath is None or any(
            (m.start, m.end) != (self.start, self.end) for m in self.matrices
        ):
            inner = ", ".join(repr(matrix) for matrix in self.matrices)
            if self.keys is not None:
                inner = ", ".join(
                    f"{key}={matrix!r}"
                    for key, matrix in zip(self.keys, self.matrices, strict=False)
                )
            return f"HDF5Dataset.from_matrices({inner})"
        labels = self.keys if self.keys is not None else self.names
        return (
            f"HDF5Dataset({self.datapath!r}, {list(labels)!r}, start={self.start}, end={self.end})"
        )
