"""Per-process, read-only access to an HDF5 file, and the fastest reader for each dataset.

Handles are opened lazily and re-opened after a fork or in a spawned process (an HDF5
handle must never cross a process boundary), so the objects holding them pickle and work
in DataLoader workers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

__all__ = ["DatasetInfo", "LazyFile", "Reader", "inspect_dataset", "chunk_cache_bytes"]

_DEFAULT_CACHE = 8 * 1024**2  # h5py's (and HDF5's) default raw-data chunk cache
_MAX_AUTO_CACHE = 1024**3  # the automatic cache never grows past this
_ASSUMED_BATCH_ROWS = 1024  # the cache holds every chunk a batch of this many rows spans


@dataclass(frozen=True)
class DatasetInfo:
    """What kdata needs to know about one dataset, read once when the view is made."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[int, ...] | None
    mmap_offset: int | None  # byte offset of a contiguous, unfiltered, numeric dataset

    @property
    def chunk_row_bytes(self) -> int:
        """Bytes of the chunks covering one chunk-row (all chunks along axes 1..n)."""
        if self.chunks is None:
            return 0
        per_chunk = math.prod(self.chunks) * self.dtype.itemsize
        across = math.prod(
            math.ceil(size / chunk)
            for size, chunk in zip(self.shape[1:], self.chunks[1:], strict=False)
        )
        return per_chunk * max(across, 1)


def _datasets_in(file: h5py.File) -> list[str]:
    names: list[str] = []
    file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def open_checked(path: str, **kwargs: Any) -> h5py.File:
    """Open ``path`` read-only, with errors that say what is wrong."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"datapath {path!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"datapath {path!r} is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r", **kwargs)
    except OSError as error:
        raise OSError(f"datapath {path!r} cannot be opened as an HDF5 file: {error}") from None


def inspect_dataset(file: h5py.File, name: str, datapath: str) -> DatasetInfo:
    """Describe dataset ``name`` of an open file; clear errors when it does not fit."""
    if not isinstance(name, str):
        raise TypeError(f"dataset must be a str (a dataset name), got {name!r}")
    obj = file.get(name)
    if not isinstance(obj, h5py.Dataset):
        existing = _datasets_in(file)
        what = "is a group, not a dataset" if obj is not None else "does not exist"
        raise KeyError(
            f"dataset {name!r} {what} in {datapath!r}; its datasets are: "
            f"{', '.join(existing) if existing else '(none)'}"
        )
    if obj.shape is None or len(obj.shape) == 0:
        raise ValueError(
            f"dataset {name!r} in {datapath!r} is a scalar (shape {obj.shape}); HDF5Matrix "
            f"needs a dataset with at least one dimension (rows)"
        )
    plist = obj.id.get_create_plist()
    compressed = plist.get_nfilters() > 0
    offset = None
    numeric = obj.dtype.kind in "iufc" and h5py.check_dtype(enum=obj.dtype) is None
    if (
        obj.chunks is None
        and not compressed
        and numeric
        and obj.size > 0
        and plist.get_layout() == h5py.h5d.CONTIGUOUS
        and plist.get_external_count() == 0
        and file.driver == "sec2"
    ):
        offset = obj.id.get_offset()
    return DatasetInfo(
        name=name,
        shape=tuple(obj.shape),
        dtype=obj.dtype,
        chunks=tuple(obj.chunks) if obj.chunks is not None else None,
        mmap_offset=offset,
    )


def chunk_cache_bytes(info: DatasetInfo) -> int:
    """A chunk cache (for one dataset) that holds every chunk a batch touches.

    h5py's default (8 MiB) is smaller than one chunk-row of many compressed datasets; then
    every batch decompresses the chunks it touches again. Sized to hold the chunk-rows a
    batch of up to ``_ASSUMED_BATCH_ROWS`` rows spans plus one (sequential batches start
    where the last ended), capped at 1 GiB.
    """
    needed = 0
    if info.chunks is not None:
        rows = math.ceil(_ASSUMED_BATCH_ROWS / max(info.chunks[0], 1)) + 1
        rows = min(rows, math.ceil(info.shape[0] / max(info.chunks[0], 1)))
        needed = info.chunk_row_bytes * rows
    return int(min(max(_DEFAULT_CACHE, needed), max(_MAX_AUTO_CACHE, _DEFAULT_CACHE)))


def cache_slots(cache_bytes: int, info: DatasetInfo) -> int:
    """Hash slots for a chunk cache: HDF5 advises a prime ~100 times the chunks it holds."""
    chunk = math.prod(info.chunks) * info.dtype.itemsize if info.chunks else 1024**2
    target = max(521, min(100 * max(cache_bytes // max(chunk, 1), 1), 2_000_003))
    candidate = target | 1
    while any(candidate % p == 0 for p in range(3, int(candidate**0.5) + 1, 2)):
        candidate += 2
    return candidate


class LazyFile:
    """An HDF5 file opened read-only on first use in each process; pickles as its path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid: int | None = None
        self._file: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._maps: dict[str, np.ndarray[Any, Any]] = {}

    def file(self) -> h5py.File:
        """The open file of this process (opened now if needed)."""
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            # an inherited (forked) handle is dropped, never used or closed here
            self._datasets, self._maps = {}, {}
            self._file = open_checked(self.path)
            self._pid = pid
        return self._file

    def dataset(self, name: str, cache_bytes: int | None = None, slots: int = 521) -> h5py.Dataset:
        """The h5py dataset ``name`` of this process's handle, with its own chunk cache.

        The cache is set per dataset (not per file): HDF5 shares one open file between
        all handles of a process, so a file-level setting would be the first opener's.
        """
        file = self.file()
        found = self._datasets.get(name)
        if found is None:
            if cache_bytes is None:
                found = file[name]
            else:
                access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                access.set_chunk_cache(slots, cache_bytes, 0.75)
                found = h5py.Dataset(h5py.h5d.open(file.id, name.encode(), access))
            self._datasets[name] = found
        return found

    def memmap(self, info: DatasetInfo) -> np.ndarray[Any, Any] | None:
        """A read-only memory map of a contiguous dataset (``None`` if not possible)."""
        if info.mmap_offset is None:
            return None
        if self._pid != os.getpid():
            self.file()
        found = self._maps.get(info.name)
        if found is None:
            mapped = np.memmap(
                self.path, dtype=info.dtype, mode="r", offset=info.mmap_offset, shape=info.shape
            )
            # a plain ndarray view: slices and gathers of it are plain arrays too
            found = self._maps[info.name] = mapped.view(np.ndarray)
        return found

    def close(self) -> None:
        """Close this process's handle (it re-opens on next use)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._datasets, self._maps = None, None, {}, {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._pid, self._file, self._datasets, self._maps = None, None, {}, {}


class Reader:
    """Reads rows of one dataset in file coordinates: memory map if possible, else h5py."""

    def __init__(
        self, lazy: LazyFile, info: DatasetInfo, use_mmap: bool, cache_bytes: int | None = None
    ) -> None:
        self.lazy = lazy
        self.info = info
        self.use_mmap = use_mmap and info.mmap_offset is not None
        self.cache_bytes = chunk_cache_bytes(info) if cache_bytes is None else cache_bytes
        self.cache_slots = cache_slots(self.cache_bytes, info)

    def dataset(self) -> h5py.Dataset:
        """This process's h5py dataset, with the chunk cache sized for it."""
        return self.lazy.dataset(self.info.name, self.cache_bytes, self.cache_slots)

    def _source(self) -> Any:
        if self.use_mmap:
            mapped = self.lazy.memmap(self.info)
            if mapped is not None:
                return mapped
        return self.dataset()

    def read_range(self, start: int, stop: int, step: int = 1) -> np.ndarray[Any, Any]:
        """Rows ``start:stop:step`` (``step > 0``, ``0 <= start <= stop``) as a new array."""
        source = self._source()
        count = len(range(start, stop, step))
        if count == 0:
            return np.empty((0, *self.info.shape[1:]), dtype=self.info.dtype)
        if isinstance(source, np.ndarray):
            return np.array(source[start:stop:step])  # a copy: never hand out the map
        if self.info.dtype.kind in "iufc" and h5py.check_dtype(enum=self.info.dtype) is None:
            # the low-level read skips h5py's selection machinery (a third of the time)
            out = np.empty((count, *self.info.shape[1:]), dtype=self.info.dtype)
            space = source.id.get_space()
            rank = len(self.info.shape)
            space.select_hyperslab(
                (start,) + (0,) * (rank - 1),
                (count,) + (1,) * (rank - 1),
                stride=(step,) + (1,) * (rank - 1),
                block=(1, *self.info.shape[1:]),
            )
            memory = h5py.h5s.create_simple(out.shape)
            source.id.read(memory, space, out)
            return out
        return np.asarray(source[start:stop:step])

    def read_sorted(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Rows at ``rows`` (sorted, unique, in range) in one read."""
        count = len(rows)
        if count == 0:
            return np.empty((0, *self.info.shape[1:]), dtype=self.info.dtype)
        first, last = int(rows[0]), int(rows[-1])
        span = last - first + 1
        if span == count:
            return self.read_range(first, last + 1)
        source = self._source()
        if isinstance(source, np.ndarray):
            gathered: np.ndarray[Any, Any] = source[rows]  # fancy indexing copies
            return gathered
        if span <= 2 * count + 64:
            # nearly contiguous: one range read and a gather beat HDF5's point selection
            block = self.read_range(first, last + 1)
            picked: np.ndarray[Any, Any] = block[rows - first]
            return picked
        return np.asarray(source[rows])
