"""``HDF5Matrix`` (Keras's array-like HDF5 view, as a torch Dataset) and ``HDF5Dataset``."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Sequence as AbcSequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

import kregistry
from kdata._h5file import (
    LazyFile,
    Reader,
    inspect_dataset,
    open_checked,
)
from kdata._order import _as_int
from kdata._rows import RowPlan, has_array_index, plan_rows, split_key

__all__ = ["HDF5Matrix", "HDF5Dataset", "BatchRows"]

_NORMALIZER_NAMESPACE = "kdata.normalizer"
_ITER_ROWS = 1024


class BatchRows(list[Any]):
    """The samples of one batch (a list, as torch's ``__getitems__`` contract says), read in
    one go; ``.batch`` holds the same data already stacked, which
    :func:`kdata.collate_batch` turns into tensors without re-stacking row by row."""

    batch: Any


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
    resolved = kregistry.resolve(normalizer, kind="normalizer", namespace=_NORMALIZER_NAMESPACE)
    return resolved  # type: ignore[no-any-return]


def _apply(normalizer: Callable[[Any], Any] | None, block: np.ndarray[Any, Any]) -> Any:
    if normalizer is None:
        return block
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
    put back in the asked order). Files are opened lazily, read-only, once per process,
    so the object pickles and works in DataLoader workers (fork and spawn). A contiguous,
    uncompressed numeric dataset is read through a read-only memory map; a chunked one
    gets a chunk cache large enough that batched reads decompress each chunk once.

    Args:
        datapath: path of the HDF5 file.
        dataset: name of the dataset in the file (``"x"``, ``"group/x"``).
        start: first row of the view (file coordinates).
        end: one past the last row of the view; ``None``: the dataset's end.
        normalizer: applied to every block read (rows along axis 0): a callable, or a
            name resolved through kregistry (``kdata.normalizer>`` names, the custom
            objects in scope, the registry). ``shape`` and ``dtype`` reflect its output.
        chunk_cache_bytes: HDF5 chunk cache size for this dataset (set per dataset, in
            every process); by default large enough for the chunks a batch spans. HDF5
            shares a dataset opened twice in one process: the first opener's cache holds.
        memory_map: read contiguous uncompressed datasets through a memory map.

    Raises:
        FileNotFoundError: ``datapath`` does not exist.
        KeyError: ``dataset`` is not in the file (the message lists those that are).
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
        with open_checked(path) as file:
            info = inspect_dataset(file, dataset, path)
            self.start, self.end = _view_bounds(start, end, info.shape[0], f"dataset {dataset!r}")
            self._lazy = LazyFile(path)
            self._reader = Reader(self._lazy, info, memory_map, _cache_size(chunk_cache_bytes))
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
        if self.normalizer is not None and len(block) == 0:
            # nothing to normalize (and many normalizers refuse empty input)
            return np.empty((0, *self._base_shape), dtype=self._base_dtype)
        return _apply(self.normalizer, block)  # type: ignore[no-any-return]

    def __getitem__(self, key: Any) -> Any:
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
        plan = plan_rows(np.asarray(indices, dtype=np.int64), len(self))
        block = self._read(plan)
        batch = block if isinstance(plan.local, slice) else block[plan.local]
        rows = BatchRows(batch)
        rows.batch = batch
        return rows

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
        """Close this process's file handle; the next read opens it again."""
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


def _cache_size(value: int | None) -> int | None:
    if value is None:
        return None
    value = _as_int(value, "chunk_cache_bytes")
    if value < 0:
        raise ValueError(f"chunk_cache_bytes must be >= 0, got {value}")
    return value


class HDF5Dataset(Dataset[Any]):
    """Several datasets of one HDF5 file (e.g. ``x`` and ``y``) read together, row by row.

    Sample ``i`` is a tuple (or dict) of row ``i`` of each dataset; every fetch reads each
    dataset once over the same rows, with one file handle per process. Indexing takes
    row keys as :class:`HDF5Matrix` does (ints, slices, index arrays, masks) and returns
    a tuple (or dict) of arrays.

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
        FileNotFoundError, KeyError, ValueError: as :class:`HDF5Matrix`; also datasets
            with different numbers of rows, or an empty ``datasets``.

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
            self.keys: tuple[str, ...] | None = tuple(datasets)
            names = [datasets[key] for key in datasets]
        else:
            self.keys = None
            names = list(datasets)
        if not names:
            raise ValueError("datasets must name at least one dataset, got none")
        normalizers = dict(normalizers or {})
        labels = list(self.keys) if self.keys is not None else names
        unknown = set(normalizers) - set(labels) - set(names)
        if unknown:
            raise KeyError(
                f"normalizers has entries for {sorted(unknown)}, which are not among the "
                f"datasets {labels}"
            )
        path = os.fspath(datapath)
        self.datapath = path
        self.names = tuple(names)
        with open_checked(path) as file:
            infos = [inspect_dataset(file, name, path) for name in names]
        rows = {info.name: info.shape[0] for info in infos}
        if len(set(rows.values())) > 1:
            raise ValueError(f"datasets must have the same number of rows, got {rows}")
        lazy = LazyFile(path)
        self.matrices: list[HDF5Matrix] = []
        for label, name in zip(labels, names, strict=False):
            normalizer = normalizers.get(label, normalizers.get(name))
            matrix = HDF5Matrix(
                path,
                name,
                start,
                end,
                normalizer,
                chunk_cache_bytes=chunk_cache_bytes,
                memory_map=memory_map,
            )
            # one file handle per process shared by the members (each has its own cache)
            matrix._lazy = lazy
            matrix._reader = Reader(lazy, matrix._info, memory_map, matrix._reader.cache_bytes)
            self.matrices.append(matrix)
        self.start, self.end = self.matrices[0].start, self.matrices[0].end
        self._lazy = lazy

    def __len__(self) -> int:
        return self.end - self.start

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
        plan, blocks = self._blocks(key)
        parts = [block[plan.local] for block in blocks]
        if plan.kind == "range" and plan.local not in (slice(None), 0):
            parts = [np.ascontiguousarray(part) for part in parts]
        return self._pack(parts)

    def __getitems__(self, indices: AbcSequence[int]) -> BatchRows:
        """Samples at ``indices``, each dataset read once (sorted) and put back in order."""
        plan, blocks = self._blocks(np.asarray(indices, dtype=np.int64))
        parts = [b if isinstance(plan.local, slice) else b[plan.local] for b in blocks]
        if self.keys is None:
            rows = BatchRows(zip(*parts, strict=False))
        else:
            rows = BatchRows(
                dict(zip(self.keys, row, strict=False)) for row in zip(*parts, strict=False)
            )
        rows.batch = self._pack(parts)
        return rows

    def close(self) -> None:
        """Close this process's file handle; the next read opens it again."""
        self._lazy.close()

    def __repr__(self) -> str:
        labels = self.keys if self.keys is not None else self.names
        return (
            f"HDF5Dataset({self.datapath!r}, {list(labels)!r}, start={self.start}, end={self.end})"
        )
