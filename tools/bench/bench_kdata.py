"""kdata benchmarks: HDF5 batches through DataLoader, HDF5Matrix reads per layout,
compressed chunks, Sequence epochs, to_categorical.

Every line is measured side by side, in one run, against the baseline the issue names:
raw h5py slice reads (on a copy of the file: HDF5 shares an open file per process), a
naive per-row Dataset, a plain Python loop, Keras's numpy to_categorical, and
F.one_hot(...).float(). Data is generated in a temp dir; the files are hot in the page
cache.

Run: KERAS_BACKEND=torch python tools/bench/bench_kdata.py [--quick]
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
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
    batch_loader,
    to_categorical,
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


def steady(loader: Iterable[Any], count: int) -> Callable[[], int]:
    """Take the next ``count`` batches of one running epoch (a new epoch when it ends):
    per-batch cost, without the per-epoch start (e.g. a 200,000-row permutation)."""
    state: dict[str, Iterator[Any]] = {}

    def run() -> int:
        taken = 0
        while taken < count:
            it = state.get("it")
            if it is None:
                it = state["it"] = iter(loader)
            try:
                next(it)
            except StopIteration:
                del state["it"]
                continue
            taken += 1
        return taken

    return run


def rows_per_s(c: Comparison, rows: int) -> str:
    return f"    ({rows / c.ours / 1e6:.2f}M rows/s vs {rows / c.baseline / 1e6:.2f}M rows/s)"


def _raw_epoch(raw: Any, rows: int, limit: int | None = None) -> Callable[[], int]:
    """What a user writes with h5py alone: ``d[s:s+256]`` to a tensor, batch by batch."""
    stop = rows if limit is None else min(rows, limit * BATCH)

    def run() -> int:
        count = 0
        for start in range(0, stop, BATCH):
            torch.from_numpy(raw[start : start + BATCH])
            count += 1
        return count

    return run


def bench_hdf5(tmp: str, quick: bool) -> list[Comparison]:
    print_header(f"kdata: HDF5 batches of {BATCH} through DataLoader ({ROWS} x {COLS} float32)")
    rng = np.random.default_rng(0)
    path = os.path.join(tmp, "bench.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset("x", data=rng.random((ROWS, COLS), dtype=np.float32))
    # the baseline reads a copy: HDF5 shares one open file (and dataset) per process
    base_path = os.path.join(tmp, "bench-copy.h5")
    shutil.copyfile(path, base_path)
    repeat = 3 if quick else 7
    few = 40 if quick else 100  # batches, where the naive baseline is too slow for an epoch
    results = []

    matrix = HDF5Matrix(path, "x")
    raw_file = h5py.File(base_path, "r")
    raw = raw_file["x"]

    # the code torch users write first: default sampler, default collate
    plain = DataLoader(matrix, batch_size=BATCH)
    c = compare(
        "DataLoader(HDF5Matrix, batch_size=256), defaults, vs raw h5py",
        lambda: drain(plain),
        _raw_epoch(raw, ROWS),
        "raw h5py slices",
        repeat=repeat,
        goal=0.25,
    )
    print(rows_per_s(c, ROWS))
    results.append(c)

    loader = batch_loader(matrix, BATCH)
    c = compare(
        "batch_loader(HDF5Matrix, 256) sequential vs raw h5py",
        lambda: drain(loader),
        _raw_epoch(raw, ROWS),
        "raw h5py slices",
        repeat=repeat,
        goal=0.8,
    )
    print(rows_per_s(c, ROWS))
    results.append(c)

    naive = NaiveRows(base_path, "x")
    plain_random = DataLoader(
        matrix, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    naive_random = DataLoader(naive, batch_size=BATCH, shuffle=True)
    c = compare(
        f"DataLoader(HDF5Matrix, shuffle=True) vs naive per-row ({few} batches)",
        steady(plain_random, few),
        steady(naive_random, few),
        "naive shuffle=True",
        repeat=repeat,
        goal=10,
    )
    print(rows_per_s(c, few * BATCH))
    results.append(c)

    naive_seq = DataLoader(naive, batch_size=BATCH)
    c = compare(
        f"batch_loader sequential vs naive per-row Dataset ({few} batches)",
        lambda: drain(loader, few),
        lambda: drain(naive_seq, few),
        "naive per-row",
        repeat=repeat,
        goal=20,
    )
    print(rows_per_s(c, few * BATCH))
    results.append(c)

    shuffled = batch_loader(matrix, BATCH, shuffle=True, seed=0)
    c = compare(
        f"batch_loader shuffle=True vs naive shuffle=True ({few} batches)",
        steady(shuffled, few),
        steady(naive_random, few),
        "naive shuffle=True",
        repeat=repeat,
        goal=10,
    )
    print(rows_per_s(c, few * BATCH))
    results.append(c)

    blocks = batch_loader(matrix, BATCH, shuffle="batch", seed=0)
    c = compare(
        "batch_loader shuffle='batch' vs our sequential",
        lambda: drain(blocks),
        lambda: drain(loader),
        "ours sequential",
        repeat=repeat,
        goal=0.5,
    )
    print(rows_per_s(c, ROWS))
    results.append(c)

    # context, not a goal: workers only help when a batch costs more than handing it over
    workers = DataLoader(
        matrix,
        batch_size=BATCH,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context="fork",
    )
    drain(workers)
    c = compare(
        "context: DataLoader(HDF5Matrix) 2 workers vs 0 workers",
        lambda: drain(workers),
        lambda: drain(plain),
        "0 workers",
        repeat=repeat,
    )
    results.append(c)
    raw_file.close()
    return results


def bench_layouts(tmp: str, quick: bool) -> list[Comparison]:
    rows = 20_000
    print_header(f"kdata: HDF5Matrix[a:b] and [i] vs h5py d[a:b] / d[i] ({rows} x {COLS} float32)")
    data = np.random.default_rng(4).random((rows, COLS), dtype=np.float32)
    layouts = {
        "contiguous": {},
        "chunked": {"chunks": (1024, COLS)},
        "gzip": {"chunks": (1024, COLS), "compression": "gzip", "compression_opts": 1},
    }
    calls = 200 if quick else 1000
    starts = np.random.default_rng(5).integers(0, rows - BATCH, calls).tolist()
    results = []
    for layout, options in layouts.items():
        path = os.path.join(tmp, f"{layout}.h5")
        with h5py.File(path, "w") as file:
            file.create_dataset("x", data=data, **options)
        base_path = os.path.join(tmp, f"{layout}-copy.h5")
        shutil.copyfile(path, base_path)
        raw_file = h5py.File(base_path, "r")
        raw = raw_file["x"]
        maps = (True, False) if layout == "contiguous" else (True,)
        for memory_map in maps:
            matrix = HDF5Matrix(path, "x", memory_map=memory_map)
            matrix[0], raw[0]  # open both, warm the caches
            what = f"{layout}{'' if memory_map or layout != 'contiguous' else ' no mmap'}"

            def ours_slices(matrix: HDF5Matrix = matrix) -> None:
                for start in starts:
                    matrix[start : start + BATCH]

            def raw_slices(raw: Any = raw) -> None:
                for start in starts:
                    raw[start : start + BATCH]

            def ours_rows(matrix: HDF5Matrix = matrix) -> None:
                for start in starts:
                    matrix[start]

            def raw_rows(raw: Any = raw) -> None:
                for start in starts:
                    raw[start]

            for kind, ours, base in (
                ("[a:b]", ours_slices, raw_slices),
                ("[i]", ours_rows, raw_rows),
            ):
                results.append(
                    compare(
                        f"{what}: HDF5Matrix{kind} vs h5py d{kind}",
                        ours,
                        base,
                        f"h5py d{kind}",
                        repeat=5 if quick else 9,
                        per=calls,
                        goal=1 / 1.2,  # within 1.2x of h5py's time
                    )
                )
            matrix.close()
        raw_file.close()
    return results


def bench_compressed(tmp: str, quick: bool) -> list[Comparison]:
    rows, chunk = 40_000, 20_000  # one chunk: 20000 x 128 x 4 B = 10 MB > h5py's 8 MiB cache
    print_header(f"kdata: gzip dataset, chunks of {chunk} rows, batches of {BATCH}")
    path = os.path.join(tmp, "gzip.h5")
    data = np.random.default_rng(1).integers(0, 255, (rows, COLS)).astype(np.float32)
    with h5py.File(path, "w") as file:
        file.create_dataset("x", data=data, chunks=(chunk, COLS), compression="gzip")
    limit = 8 if quick else 24
    matrix = HDF5Matrix(path, "x")
    base_path = os.path.join(tmp, "gzip-copy.h5")
    shutil.copyfile(path, base_path)
    raw_file = h5py.File(base_path, "r")  # h5py's default 8 MiB chunk cache
    raw = raw_file["x"]
    loader = batch_loader(matrix, BATCH)

    def raw_run() -> None:
        for start in range(0, limit * BATCH, BATCH):
            raw[start : start + BATCH]

    results = [
        compare(
            f"gzip, sized chunk cache vs h5py default cache ({limit} batches)",
            lambda: drain(loader, limit),
            raw_run,
            "h5py default cache",
            repeat=3,
            goal=None,  # the issue sets no ratio: each chunk decompressed once, not per batch
        )
    ]
    # a dataset larger than the chunk cache (as real ones are): sequential reading then
    # decompresses each chunk once per epoch, and so should a chunk-aware shuffle
    many_rows = 60_000 if quick else ROWS
    many_path = os.path.join(tmp, "gzip-many.h5")
    with h5py.File(many_path, "w") as file:
        file.create_dataset(
            "x",
            data=np.random.default_rng(2).integers(0, 255, (many_rows, COLS)).astype(np.float32),
            chunks=(4096, COLS),
            compression="gzip",
        )
    many = HDF5Matrix(many_path, "x")
    print(
        f"  ({many_rows} rows in chunks of 4096 rows, 2 MB each; chunk cache "
        f"{many._reader.cache_bytes / 1e6:.0f} MB)"
    )
    sequential = batch_loader(many, BATCH)
    chunked = batch_loader(many, BATCH, shuffle="chunks", seed=0)
    results.append(
        compare(
            "gzip, shuffle='chunks' vs sequential (whole epoch)",
            lambda: drain(chunked),
            lambda: drain(sequential),
            "sequential",
            repeat=3,
            goal=0.5,
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time warning this comparison illustrates
        shuffled = batch_loader(many, BATCH, shuffle=True, seed=0)
    few = 3 if quick else 6
    results.append(
        compare(
            f"context: gzip, shuffle=True vs shuffle='chunks' ({few} batches)",
            lambda: drain(shuffled, few),
            lambda: drain(chunked, few),
            "shuffle='chunks'",
            repeat=3,
        )
    )
    raw_file.close()
    return results


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
        results += bench_layouts(tmp, quick)
        results += bench_compressed(tmp, quick)
    results += bench_sequence(quick)
    results += bench_categorical(quick)
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
