"""Sharding across a real torch.distributed process group (gloo, two processes)."""

from __future__ import annotations

import os

import pytest
import torch.multiprocessing as mp
from _helpers_kdata import distributed_worker


@pytest.mark.slow
def test_sequence_and_sampler_shard_across_gloo_ranks(tmp_path):
    store = str(tmp_path / "store")
    mp.spawn(distributed_worker, args=(2, store, str(tmp_path)), nprocs=2, join=True)
    results = []
    for rank in range(2):
        with open(os.path.join(tmp_path, f"rank-{rank}.txt")) as file:
            got, starts, info = file.read().splitlines()
        results.append((list(map(int, got.split())), list(map(int, starts.split())), info))
    got = [r[0] for r in results]
    # every batch to exactly one rank; shuffled, with the seed agreed through the group
    assert sorted(got[0] + got[1]) == list(range(11))
    assert len(got[0]) == 6 and len(got[1]) == 5
    assert got[0] + got[1] != list(range(11))
    assert results[0][2].split()[:2] == ["0", "2"] and results[1][2].split()[:2] == ["1", "2"]
    assert results[0][2].split()[2] == results[1][2].split()[2]  # same seed on both ranks
    starts = sorted(results[0][1] + results[1][1])
    assert starts == list(range(0, 50, 8))
