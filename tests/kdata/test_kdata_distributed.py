"""Sharding across a real torch.distributed process group (gloo, two processes)."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import numpy as np
import pytest
import test_kdata_loader_support
import torch
import torch.multiprocessing as mp
from _helpers_kdata import distributed_worker
from test_kdata_loader_support import (
    DDP_BATCH,
    DDP_EPOCHS,
    DDP_ROWS,
    DDP_SCENARIOS,
    ddp_rank_main,
    free_port,
)
from torch.utils.data import DistributedSampler

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


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
    seed = int(results[0][2].split()[2])
    assert results[1][2].split()[2] == str(seed)  # same seed on both ranks, agreed
    # exactly DistributedSampler's shares for that seed: 11 batches padded to 12
    for rank in range(2):
        sampler = DistributedSampler(range(11), num_replicas=2, rank=rank, seed=seed)
        assert got[rank] == list(sampler)
    counts = Counter(got[0] + got[1])
    assert set(counts) == set(range(11)) and sorted(counts.values()) == [1] * 10 + [2]
    assert got[0] + got[1] != list(range(11))
    assert results[0][2].split()[:2] == ["0", "2"] and results[1][2].split()[:2] == ["1", "2"]
    # the slice sampler follows the same rule: 7 batches, padded to 8, all starts covered
    starts = Counter(results[0][1] + results[1][1])
    assert set(starts) == set(range(0, 50, 8)) and sum(starts.values()) == 8


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Run every scenario of the agreement test once on 2 gloo ranks (127.0.0.1)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(ddp_rank_main, args=(2, free_port(), str(out)), nprocs=2, join=True)
    results = []
    for rank in range(2):
        with open(out / f"rank-{rank}.json") as file:
            results.append(json.load(file))
    return results


AGREEING = [name for name, *_ in DDP_SCENARIOS if name != "unagreed"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", AGREEING)
def test_keras_style_reshuffles_agree_across_ranks(ddp_results, scenario):
    ranks = [result[scenario] for result in ddp_results]
    all_rows = Counter(range(DDP_ROWS))
    orders_seen = set()
    for epoch in range(DDP_EPOCHS):
        indices = [r["epochs"][epoch]["indices"] for r in ranks]
        assert indices[0] == indices[1]  # both ranks hold the same order
        assert sorted(indices[0]) == list(range(DDP_ROWS))
        orders_seen.add(tuple(indices[0]))
        got = [r["epochs"][epoch]["got"] for r in ranks]
        assert len(got[0]) == len(got[1]) == 6 == ranks[0]["len"]  # padded: equal counts
        # 0 lost, 0 duplicated beyond DistributedSampler's padding: 11 batches -> 12, the
        # padding being the first batch of the epoch order, fetched again by rank 1
        order = [r["order"][epoch] for r in ranks]
        padded = Counter(order[0] + order[1]) - Counter(range(11))
        assert sum(padded.values()) == 1
        expected = all_rows.copy()
        for batch in padded.elements():
            expected.update(indices[0][batch * DDP_BATCH : (batch + 1) * DDP_BATCH])
        seen = Counter(row for share in got for batch in share for row in batch)
        assert seen == expected
        for rank in range(2):  # each rank got the batches of its share, in order
            wanted = [indices[0][b * DDP_BATCH : (b + 1) * DDP_BATCH] for b in order[rank]]
            assert got[rank] == wanted
    assert len(orders_seen) == DDP_EPOCHS  # really reshuffled every epoch
    for rank, result in enumerate(ranks):
        # the user's own global random streams were not disturbed by the seeding
        expected_streams = [
            float(np.random.RandomState(1000 + rank).rand()),
            random.Random(1000 + rank).random(),
            float(torch.rand(1, generator=torch.Generator().manual_seed(1000 + rank))),
        ]
        assert result["streams"] == pytest.approx(expected_streams)
    disagreed = [w for r in ranks for w in r["warnings"] if "disagreed" in w]
    if scenario == "own":  # a generator of its own cannot be seeded: fixed from rank 0
        for r in ranks:  # one warning per rank, however many epochs
            assert [w for w in r["warnings"] if "disagreed" in w] == disagreed[:1]
        assert "attributes ['indices']" in disagreed[0]
        # the warning points at the user's line (the epoch loop in the support module)
        assert all(r["warned_at"] == [test_kdata_loader_support.__file__] for r in ranks)
    else:
        assert disagreed == []


@pytest.mark.slow
def test_without_agreement_ranks_disagree(ddp_results):
    """The failure the agreement prevents (agree_ranks=False: each rank shuffles alone)."""
    ranks = [result["unagreed"] for result in ddp_results]
    later = [r["epochs"][1]["indices"] for r in ranks]
    assert later[0] != later[1]
    got = [r["epochs"][1]["got"] for r in ranks]
    seen = Counter(row for share in got for batch in share for row in batch)
    assert set(seen) != set(range(DDP_ROWS)) or max(seen.values()) > 2


@pytest.mark.slow
def test_ranks_with_different_lengths_all_raise(ddp_results):
    for rank, result in enumerate(ddp_results):
        message = result.get("rank_length_error", "")
        assert "ranks disagree on len(RankLength)" in message, rank
        assert "[4, 5]" in message
