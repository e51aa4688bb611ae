"""Helpers for the SequenceLoader tests that child processes must import by name.

Spawned DataLoader workers and torch.distributed ranks unpickle these classes and
functions: they live in a module importable from tests/kdata (conftest puts it on the
path), not inside a test module. This file holds no tests.
"""

from __future__ import annotations

import json
import os
import random
import socket
import warnings
from typing import Any

import numpy as np
import torch

import kdata


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KerasShuffled(kdata.Sequence):
    """The Keras 2 idiom: row indices reshuffled in ``on_epoch_end`` without a seed.

    Batch ``i`` is the row ids ``indices[i * batch_size:(i + 1) * batch_size]`` (a view).
    ``how``: "numpy" (np.random.shuffle), "random" (random.shuffle of a list), "torch"
    (torch.randperm), "own" (an unseeded np.random.default_rng of its own, per process).
    ``in_init``: shuffle once in ``__init__`` too (Keras's examples call on_epoch_end there).
    """

    def __init__(self, rows: int, batch_size: int, how: str, in_init: bool = False) -> None:
        self.batch_size = batch_size
        self.how = how
        self.indices = np.arange(rows)
        self.rng = np.random.default_rng() if how == "own" else None
        if in_init:
            self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.indices[index * self.batch_size : (index + 1) * self.batch_size]

    def on_epoch_end(self) -> None:
        if self.how == "numpy":
            np.random.shuffle(self.indices)
        elif self.how == "random":
            order = self.indices.tolist()
            random.shuffle(order)
            self.indices = np.array(order)
        elif self.how == "torch":
            self.indices = self.indices[torch.randperm(len(self.indices)).numpy()]
        else:
            assert self.rng is not None
            self.rng.shuffle(self.indices)


class RankLength(kdata.Sequence):
    """A sequence whose length differs between ranks (held in a plain int)."""

    def __init__(self, rank: int) -> None:
        self.count = 4 + rank

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        return np.zeros(1)


# (name, how, in_init, loader keyword arguments)
DDP_SCENARIOS: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("numpy", "numpy", False, {}),
    ("random", "random", False, {"shuffle": True}),
    ("torch", "torch", False, {}),
    ("init", "numpy", True, {}),
    ("own", "own", False, {}),
    ("workers", "numpy", True, {"num_workers": 2, "persistent_workers": True}),
    ("unagreed", "numpy", False, {"agree_ranks": False}),
]
DDP_ROWS, DDP_BATCH, DDP_EPOCHS = 42, 4, 3  # 11 batches: one padded batch with 2 ranks


def ddp_rank_main(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank of the DDP agreement test: 3 epochs of each scenario, results to JSON."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    results: dict[str, Any] = {}
    try:
        for name, how, in_init, options in DDP_SCENARIOS:
            seq = KerasShuffled(DDP_ROWS, DDP_BATCH, how, in_init=in_init)
            np.random.seed(1000 + rank)
            random.seed(1000 + rank)
            torch.manual_seed(1000 + rank)
            epochs = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loader = kdata.SequenceLoader(seq, multiprocessing_context="fork", **options)
                with loader:
                    for _ in range(DDP_EPOCHS):
                        batches, indices = [], None
                        for batch in loader:
                            if indices is None:  # the epoch has started (ranks synced)
                                indices = seq.indices.tolist()
                            batches.append(batch.tolist())
                        epochs.append({"indices": indices, "got": batches})
            # the user's own random streams go on as if the loader had not drawn anything
            streams = [float(np.random.rand()), random.random(), float(torch.rand(1))]
            results[name] = {
                "epochs": epochs,
                "order": [loader.order(e) for e in range(DDP_EPOCHS)],
                "streams": streams,
                "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning],
                "warned_at": [w.filename for w in caught if w.category is RuntimeWarning],
                "len": len(loader),
            }
        # a length that differs between ranks cannot be fixed: every rank raises, none hangs
        try:
            list(kdata.SequenceLoader(RankLength(rank)))
        except RuntimeError as error:
            results["rank_length_error"] = str(error)
        with open(os.path.join(out_dir, f"rank-{rank}.json"), "w") as file:
            json.dump(results, file)
        dist.barrier()
    finally:
        dist.destroy_process_group()


class BigShuffled(kdata.Sequence):
    """A big array that never changes and a small index order that ``on_epoch_end`` shuffles
    (seeded by ``seed + epoch``). ``inplace=True`` rewrites the big array in place instead.

    Batch ``i`` is ``x[indices[i * batch_size:(i + 1) * batch_size]]`` (rows as a copy).
    """

    def __init__(self, rows: int, width: int, batch_size: int, inplace: bool = False) -> None:
        self.x = np.arange(rows * width, dtype=np.float32).reshape(rows, width)
        self.indices = np.arange(rows)
        self.batch_size = batch_size
        self.inplace = inplace
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __getitem__(self, index: int) -> np.ndarray:
        rows = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        order = np.random.default_rng(self.epoch).permutation(len(self.indices))
        if self.inplace:
            self.x[:] = self.x[order]
        else:
            self.indices = self.indices[order]


def abort_when_exiting(worker_id: int) -> None:
    """worker_init_fn: the worker dies by SIGABRT as it exits (as a C++ runtime can)."""
    from multiprocessing import util

    util.Finalize(None, os.abort, exitpriority=100)
