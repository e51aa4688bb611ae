"""Picklable, importable helpers for kdata's tests (spawned workers import this module)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import kdata
import kregistry


def log_lines(path: str) -> list[str]:
    """The lines of a log file (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return file.read().split()


class LoggedSequence(kdata.Sequence):
    """Batch ``i`` is ``[1000 * i + tag] * 4``; every fetch is logged as ``tag:i:pid``.

    ``on_epoch_end`` bumps ``tag`` (its effect shows in the next epoch's batches), logs the
    pid it ran in, and optionally grows the number of batches.
    """

    def __init__(self, log: str, batches: int = 10, grow: int = 0) -> None:
        self.log = log
        self.batches = batches
        self.grow = grow
        self.tag = 0

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.batches:
            raise IndexError(f"batch {index} out of range")
        with open(self.log, "a") as file:
            file.write(f"{self.tag}:{index}:{os.getpid()}\n")
        return np.full(4, 1000 * index + self.tag, dtype=np.int64)

    def on_epoch_end(self) -> None:
        self.tag += 1
        self.batches += self.grow
        with open(self.log + ".end", "a") as file:
            file.write(f"{os.getpid()}\n")


class UnpicklableSequence(LoggedSequence):
    """A LoggedSequence holding a lambda: it cannot be pickled (fork workers still work)."""

    def __init__(self, log: str, batches: int = 4) -> None:
        super().__init__(log, batches)
        self.hook = lambda value: value


class FailingSequence(kdata.Sequence):
    """Batch ``bad`` raises ``ValueError("boom")``; the others are arrays."""

    def __init__(self, bad: int = 3, batches: int = 6) -> None:
        self.bad = bad
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> np.ndarray:
        if index == self.bad:
            raise ValueError("boom")
        return np.zeros(2)


class NestedSequence(kdata.Sequence):
    """Batches that are tuples and dicts of arrays, numpy scalars and strings."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> Any:
        x = np.full((2, 3), index, dtype=np.float32)
        return {"x": x, "pair": (np.arange(2), np.int64(index)), "name": f"b{index}"}


def triple(value: int) -> int:
    """A function registered in tests' scopes."""
    return 3 * value


class ScopedSequence(kdata.Sequence):
    """Each batch resolves the name ``kdata_test_fn`` through kregistry, in the worker."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> np.ndarray:
        fn = kregistry.resolve("kdata_test_fn")
        return np.array([fn(index), os.getpid()])


def add_one(block: np.ndarray) -> np.ndarray:
    """A module-level normalizer (picklable)."""
    return block + 1


def as_float64_halves(block: np.ndarray) -> np.ndarray:
    """A normalizer that changes dtype and shape of rows."""
    return (block[:, :2] / 2).astype(np.float64)


def distributed_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    """One rank: joins a gloo group, runs one shuffled epoch, writes what it got."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        log = os.path.join(out_dir, f"fetch-{rank}.log")
        loader = kdata.SequenceLoader(LoggedSequence(log, batches=11), shuffle=True)
        got = [int(batch[0]) // 1000 for batch in loader]
        sampler = kdata.SliceBatchSampler(50, 8, shuffle="batch")
        starts = [key.start for key in sampler]
        with open(os.path.join(out_dir, f"rank-{rank}.txt"), "w") as file:
            file.write(" ".join(map(str, got)) + "\n" + " ".join(map(str, starts)) + "\n")
            file.write(f"{loader.rank} {loader.world_size} {loader.seed}\n")
        dist.barrier()
    finally:
        dist.destroy_process_group()


class HDF5Batches(kdata.Sequence):
    """Batches of rows of an HDF5Matrix; ``on_epoch_end`` grows the batch size by one and
    adds 1000 to the values, so both the length and the data change between epochs."""

    def __init__(self, path: str, dataset: str, batch_size: int) -> None:
        self.rows = kdata.HDF5Matrix(path, dataset)
        self.batch_size = batch_size
        self.offset = 0

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        start = index * self.batch_size
        return self.rows[start : start + self.batch_size] + self.offset, os.getpid()

    def on_epoch_end(self) -> None:
        self.batch_size += 1
        self.offset += 1000
