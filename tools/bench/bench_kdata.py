"""kdata benchmarks: HDF5 batches through DataLoader, Sequence epochs, to_categorical.

Every line is measured side by side, in one run, against the baseline the issue names:
raw h5py slice reads, a naive per-row Dataset, a plain Python loop, Keras's numpy
to_categorical, and F.one_hot(...).float(). Data is generated in a temp dir.

Run: KERAS_BACKEND=torch python tools/bench/bench_kdata.py [--quick]
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from _common import Comparison, compare, print_header
from torch.utils.data import DataLoader, Dataset

from kdata import (
    HDF5Matrix,
    Sequence,
    SequenceLoader,
    SliceBatchSampler,
    to_categorical,
    to_tensors,
)

ROWS, COLS, BATCH = 200_000, 128, 256


class NaiveRows(Dataset[Any]):
    """What a user writes first: one h5py read per row, the file opened per process."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name
        self._data: Any = None
        with h5py.File(path, "r") as file:
            self.length = len(file[name])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if self._data is None:
            self._data = h5py.File(self.path, "r")[self.name]
        return self._data[index]


class ArraySequence(Sequence):
    """A typical Keras Sequence: a shuffled gather from in-memory arrays, standardized
    (tens of microseconds per batch; ``cheap=True``: a bare slice, a few microseconds)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, cheap: bool = False) -> None:
        self.x, self.y, self.batch_size, self.cheap = x, y, batch_size, cheap
        self.index = np.random.default_rng(0).permutation(len(x))
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
        if self.cheap:
            return self.x[part], self.y[part]
        rows = self.index[part]
        return (self.x[rows] - self.mean) / self.std, self.y[rows]

    def on_epoch_end(self) -> None:
        np.random.default_rng(1).shuffle(self.index)


class HeavySequence(Sequence):
    """A Sequence whose batches cost CPU time (single-threaded numpy work)."""

    def __init__(self, batches: int, work: int) -> None:
        self.batches, self.work = batches, work

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, idx: int) -> np.ndarray:
        x = np.linspace(0.0, 1.0, self.work, dtype=np.float64) + idx
        for _ in range(6):
            x = np.sin(x) * np.cos(x) + 0.5
        return x[:64].astype(np.float32)


def drain(batches: Iterable[Any], limit: int | None = None) -> int:
    count = 0
    for _ in itertools.islice(batches, limit):
        count += 1
    return count


def rows_per_s(c: Comparison, rows: int) -> str:
    return f"    ({rows / c.ours / 1e6:.2f}M rows/s vs {rows / c.baseline / 1e6:.2f}M rows/s)"


def bench_hdf5(tmp: str, quick: bool) -> list[Comparison]:
    print_header(f"kdata: HDF5 batches of {BATCH} through DataLoader ({ROWS} x {COLS} float32)")
    rng = np.random.default_rng(0)
    path = os.path.join(tmp, "bench.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset("x", data=rng.random((ROWS, COLS), dtype=np.float32))
    repeat = 3 if quick else 7
    few = 40 if quick else 100  # batches, where the naive baseline is too slow for an epoch
    results = []

    matrix = HDF5Matrix(path, "x")
    raw_file = h5py.File(path, "r")
    raw = raw_file["x"]

    def ours_sequential(limit: int | None = None) -> Callable[[], int]:
        sampler = SliceBatchSampler(matrix, BATCH)
        loader = DataLoader(matrix, sampler=sampler, batch_size=None, collate_fn=to_tensors)
        return lambda: drain(loader, limit)

    def raw_slices(limit: int) -> Callable[[], int]:
        def run() -> int:
            for start in range(0, limit * BATCH, BATCH):
                torch.from_numpy(raw[start : start + BATCH])
            return limit

        return run

    batches = -(-ROWS // BATCH)
    c = compare(
        "sequential, DataLoader + SliceBatchSampler vs raw h5py",
        ours_sequential(),
        raw_slices(batches),
        "raw h5py slices",
        repeat=repeat,
        goal=0.5,
    )
    print(rows_per_s(c, ROWS))
    results.append(c)

    naive = NaiveRows(path, "x")
    naive_seq = DataLoader(naive, batch_size=BATCH)
    c = compare(
        f"sequential, ours vs naive per-row Dataset ({few} batches)",
        ours_sequential(few),
        lambda: drain(naive_seq, few),
        "naive per-row",
        repeat=repeat,
        goal=20,
    )
    print(rows_per_s(c, few * BATCH))
    results.append(c)

    shuffled = SliceBatchSampler(matrix, BATCH, shuffle=True, seed=0)
    ours_random = DataLoader(matrix, sampler=shuffled, batch_size=None, collate_fn=to_tensors)
    naive_random = DataLoader(naive, batch_size=BATCH, shuffle=True)
    c = compare(
        f"shuffle=True (random rows), ours vs naive shuffle=True ({few} batches)",
        lambda: drain(ours_random, few),
        lambda: drain(naive_random, few),
        "naive shuffle=True",
        repeat=repeat,
        goal=3,
    )
    print(rows_per_s(c, few * BATCH))
    results.append(c)

    blocks = SliceBatchSampler(matrix, BATCH, shuffle="batch", seed=0)
    ours_blocks = DataLoader(matrix, sampler=blocks, batch_size=None, collate_fn=to_tensors)
    c = compare(
        "shuffle='batch' (block shuffle) vs our sequential",
        lambda: drain(ours_blocks),
        ours_sequential(),
        "ours sequential",
        repeat=repeat,
        goal=0.5,
    )
    print(rows_per_s(c, ROWS))
    results.append(c)

    raw_file.close()
    return results


def bench_compressed(tmp: str, quick: bool) -> list[Comparison]:
    rows, chunk = 40_000, 20_000  # one chunk: 20000 x 128 x 4 B = 10 MB > h5py's 8 MiB cache
    print_header(f"kdata: gzip dataset, chunks of {chunk} rows, sequential batches of {BATCH}")
    path = os.path.join(tmp, "gzip.h5")
    data = np.random.default_rng(1).integers(0, 255, (rows, COLS)).astype(np.float32)
    with h5py.File(path, "w") as file:
        file.create_dataset("x", data=data, chunks=(chunk, COLS), compression="gzip")
    limit = 8 if quick else 24
    matrix = HDF5Matrix(path, "x")
    # a copy for the baseline: HDF5 shares one open dataset (and its chunk cache) between
    # all handles of a process on the same file, which would blur the two sides
    base_path = os.path.join(tmp, "gzip-copy.h5")
    shutil.copyfile(path, base_path)
    raw_file = h5py.File(base_path, "r")  # h5py's default 8 MiB chunk cache
    raw = raw_file["x"]
    loader = DataLoader(
        matrix,
        sampler=SliceBatchSampler(matrix, BATCH),
        batch_size=None,
        collate_fn=to_tensors,
    )

    def raw_run() -> None:
        for start in range(0, limit * BATCH, BATCH):
            raw[start : start + BATCH]

    c = compare(
        f"gzip, sized chunk cache vs h5py default cache ({limit} batches)",
        lambda: drain(loader, limit),
        raw_run,
        "h5py default cache",
        repeat=3,
        goal=None,  # the issue sets no ratio: each chunk decompressed once, not per batch
    )
    raw_file.close()
    return [c]


def bench_sequence(quick: bool) -> list[Comparison]:
    print_header("kdata: SequenceLoader epochs")
    rng = np.random.default_rng(2)
    x = rng.random((50_000, 128), dtype=np.float32)
    y = rng.integers(0, 10, 50_000)
    results = []
    for cheap in (False, True):
        seq = ArraySequence(x, y, 64, cheap=cheap)
        loader = SequenceLoader(seq)

        def ours(loader: SequenceLoader = loader) -> None:
            for _ in loader:  # a whole epoch, on_epoch_end included
                pass

        def plain_loop(seq: ArraySequence = seq) -> None:
            for i in range(len(seq)):
                xb, yb = seq[i]
                torch.from_numpy(xb), torch.from_numpy(yb)
            seq.on_epoch_end()

        what = "bare-slice __getitem__ (~3 us)" if cheap else "gather+standardize __getitem__"
        results.append(
            compare(
                f"0 workers, {what}: SequenceLoader vs plain loop",
                ours,
                plain_loop,
                "plain loop",
                repeat=5 if quick else 11,
                # the goal is about real batches; a bare slice shows the fixed cost
                goal=None if cheap else 1 / 1.05,
            )
        )
    heavy = HeavySequence(batches=16 if quick else 32, work=200_000)
    serial = SequenceLoader(heavy)
    parallel = SequenceLoader(
        heavy, num_workers=2, persistent_workers=True, multiprocessing_context="fork"
    )
    drain(parallel)  # start the persistent workers once, as training does
    results.append(
        compare(
            "CPU-heavy __getitem__: 2 workers vs 0 workers",
            lambda: drain(parallel),
            lambda: drain(serial),
            "0 workers",
            repeat=3 if quick else 5,
            goal=1.6,
        )
    )
    parallel.close()

    # context, not a goal: what two plain processes get on this machine right now (other
    # jobs on a shared 2-core machine cap any 2-process speed-up)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results.append(
            compare(
                "ceiling: a warm multiprocessing.Pool(2) vs 0 workers",
                lambda: pool.map(heavy.__getitem__, range(len(heavy)), chunksize=1),
                lambda: drain(serial),
                "0 workers",
                repeat=3 if quick else 5,
            )
        )
    return results


def bench_categorical(quick: bool) -> list[Comparison]:
    n = 10_000_000
    print_header(f"kdata: to_categorical on {n:,} labels, 10 classes")
    labels = np.random.default_rng(3).integers(0, 10, n)
    tensor = torch.from_numpy(labels)
    repeat = 3 if quick else 5
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.utils import to_categorical as keras_to_categorical

    return [
        # Keras 3 dropped dtype and always returns float64: compare like for like
        compare(
            "to_categorical numpy vs keras.utils.to_categorical (numpy)",
            lambda: to_categorical(labels, 10, dtype="float64"),
            lambda: keras_to_categorical(labels, 10),
            "keras numpy",
            repeat=repeat,
            goal=1.0,
        ),
        compare(
            "to_categorical tensor vs F.one_hot(...).float()",
            lambda: to_categorical(tensor, 10),
            lambda: F.one_hot(tensor, 10).float(),
            "F.one_hot.float",
            repeat=repeat,
            goal=2.0,
        ),
    ]


def main(quick: bool = False) -> list[Comparison]:
    results: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="kdata-bench-") as tmp:
        results += bench_hdf5(tmp, quick)
        results += bench_compressed(tmp, quick)
    results += bench_sequence(quick)
    results += bench_categorical(quick)
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
