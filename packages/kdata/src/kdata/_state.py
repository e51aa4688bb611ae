"""A sequence's state across processes: what changed for persistent workers, what ranks hold.

- `StateDiff` tells which attributes of a sequence changed since its worker copies were
  made, by content (a digest per attribute: SHA-1, or CRC-32 per 8 MB chunk for big
  arrays), so persistent workers get only those.
- `fingerprint` is a cheap digest per array-like attribute, to compare across ranks.
- `seeded_global_rngs` runs code with numpy's, `random`'s and torch's global generators
  seeded, and puts the previous states back afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import zlib
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["StateDiff", "diffable", "fingerprint", "seeded_global_rngs"]

# arrays larger than this are fingerprinted from a sample of rows (a full digest costs
# about 0.2 s per 100 MB)
_SAMPLE_BYTES = 1 << 22
# arrays larger than this are digested for persistent workers in chunks of this size
_CHUNK_BYTES = 1 << 23
# ... and long lists from a sample of items
_SAMPLE_ITEMS = 1 << 16


def diffable(obj: object) -> bool:
    """Whether `obj`'s state is its plain `__dict__` (no custom pickling, no slots)."""
    kind = type(obj)
    if not hasattr(obj, "__dict__") or getattr(kind, "__slots__", None):
        return False
    if getattr(kind, "__reduce_ex__", None) is not object.__reduce_ex__:
        return False
    if getattr(kind, "__reduce__", None) is not object.__reduce__:
        return False
    getstate = getattr(kind, "__getstate__", None)
    if getstate is not None and getstate is not getattr(object, "__getstate__", None):
        return False
    return not hasattr(kind, "__setstate__")


def _array_of(value: Any) -> np.ndarray[Any, Any] | None:
    """The numeric numpy array behind an array or a CPU tensor (no copy), else None."""
    if isinstance(value, np.ndarray):
        return value if value.dtype.kind in "biufcmMSUV" else None
    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.is_sparse:
        try:
            return value.detach().numpy()
        except (TypeError, RuntimeError):  # bfloat16 and other types numpy lacks
            return None
    return None


def _digest_array(array: np.ndarray[Any, Any], sample: bool) -> Hashable:
    shape, dtype = array.shape, array.dtype.str
    if sample and array.ndim and array.nbytes > _SAMPLE_BYTES:
        row_bytes = max(1, array.nbytes // len(array))
        step = -(-len(array) // max(1, _SAMPLE_BYTES // row_bytes))
        array = array[::step]
    data = np.ascontiguousarray(array)
    if data.nbytes > _CHUNK_BYTES:
        # big: CRC-32 per chunk, in threads (zlib releases the GIL), about 5 GB/s per core;
        # a change is missed with odds of 2**-32 per changed chunk
        view = memoryview(data).cast("B")  # type: ignore[arg-type]
        parts = [view[start : start + _CHUNK_BYTES] for start in range(0, len(view), _CHUNK_BYTES)]
        threads = min(8, os.cpu_count() or 1, len(parts))
        if threads > 1:
            # joined before returning: no thread is left running when workers are forked
            with ThreadPoolExecutor(threads) as pool:
                crcs = tuple(pool.map(zlib.crc32, parts))
        else:
            crcs = tuple(map(zlib.crc32, parts))
        return ("crc32", shape, dtype, crcs)
    digest = hashlib.sha1(memoryview(data).cast("B") if data.size else b"").hexdigest()  # type: ignore[arg-type]
    return ("array", shape, dtype, digest)


def _token(value: Any, sample: bool = False) -> Hashable:
    """A digest of `value`'s content (equal contents, equal tokens)."""
    array = _array_of(value)
    if array is not None:
        return _digest_array(array, sample)
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        # cannot travel anyway: changed only when replaced by another object
        return ("unpicklable", id(value))
    return ("pickle", hashlib.sha1(blob).hexdigest())


class StateDiff:
    """The attributes of a sequence that changed since its workers copied it.

    Made when the workers are started (it digests the attributes then); `changes()` later
    returns the names to send: every attribute whose content differs now, or ever did
    since (a worker may have missed an epoch, so what changed once is always sent).
    """

    def __init__(self, sequence: object) -> None:
        self.base = {name: _token(value) for name, value in vars(sequence).items()}
        self.dirty: set[str] = set()

    def changes(self, sequence: object) -> tuple[dict[str, Any], list[str]]:
        """`(attributes to set, names to delete)` that bring a worker's copy up to date."""
        now = vars(sequence)
        for name, value in now.items():
            if name not in self.dirty and self.base.get(name, _MISSING) != _token(value):
                self.dirty.add(name)
        self.dirty |= self.base.keys() - now.keys()
        updates = {name: now[name] for name in sorted(self.dirty) if name in now}
        deleted = sorted(name for name in self.dirty if name not in now)
        return updates, deleted


_MISSING: Hashable = ("missing",)


def fingerprint(sequence: object) -> dict[str, Hashable]:
    """A cheap digest of what decides a sequence's batches: its length and array attributes.

    Arrays, tensors, lists and tuples among the attributes are digested (large arrays from
    a sample of rows); other attributes (paths, numbers, handles) may differ between ranks.
    """
    out: dict[str, Hashable] = {"__len__": len(sequence)}  # type: ignore[arg-type]
    for name, value in getattr(sequence, "__dict__", {}).items():
        if isinstance(value, (np.ndarray, torch.Tensor)):
            out[name] = _token(value, sample=True)
        elif isinstance(value, (list, tuple)):
            step = max(1, len(value) // _SAMPLE_ITEMS)
            out[name] = (len(value), _token(value[::step]))
    return out


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed numpy's, `random`'s and torch's global generators; restore them on exit.

    The CPU generator of torch always; CUDA's only when CUDA is already initialized (so
    that nothing is initialized, or queued for later, as a side effect).
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    torch_state = torch.random.get_rng_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda_states = torch.cuda.get_rng_state_all() if cuda else []
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.default_generator.manual_seed(seed)
    if cuda:
        torch.cuda.manual_seed_all(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        torch.random.set_rng_state(torch_state)
        if cuda:
            torch.cuda.set_rng_state_all(cuda_states)
