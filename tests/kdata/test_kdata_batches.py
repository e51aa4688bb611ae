"""SliceBatchSampler, batch_loader and collate_batch over real HDF5 files and workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers_kdata import add_one, triple
from torch.utils.data import DataLoader, DistributedSampler

import kregistry
from kdata import (
    HDF5Dataset,
    HDF5Matrix,
    SliceBatchSampler,
    batch_loader,
    collate_batch,
    to_tensors,
)


def test_sequential_batches_are_slices():
    sampler = SliceBatchSampler(10, 4)
    assert list(sampler) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert len(sampler) == 3
    dropped = SliceBatchSampler(10, 4, drop_last=True)
    assert list(dropped) == [slice(0, 4), slice(4, 8)] and len(dropped) == 2
    assert list(SliceBatchSampler(0, 4)) == []


def test_batch_shuffle_moves_whole_batches_and_is_seeded():
    sampler = SliceBatchSampler(103, 10, shuffle="batch", seed=5)
    first, second = list(sampler), list(sampler)  # each iter() is a new epoch
    assert first != second
    for epoch in (first, second):
        assert sorted(key.start for key in epoch) == list(range(0, 103, 10))
        assert all(key.stop - key.start == min(10, 103 - key.start) for key in epoch)
    again = SliceBatchSampler(103, 10, shuffle="batch", seed=5)
    assert list(again) == first
    again.set_epoch(1)
    assert list(again) == second


def test_true_shuffle_gives_index_arrays_covering_every_row():
    sampler = SliceBatchSampler(50, 8, shuffle=True, seed=1)
    keys = list(sampler)
    assert all(isinstance(k, np.ndarray) for k in keys)
    rows = np.concatenate(keys)
    assert sorted(rows.tolist()) == list(range(50))
    assert rows.tolist() != list(range(50))


def test_sharded_sampler_splits_batches_as_distributed_sampler():
    # 13 batches over 3 ranks: DistributedSampler pads to 15 (two batches seen twice)
    shares = [
        list(SliceBatchSampler(100, 8, shuffle="batch", seed=2, rank=r, world_size=3))
        for r in range(3)
    ]
    assert [len(share) for share in shares] == [5, 5, 5]
    starts = sorted({key.start for share in shares for key in share})
    assert starts == list(range(0, 100, 8))
    for r, share in enumerate(shares):
        # the same batch order as torch's sampler over the 13 batch numbers
        reference = DistributedSampler(range(13), num_replicas=3, rank=r, shuffle=True, seed=2)
        assert [key.start // 8 for key in share] == list(reference)
        assert len(SliceBatchSampler(100, 8, rank=r, world_size=3)) == len(share)
    even = [len(SliceBatchSampler(100, 8, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    assert even == [4, 4, 4]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        SliceBatchSampler(10, 0)
    with pytest.raises(TypeError, match="batch_size"):
        SliceBatchSampler(10, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shuffle"):
        SliceBatchSampler(10, 2, shuffle="rows")
    with pytest.raises(ValueError, match="shuffle"):
        SliceBatchSampler(10, 2, shuffle=1)
    with pytest.raises(ValueError, match="length"):
        SliceBatchSampler(-1, 2)
    with pytest.raises(TypeError, match="length"):
        SliceBatchSampler("10", 2)
    with pytest.raises(TypeError, match="sets"):
        batch_loader(np.zeros(3), 2, sampler=None)


@pytest.mark.parametrize(
    ("shuffle", "context"),
    [
        (False, "fork"),
        ("batch", "fork"),
        (True, "fork"),
        pytest.param(True, "spawn", marks=pytest.mark.slow),
    ],
)
def test_batch_loader_over_hdf5_with_workers(matrix_file, shuffle, context):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "xz", normalizer=add_one)
    loader = batch_loader(
        matrix, 6, shuffle=shuffle, seed=0, num_workers=2, multiprocessing_context=context
    )
    batches = list(loader)
    assert all(isinstance(b, torch.Tensor) for b in batches)
    assert [len(b) for b in batches if len(b) != 6] == [4]
    rows = torch.cat(batches).numpy()
    np.testing.assert_array_equal(np.sort(rows[:, 0]), x[:, 0] + 1)
    if shuffle is False:
        np.testing.assert_array_equal(rows, x + 1)


def test_batch_loader_over_x_and_y_and_tensors(matrix_file):
    path, _ = matrix_file
    pairs = list(batch_loader(HDF5Dataset(path, ["x", "y"]), 16, shuffle=True, seed=3))
    xs = torch.cat([p[0] for p in pairs]).numpy()
    ys = torch.cat([p[1] for p in pairs]).numpy()
    np.testing.assert_array_equal(ys, (xs[:, 0] // 3).astype(np.int64) % 4)  # rows kept whole
    tensors = list(batch_loader(torch.arange(10), 4))
    assert [t.tolist() for t in tensors] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_batch_loader_carries_the_registry_scope(make_h5):
    path = make_h5(x=np.arange(12.0).reshape(6, 2))
    with kregistry.custom_object_scope({"times3": triple}):
        matrix = HDF5Matrix(path, "x", normalizer="times3")
        loader = batch_loader(matrix, 4, num_workers=2, multiprocessing_context="fork")
    assert torch.cat(list(loader)).tolist() == (np.arange(12.0).reshape(6, 2) * 3).tolist()


def test_collate_batch_stacks_once_and_falls_back_to_default(matrix_file):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "x")
    batch = collate_batch(matrix.__getitems__([3, 1]))
    np.testing.assert_array_equal(batch.numpy(), x[[3, 1]])
    assert collate_batch([np.ones(2), np.zeros(2)]).shape == (2, 2)
    # with torch's default collate the result is the same (row by row)
    default = next(iter(DataLoader(matrix, batch_size=5)))
    fast = next(iter(DataLoader(matrix, batch_size=5, collate_fn=collate_batch)))
    assert torch.equal(default, fast)


def test_to_tensors_handles_odd_arrays():
    reversed_view = np.arange(6)[::-1]
    assert to_tensors(reversed_view).tolist() == [5, 4, 3, 2, 1, 0]
    big_endian = np.arange(3, dtype=">i4")
    assert to_tensors(big_endian).tolist() == [0, 1, 2]
    read_only = np.arange(3)
    read_only.flags.writeable = False
    assert to_tensors(read_only).tolist() == [0, 1, 2]
    strings = np.array(["a", "b"])
    assert to_tensors(strings) is strings
    assert to_tensors([np.float32(1.5), "s", None])[0].item() == 1.5


def test_batch_loader_without_workers_matches_a_plain_dataloader(matrix_file):
    path, _ = matrix_file
    matrix = HDF5Matrix(path, "x")
    torch.manual_seed(0)
    ours = list(batch_loader(matrix, 6, shuffle=True, seed=4))
    after_ours = torch.rand(1)
    torch.manual_seed(0)
    sampler = SliceBatchSampler(matrix, 6, shuffle=True, seed=4)
    plain = list(DataLoader(matrix, sampler=sampler, batch_size=None, collate_fn=to_tensors))
    after_plain = torch.rand(1)
    assert len(ours) == len(plain) == 7
    assert all(torch.equal(a, b) for a, b in zip(ours, plain, strict=True))
    assert torch.equal(after_ours, after_plain)  # torch's global RNG advanced alike
    loader = batch_loader(matrix, 6, shuffle="batch", seed=1)
    assert isinstance(loader, DataLoader) and len(loader) == 7
    first, second = [b[:, 0].tolist() for b in loader], [b[:, 0].tolist() for b in loader]
    assert first != second  # each iteration is a new epoch
