"""Per-process, read-only access to HDF5 files, the fastest reader for each dataset, and
the checks that keep a file changed under a running job from crashing it or lying.

One handle per file and process (HDF5 shares an open file within a process anyway): it
is opened lazily and re-opened after a fork or in a spawned process (an HDF5 handle must
never cross a process boundary), so the objects using it pickle and work in DataLoader
workers. Each handle remembers the file's identity (device, inode, size, modification
time): a file replaced or rewritten since a view described it is re-opened and its layout
read again (or `FileChangedError` is raised), never read through stale offsets.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from h5py._objects import phil  # h5py's global lock around HDF5 calls

__all__ = [
    "DatasetInfo",
    "FileChangedError",
    "LazyFile",
    "Reader",
    "chunk_cache_bytes",
    "inspect_dataset",
    "open_checked",
]

_log = logging.getLogger("kdata")

_DEFAULT_CACHE = 8 * 1024**2  # h5py's (and HDF5's) default raw-data chunk cache
_MAX_AUTO_CACHE = 1024**3  # the automatic cache never grows past this
_ASSUMED_BATCH_ROWS = 1024  # the cache holds every chunk a batch of this many rows spans

# how often (seconds) a running process asks whether the file at the path is still the one
# it has open (a stat of the path); every read checks the open file's size and modification
# time (an fstat: a read past the end of a memory map kills the process, and HDF5 reads
# past the end of a truncated file as zeros)
RECHECK_SECONDS = 0.2

Stamp = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


class FileChangedError(OSError):
    """An HDF5 file changed (truncated, replaced, rewritten) while a view was reading it,
    so that the view can no longer be read correctly.

    Args:
        message: what happened, naming the file.
        path: the file's path (also in the message).

    Examples:
        >>> error = FileChangedError("datapath 'a.h5' was truncated", path="a.h5")
        >>> error.path, str(error)
        ('a.h5', "datapath 'a.h5' was truncated")
    """

    def __init__(self, message: str = "", path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.path))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def file_stamp(path: str) -> Stamp:
    """The identity of the file at ``path`` now."""
    return _stamp(os.stat(path))


@dataclass(frozen=True)
class DatasetInfo:
    """What kdata needs to know about one dataset, read once when the view is made."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[int, ...] | None
    mmap_offset: int | None  # byte offset of a contiguous, unfiltered, numeric dataset
    compressed: bool = False

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

    @property
    def numeric(self) -> bool:
        """Whether rows are plain numbers (ints, floats, complex; no enums)."""
        return _numeric(self.dtype)


def _numeric(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "iufc" and h5py.check_dtype(enum=dtype) is None


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
    if (
        obj.chunks is None
        and not compressed
        and _numeric(obj.dtype)
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
        compressed=compressed,
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


class _Handle:
    """The open file of one process: an fd (for identity checks and memory maps) and the
    h5py file, opened together; ``token`` is new at every (re-)open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.token = object()
        self.datasets: dict[str, h5py.Dataset] = {}
        self.maps: dict[tuple[str, int], np.ndarray[Any, Any]] = {}
        if not os.path.exists(path):
            raise FileNotFoundError(f"datapath {path!r} does not exist")
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(self.fd)
            self.stamp: Stamp = _stamp(st)
            self.file = open_checked(path)
        except BaseException:
            os.close(self.fd)
            raise
        self.checked = time.monotonic()
        _log.debug("kdata: opened %r read-only in process %d", path, self.pid)

    def dataset(self, name: str, cache_bytes: int | None, slots: int) -> h5py.Dataset:
        """The h5py dataset ``name``, opened read-only (h5py's fast reader) with its own
        chunk cache (set per dataset: HDF5 shares one open file between all handles of a
        process, so a file-level setting would be the first opener's)."""
        found = self.datasets.get(name)
        if found is None:
            if cache_bytes is None:
                found = self.file[name]
            else:
                access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                access.set_chunk_cache(slots, cache_bytes, 0.75)
                found = h5py.Dataset(
                    h5py.h5d.open(self.file.id, name.encode(), access), readonly=True
                )
            self.datasets[name] = found
        return found

    def memmap(self, info: DatasetInfo) -> np.ndarray[Any, Any]:
        """A read-only memory map of a contiguous dataset, made from the open fd."""
        assert info.mmap_offset is not None
        key = (info.name, info.mmap_offset)
        found = self.maps.get(key)
        if found is None:
            count = math.prod(info.shape)
            nbytes = count * info.dtype.itemsize
            start = info.mmap_offset
            if self.stamp[2] < start + nbytes:
                raise FileChangedError(
                    f"datapath {self.path!r} is {self.stamp[2]} bytes, too short for dataset "
                    f"{info.name!r} (bytes {start}..{start + nbytes}): was it truncated?",
                    path=self.path,
                )
            aligned = start - start % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(
                self.fd, nbytes + start - aligned, access=mmap.ACCESS_READ, offset=aligned
            )
            array = np.frombuffer(mapped, dtype=info.dtype, count=count, offset=start - aligned)
            found = self.maps[key] = array.reshape(info.shape)
        return found

    def verify(self) -> _Handle:
        """This handle, or a new one if the file changed (or `FileChangedError`).

        Checks at every call the open file's size and modification time (HDF5 reads past
        the end of a truncated file as zeros, and a memory map past it kills the process),
        and at most every ``RECHECK_SECONDS`` whether the path still names the open file.
        """
        now = time.monotonic()
        due = now - self.checked >= RECHECK_SECONDS
        st = os.fstat(self.fd)
        if st.st_size != self.stamp[2] or st.st_mtime_ns != self.stamp[3]:
            return _replace(self, f"changed in place ({self.stamp[2]} -> {st.st_size} bytes)")
        if due:
            self.checked = now
            try:
                current = file_stamp(self.path)
            except OSError:
                return self  # deleted: the open file is still the one described
            if current[:2] != self.stamp[:2]:
                return _replace(self, "replaced by another file")
        return self

    def close(self) -> None:
        """Close the h5py file and the fd (maps stay valid until dropped)."""
        self.datasets, self.maps = {}, {}
        if self.pid != os.getpid():
            return  # inherited through fork: never close the parent's HDF5 handle here
        try:
            self.file.close()
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)


_HANDLES: dict[str, _Handle] = {}


def _replace(handle: _Handle, why: str) -> _Handle:
    """Drop a handle whose file changed, and open the file at its path again."""
    path = handle.path
    if _HANDLES.get(path) is handle:
        del _HANDLES[path]
    handle.close()
    _log.info("kdata: %r %s while in use; re-opening it", path, why)
    try:
        new = _HANDLES[path] = _Handle(path)
    except (OSError, KeyError) as error:
        raise FileChangedError(
            f"datapath {path!r} {why} while in use and can no longer be read: {error}",
            path=path,
        ) from None
    return new


def handle_for(path: str) -> _Handle:
    """This process's handle of ``path``, opened now if needed."""
    handle = _HANDLES.get(path)
    if handle is None or handle.pid != os.getpid():
        if handle is not None:
            _drop_inherited(handle)
        handle = _HANDLES[path] = _Handle(path)
    return handle


def _drop_inherited(handle: _Handle) -> None:
    """Forget a handle inherited through fork. If the file changed since the parent opened
    it, close this process's copy of the parent's HDF5 file first: HDF5 would otherwise
    share that still-open file (same inode: rewritten in place) and its stale metadata with
    the file opened next."""
    try:
        changed = file_stamp(handle.path) != handle.stamp
    except OSError:
        changed = True
    handle.close()  # drops the objects; never closes the parent's HDF5 handle itself
    if changed:
        with contextlib.suppress(Exception):
            handle.file.close()  # this process's copy only: the parent's stays open
        with contextlib.suppress(OSError):
            os.close(handle.fd)


class LazyFile:
    """A file opened read-only on first use in each process; pickles as its path and the
    identity the file had when it was described."""

    def __init__(self, path: str, stamp: Stamp | None = None) -> None:
        self.path = path
        self.stamp = file_stamp(path) if stamp is None else stamp

    def handle(self) -> _Handle:
        """This process's open handle of the file."""
        return handle_for(self.path)

    def file(self) -> h5py.File:
        """This process's open h5py file."""
        return self.handle().file

    def is_open(self) -> bool:
        """Whether this process holds the file open."""
        handle = _HANDLES.get(self.path)
        return handle is not None and handle.pid == os.getpid()

    def close(self) -> None:
        """Close this process's handle of the file (the next read re-opens it)."""
        handle = _HANDLES.pop(self.path, None)
        if handle is not None:
            handle.close()


def _compatible(old: DatasetInfo, new: DatasetInfo, rows: int, path: str) -> None:
    if new.shape[1:] != old.shape[1:] or new.dtype != old.dtype or new.shape[0] < rows:
        raise FileChangedError(
            f"datapath {path!r} changed while in use: dataset {old.name!r} is now shape "
            f"{new.shape} {new.dtype}, the view needs {rows} rows of shape {old.shape[1:]} "
            f"{old.dtype}; create the HDF5Matrix again",
            path=path,
        )


class Reader:
    """Reads rows of one dataset in file coordinates: memory map if possible, else h5py's
    read-only fast reader. ``rows_needed``: the rows the view uses (checked if the file
    changes)."""

    def __init__(
        self,
        lazy: LazyFile,
        info: DatasetInfo,
        use_mmap: bool,
        cache_bytes: int | None = None,
        rows_needed: int | None = None,
    ) -> None:
        self.lazy = lazy
        self.path = lazy.path
        self.info = info
        self.want_mmap = use_mmap
        self.use_mmap = use_mmap and info.mmap_offset is not None
        self.auto_cache = cache_bytes is None
        self.cache_bytes = chunk_cache_bytes(info) if cache_bytes is None else cache_bytes
        self.cache_slots = cache_slots(self.cache_bytes, info)
        self.rows_needed = info.shape[0] if rows_needed is None else rows_needed
        self._stamp = lazy.stamp  # the file identity ``info`` describes
        self._token: object = None
        self._src: Any = None
        self._fast: Any = None  # h5py's compiled reader of simple selections, if usable
        # decompressed chunk-rows of a compressed dataset, most recent last (this process)
        self._blocks: OrderedDict[int, np.ndarray[Any, Any]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_token"] = state["_src"] = state["_fast"] = None
        state["_blocks"] = OrderedDict()
        return state

    def _attach(self, handle: _Handle) -> None:
        if handle.stamp != self._stamp:
            # the file is not the one this view was described from: read its layout again
            new = inspect_dataset(handle.file, self.info.name, self.path)
            _compatible(self.info, new, self.rows_needed, self.path)
            if new != self.info:
                _log.info("kdata: %r: dataset %r re-read after a change", self.path, new.name)
            self.info = new
            self.use_mmap = self.want_mmap and new.mmap_offset is not None
            if self.auto_cache:
                self.cache_bytes = chunk_cache_bytes(new)
                self.cache_slots = cache_slots(self.cache_bytes, new)
            self._stamp = handle.stamp
        self._fast = None
        self._blocks = OrderedDict()
        if self.use_mmap:
            self._src = handle.memmap(self.info)
        else:
            self._src = handle.dataset(self.info.name, self.cache_bytes, self.cache_slots)
            if self.info.numeric:
                # what h5py's Dataset.__getitem__ itself calls for ints and slices (cached
                # on read-only datasets), without its per-call argument handling
                try:
                    if self._src._fast_read_ok:
                        self._fast = self._src._fast_reader.read
                except AttributeError:  # another h5py: its __getitem__ does the same
                    self._fast = None
        self._token = handle.token

    def source(self) -> Any:
        """The memory map or h5py dataset of this process, checked against file changes."""
        handle = _HANDLES.get(self.path)
        if handle is None or handle.pid != os.getpid():
            try:
                handle = handle_for(self.path)
            except OSError as error:
                failed = self._failed(error)
                if isinstance(failed, FileChangedError) and failed is not error:
                    raise failed from None
                raise
        handle = handle.verify()
        if handle.token is not self._token:
            self._attach(handle)
        return self._src

    def dataset(self) -> h5py.Dataset:
        """This process's h5py dataset, with the chunk cache sized for it."""
        self.source()
        handle = handle_for(self.path)
        return handle.dataset(self.info.name, self.cache_bytes, self.cache_slots)

    def _failed(self, error: OSError) -> OSError:
        """A read error: blame a changed file if it changed, else name the file."""
        if isinstance(error, FileChangedError):
            return error
        try:
            changed = file_stamp(self.path) != self._stamp
        except OSError:
            changed = True
        if changed:
            return FileChangedError(
                f"datapath {self.path!r} changed while dataset {self.info.name!r} was read: "
                f"{error}",
                path=self.path,
            )
        return OSError(f"reading dataset {self.info.name!r} of {self.path!r} failed: {error}")

    def read_row(self, row: int) -> Any:
        """Row ``row`` (``0 <= row < rows``) as a new array (a numpy scalar for 1-D data)."""
        source = self.source()
        try:
            if self._fast is not None:
                with phil:
                    return self._fast((row,))
            out = source[row]
        except OSError as error:
            raise self._failed(error) from None
        if self.use_mmap and isinstance(out, np.ndarray):
            return out.copy()  # never hand out the map
        return out

    def read_range(self, start: int, stop: int, step: int = 1) -> np.ndarray[Any, Any]:
        """Rows ``start:stop:step`` (``step > 0``, ``0 <= start <= stop``) as a new array."""
        source = self.source()
        if start >= stop:
            return np.empty((0, *self.info.shape[1:]), dtype=self.info.dtype)
        key = slice(start, stop) if step == 1 else slice(start, stop, step)
        try:
            if self._fast is not None:
                with phil:
                    return self._fast((key,))  # type: ignore[no-any-return]
            block = source[key]
        except OSError as error:
            raise self._failed(error) from None
        if self.use_mmap:
            return np.array(block)  # a copy: never hand out the map
        return np.asarray(block)

    def read_sorted(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Rows at ``rows`` (sorted, unique, in range) in one read."""
        count = len(rows)
        if count == 0:
            return np.empty((0, *self.info.shape[1:]), dtype=self.info.dtype)
        first, last = int(rows[0]), int(rows[-1])
        span = last - first + 1
        if span == count:
            return self.read_range(first, last + 1)
        source = self.source()
        direct = self._gather_direct(source, rows)
        if direct is not None:
            return direct
        if span <= 2 * count + 64:
            # nearly contiguous: one range read and a gather beat HDF5's point selection
            block = self.read_range(first, last + 1)
            picked: np.ndarray[Any, Any] = block[rows - first]
            return picked
        try:
            return np.asarray(source[rows])
        except OSError as error:
            raise self._failed(error) from None

    def gather(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Rows at ``rows`` (1-D int64, in range, any order, repeats allowed), in that order.

        A memory map gathers directly; compressed chunks come from the decompressed
        chunk-rows; other layouts are read sorted and unique through h5py, then reordered.
        """
        direct = self._gather_direct(self.source(), rows)
        if direct is not None:
            return direct
        if len(rows) <= 1 or bool(np.all(rows[1:] > rows[:-1])):
            return self.read_sorted(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        block: np.ndarray[Any, Any] = self.read_sorted(unique)[inverse]
        return block

    def _gather_direct(
        self, source: Any, rows: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any] | None:
        """The layouts that gather rows in any order themselves, else None: a memory
        map (fancy indexing copies) and compressed chunks (from decompressed chunk-rows)."""
        if self.use_mmap:
            gathered: np.ndarray[Any, Any] = source[rows]
            return gathered
        if self.info.compressed and self.info.chunks is not None:
            return self._gather_chunked(rows)
        return None

    def _chunk_block(self, chunk: int) -> np.ndarray[Any, Any]:
        """The rows of chunk-row ``chunk``, decompressed once and kept while they fit the
        chunk cache budget (so a window of chunks read in random order costs one
        decompression per chunk, and no HDF5 point selection)."""
        blocks = self._blocks
        found = blocks.get(chunk)
        if found is not None:
            blocks.move_to_end(chunk)
            return found
        assert self.info.chunks is not None
        size = self.info.chunks[0]
        block = self.read_range(chunk * size, min((chunk + 1) * size, self.info.shape[0]))
        blocks[chunk] = block
        capacity = max(2, self.cache_bytes // max(self.info.chunk_row_bytes, 1))
        while len(blocks) > capacity:
            blocks.popitem(last=False)
        return block

    def _gather_chunked(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Rows at ``rows`` (any order) of a compressed dataset, from its chunk-rows."""
        assert self.info.chunks is not None
        size = self.info.chunks[0]
        out = np.empty((len(rows), *self.info.shape[1:]), dtype=self.info.dtype)
        if not len(rows):
            return out
        ids = rows // size
        low, high = int(ids.min()), int(ids.max())
        if low == high:
            out[:] = self._chunk_block(low)[rows - low * size]
            return out
        for chunk in np.unique(ids).tolist():
            where = np.flatnonzero(ids == chunk)
            out[where] = self._chunk_block(chunk)[rows[where] - chunk * size]
        return out
