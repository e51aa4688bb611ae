"""DDP shares are DistributedSampler's, double sharding is refused, RNG seeding is local."""

from __future__ import annotations

import itertools
import logging
import random
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from _helpers_kdata import LoggedSequence
from test_kdata_loader_support import KerasShuffled
from torch.utils.data import DistributedSampler

from kdata import SequenceLoader
from kdata._order import epoch_order, shard, shard_length
from kdata._state import seeded_global_rngs

LENGTHS = [0, 1, 2, 3, 5, 7, 8, 11, 16, 33, 100]
WORLDS = [1, 2, 3, 4, 8]
SEEDS = [0, 7, 2**40 + 3]
EPOCHS = [0, 1, 5]


def sampler_indices(n, world, rank, shuffle, seed, epoch, drop_last):
    sampler = DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    return list(sampler), len(sampler)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shares_are_distributed_samplers(shuffle, drop_last):
    combos = 0
    for n, world, seed, epoch in itertools.product(LENGTHS, WORLDS, SEEDS, EPOCHS):
        if not shuffle and (seed, epoch) != (0, 0):
            continue  # the order does not depend on them
        full = epoch_order(n, shuffle, seed, epoch)
        for rank in range(world):
            expected, count = sampler_indices(n, world, rank, shuffle, seed, epoch, drop_last)
            assert shard(full, rank, world, drop_last).tolist() == expected, (n, world, rank)
            assert shard_length(n, world, drop_last) == count
            combos += 1
    assert combos >= 198  # 11 lengths x 18 rank positions (x 9 seed/epoch pairs shuffled)


def test_loader_orders_and_lengths_are_distributed_samplers(tmp_path):
    for n, world, drop_last in itertools.product([5, 11, 12], [2, 3, 4], [False, True]):
        seq = LoggedSequence(str(tmp_path / "log"), batches=n)
        for rank in range(world):
            loader = SequenceLoader(
                seq, shuffle=True, seed=11, rank=rank, world_size=world, drop_last=drop_last
            )
            for epoch in (0, 3):
                expected, count = sampler_indices(n, world, rank, True, 11, epoch, drop_last)
                assert loader.order(epoch) == expected
                assert len(loader) == count
            loader.set_epoch(3)
            assert [int(b[0]) // 1000 for b in loader] == loader.order(3)


def test_padding_sees_a_few_batches_twice_and_drop_last_none(tmp_path):
    seq = LoggedSequence(str(tmp_path / "log"), batches=10)
    shares = [SequenceLoader(seq, rank=r, world_size=4, seed=0).order() for r in range(4)]
    assert [len(s) for s in shares] == [3, 3, 3, 3]  # ceil(10 / 4) each, no rank waits
    counts = Counter(i for share in shares for i in share)
    assert counts == Counter(range(10)) + Counter([0, 1])  # padded from the start
    dropped = [
        SequenceLoader(seq, rank=r, world_size=4, drop_last=True, seed=0).order() for r in range(4)
    ]
    assert sorted(i for share in dropped for i in share) == list(range(8))
    # fewer batches than ranks: repeated until every rank has one
    tiny = LoggedSequence(str(tmp_path / "log"), batches=1)
    assert [SequenceLoader(tiny, rank=r, world_size=3, seed=0).order() for r in range(3)] == [
        [0]
    ] * 3


class Marked:
    """A stand-in for what kparallel.shard returns: one rank's share, marked."""

    __kshard__ = (1, 2)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> np.ndarray:
        return np.zeros(1)


def test_double_sharding_is_refused():
    with pytest.raises(ValueError, match=r"already sharded.*\(1, 2\).*world_size=2.*shard once"):
        SequenceLoader(Marked(), rank=0, world_size=2)
    # not sharded again here: used as it is
    assert len(list(SequenceLoader(Marked(), rank=0, world_size=1))) == 3
    assert len(list(SequenceLoader(Marked()))) == 3  # no process group: no sharding


def test_double_sharding_of_a_real_kparallel_shard_is_refused(tmp_path):
    kparallel = pytest.importorskip("kparallel")
    seq = LoggedSequence(str(tmp_path / "log"), batches=6)
    share = kparallel.shard(seq, rank=1, world_size=2)
    assert share.__kshard__ == (1, 2)
    with pytest.raises(ValueError, match="already sharded"):
        SequenceLoader(share, rank=1, world_size=2)
    loader = SequenceLoader(share, rank=0, world_size=1)
    assert [int(b[0]) // 1000 for b in loader] == [1, 3, 5]


def test_numpy_integers_are_accepted(tmp_path):
    seq = LoggedSequence(str(tmp_path / "log"), batches=7)
    loader = SequenceLoader(
        seq,
        shuffle=True,
        seed=np.int64(5),
        rank=np.int32(1),
        world_size=np.int64(3),
        num_workers=np.int8(0),
    )
    assert (loader.rank, loader.world_size, loader.seed) == (1, 3, 5)
    loader.set_epoch(np.uint16(2))
    assert loader.order() == loader.order(2) == loader.order(np.int64(2))
    with pytest.raises(TypeError, match=r"seed must be an int, got 1\.5"):
        SequenceLoader(seq, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63\), got"):
        SequenceLoader(seq, seed=2**63)
    with pytest.raises(TypeError, match="world_size must be an int, got True"):
        SequenceLoader(seq, rank=0, world_size=True)  # type: ignore[arg-type]


def test_seeding_restores_the_global_generators():
    np.random.seed(1)
    random.seed(2)
    torch.manual_seed(3)
    expected = (np.random.RandomState(1).rand(), random.Random(2).random())
    with seeded_global_rngs(99):
        inside = (np.random.rand(), random.random(), float(torch.rand(1)))
    with seeded_global_rngs(99):
        again = (np.random.rand(), random.random(), float(torch.rand(1)))
    assert inside == again  # the same seed, the same draws: what every rank gets
    assert (np.random.rand(), random.random()) == expected
    assert float(torch.rand(1)) == float(torch.rand(1, generator=torch.Generator().manual_seed(3)))


def test_explicit_ranks_with_a_seed_reshuffle_alike_without_a_group():
    """No process group (explicit rank/world_size): a shared seed is enough to agree."""
    orders = []
    for rank in range(2):
        np.random.seed(rank)  # different global states on the two "ranks"
        seq = KerasShuffled(20, 4, "numpy")
        loader = SequenceLoader(seq, seed=4, rank=rank, world_size=2)
        for _ in range(2):
            list(loader)
        orders.append(seq.indices.tolist())
    assert orders[0] == orders[1] != list(range(20))


def test_explicit_ranks_without_a_seed_warn_about_on_epoch_end():
    with pytest.warns(RuntimeWarning, match="pass seed=") as record:
        SequenceLoader(KerasShuffled(20, 4, "numpy"), rank=0, world_size=2)  # names this line
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SequenceLoader(KerasShuffled(20, 4, "numpy"), rank=0, world_size=2, seed=1)
        SequenceLoader(Marked(), rank=0, world_size=1)


def test_rank_setup_is_logged(tmp_path, caplog):
    seq = LoggedSequence(str(tmp_path / "log"), batches=5)
    with caplog.at_level(logging.DEBUG, logger="kdata"):
        SequenceLoader(seq, rank=1, world_size=2, seed=3)
    assert any(
        r.name == "kdata" and "rank 1 of 2" in r.getMessage() and r.levelno == logging.INFO
        for r in caplog.records
    )
    assert not logging.getLogger("kdata").handlers  # a library adds no handlers
