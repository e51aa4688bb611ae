"""kdata SequenceLoader benchmarks: persistent workers over a big in-memory Sequence, and
the cost of copying batches (never aliasing the user's arrays) with 0 workers.

A Keras-style Sequence holds a big array that never changes and reshuffles a small index
order in `on_epoch_end`. Compared side by side, in one run:
- SequenceLoader with persistent workers (only what `on_epoch_end` changed is sent) vs the
  same with the whole sequence re-sent each epoch (what it did before), vs
  `persistent_workers=False`, and vs a plain `DataLoader` (fresh workers each epoch,
  `on_epoch_end` called by hand): epoch time and bytes sent; private memory per worker.
- 0 workers: `copy=True` (the default) vs `copy=False`.

Run: python tools/bench/bench_kdata_loader.py [--quick]
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import torch
from _common import Comparison, compare, print_header
from torch.utils.data import DataLoader

from kdata import Sequence, SequenceLoader


class BigInMemory(Sequence):
    """`x` (big, never changed) gathered through `indices` (shuffled each epoch)."""

    def __init__(self, x: np.ndarray, batch_size: int) -> None:
        self.x = x
        self.indices = np.arange(len(x))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int) -> np.ndarray:
        rows = np.sort(self.indices[index * self.batch_size : (index + 1) * self.batch_size])
        return self.x[rows]

    def on_epoch_end(self) -> None:
        np.random.shuffle(self.indices)


class WholeState(BigInMemory):
    """The same, pickled its own way: the loader must re-send all of it (the old way)."""

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _private_mb(pid: int) -> float:
    """A process's private memory (not shared with the parent after fork), in MB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def bench_persistent(quick: bool) -> list[Comparison]:
    rows, width = (50_000, 256) if quick else (200_000, 256)  # 51 MB or 205 MB float32
    print_header(f"kdata: persistent workers, a {rows * width * 4 / 1e6:.0f} MB in-memory Sequence")
    x = np.random.default_rng(0).random((rows, width), dtype=np.float32)
    options: dict[str, Any] = {"num_workers": 2, "multiprocessing_context": "fork"}
    batch = 2048
    repeat = 3 if quick else 5
    results = []

    diff_seq, whole_seq = BigInMemory(x, batch), WholeState(x, batch)
    ours = SequenceLoader(diff_seq, persistent_workers=True, **options)
    old = SequenceLoader(whole_seq, persistent_workers=True, **options)

    def epoch(loader: SequenceLoader) -> None:
        for _ in loader:
            pass

    before = _children()
    epoch(ours)  # start the workers
    ours_pids = _children() - before
    epoch(old)
    old_pids = _children() - before - ours_pids
    results.append(
        compare(
            "persistent workers: changed attributes vs whole sequence re-sent (s/epoch)",
            lambda: epoch(ours),
            lambda: epoch(old),
            "whole",
            repeat=repeat,
        )
    )
    sent = Comparison(
        "bytes sent to the workers per epoch",
        statistics.median(ours.published_bytes),
        statistics.median(old.published_bytes),
        "whole",
        unit="B",
    )
    print(sent.line(), flush=True)
    results.append(sent)
    ours_mb = statistics.median(_private_mb(pid) for pid in ours_pids)
    old_mb = statistics.median(_private_mb(pid) for pid in old_pids)
    memory = Comparison(
        "private memory per worker after the epochs", ours_mb, old_mb, "whole", unit="MB"
    )
    print(memory.line(), flush=True)
    results.append(memory)
    old.close()

    fresh = SequenceLoader(BigInMemory(x, batch), persistent_workers=False, **options)
    results.append(
        compare(
            "persistent (changed attributes) vs persistent_workers=False (s/epoch)",
            lambda: epoch(ours),
            lambda: epoch(fresh),
            "fresh",
            repeat=repeat,
        )
    )
    plain_seq = BigInMemory(x, batch)
    plain = DataLoader(plain_seq, batch_size=None, **options)

    def plain_epoch() -> None:
        for _ in plain:
            pass
        plain_seq.on_epoch_end()

    results.append(
        compare(
            "persistent SequenceLoader vs plain DataLoader + on_epoch_end (s/epoch)",
            lambda: epoch(ours),
            plain_epoch,
            "DataLoader",
            repeat=repeat,
        )
    )
    ours.close()

    spawn: dict[str, Any] = {"num_workers": 2, "multiprocessing_context": "spawn"}
    kept = SequenceLoader(BigInMemory(x, batch), persistent_workers=True, **spawn)
    epoch(kept)  # start the workers
    restarted = SequenceLoader(BigInMemory(x, batch), persistent_workers=False, **spawn)
    results.append(
        compare(
            "spawn: persistent (changed attributes) vs persistent_workers=False (s/epoch)",
            lambda: epoch(kept),
            lambda: epoch(restarted),
            "fresh",
            repeat=3,
        )
    )
    kept.close()
    return results


class Slices(Sequence):
    """Batches that are views of the sequence's arrays (they must be copied), or, with
    `gather=True`, fresh arrays made for the batch (nothing to protect: no copy needed)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, gather: bool) -> None:
        self.x, self.y, self.batch_size, self.gather = x, y, batch_size, gather

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.gather:
            rows = np.arange(part.start, part.stop)
            return self.x[rows], self.y[rows]
        return self.x[part], self.y[part]


def bench_copy(quick: bool) -> list[Comparison]:
    print_header("kdata: 0 workers, batches that never alias the sequence's arrays")
    rows = 20_000 if quick else 100_000
    x = np.random.default_rng(1).random((rows, 128), dtype=np.float32)
    y = np.arange(rows) % 10
    repeat = 5 if quick else 9
    results = []

    def run(loader: SequenceLoader) -> None:
        for _ in loader:
            pass

    for batch in (64, 1024):
        views = Slices(x, y, batch, gather=False)
        loader = SequenceLoader(views)

        def copying_loop(seq: Slices = views) -> None:
            for i in range(len(seq)):
                xb, yb = seq[i]
                torch.from_numpy(xb.copy()), torch.from_numpy(yb.copy())

        results.append(
            compare(
                f"views, batch {batch}x128: SequenceLoader (copies) vs a copying plain loop",
                lambda loader=loader: run(loader),
                copying_loop,
                "loop",
                repeat=repeat,
            )
        )
    fresh = Slices(x, y, 256, gather=True)
    copying, sharing = SequenceLoader(fresh), SequenceLoader(fresh, copy=False)
    results.append(
        compare(
            "fresh gathered batches 256x128: copy=True (no copy needed) vs copy=False",
            lambda: run(copying),
            lambda: run(sharing),
            "copy=False",
            repeat=repeat,
        )
    )
    return results


def main(quick: bool = False) -> list[Comparison]:
    return bench_persistent(quick) + bench_copy(quick)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
