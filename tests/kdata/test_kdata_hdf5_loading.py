"""The DataLoader people write first: default sampler and collate over HDF5Matrix and
HDF5Dataset (one read and one tensor per batch), Keras's x/y pairs, copies, the chunk-aware
shuffle, the built-in "normalize" and numpy integers."""

from __future__ import annotations

import time
import warnings

import h5py
import numpy as np
import pytest
import torch
from _helpers_kdata import add_one
from torch.utils.data import DataLoader, default_collate
from torch.utils.data._utils.collate import default_collate_fn_map

import kregistry
from kdata import BatchRows, HDF5Dataset, HDF5Matrix, SliceBatchSampler, batch_loader
from kdata._batches import chunk_order

CONTEXTS = ["fork", pytest.param("spawn", marks=pytest.mark.slow)]


@pytest.fixture
def xy_files(make_h5):
    """x in one file (contiguous) and a gzip copy; y in another file, offset by 5 rows."""
    x = np.arange(300, dtype=np.float32).reshape(100, 3)
    y = np.arange(105, dtype=np.int64) - 5  # y[i + 5] == i
    px = make_h5(x=x, xz=x, chunks={"xz": {"chunks": (8, 3), "compression": "gzip"}})
    py = make_h5(y=y)
    return px, py, x


def test_default_collate_takes_the_whole_block_at_once(xy_files):
    px, _, x = xy_files
    matrix = HDF5Matrix(px, "x")
    rows = matrix.__getitems__([7, 3, 3, 50])
    assert isinstance(rows, BatchRows) and len(rows) == 4
    batch = default_collate(rows)
    assert torch.equal(batch, torch.from_numpy(x[[7, 3, 3, 50]]))
    # one tensor over the block read, no per-row stacking
    assert np.shares_memory(batch.numpy(), rows.batch)
    assert type(rows[0]) in default_collate_fn_map  # kdata's row type, nobody else's
    # a plain list of rows still goes row by row, as before
    assert torch.equal(default_collate(list(rows)), batch)


@pytest.mark.parametrize("dataset", ["x", "xz"])
@pytest.mark.parametrize("workers", [0, 2])
def test_plain_dataloader_default_collate(xy_files, dataset, workers):
    px, _, x = xy_files
    matrix = HDF5Matrix(px, dataset, start=4, end=94)
    extra = {"multiprocessing_context": "fork"} if workers else {}
    plain = list(DataLoader(matrix, batch_size=16, num_workers=workers, **extra))
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.float32 for b in plain)
    np.testing.assert_array_equal(torch.cat(plain).numpy(), x[4:94])
    shuffled = DataLoader(
        matrix,
        batch_size=16,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(1),
        **extra,
    )
    got = torch.cat(list(shuffled)).numpy()
    assert sorted(got[:, 0].tolist()) == x[4:94, 0].tolist()
    assert got[:, 0].tolist() != x[4:94, 0].tolist()
    np.testing.assert_array_equal(got[:, 1], got[:, 0] + 1)  # rows kept whole


@pytest.mark.parametrize("context", CONTEXTS)
def test_default_collate_in_workers_fork_and_spawn(xy_files, context):
    px, py, x = xy_files
    pairs = HDF5Dataset.from_matrices(HDF5Matrix(px, "xz"), HDF5Matrix(py, "y", start=5))
    loader = DataLoader(
        pairs, batch_size=12, shuffle=True, num_workers=2, multiprocessing_context=context
    )
    batches = list(loader)
    assert all(isinstance(b, list) and len(b) == 2 for b in batches)  # as torch gives tuples
    xs = torch.cat([b[0] for b in batches]).numpy()
    ys = torch.cat([b[1] for b in batches]).numpy()
    np.testing.assert_array_equal(xs, x[ys])
    assert sorted(ys.tolist()) == list(range(100))


def test_a_users_collate_fn_gets_the_rows(xy_files):
    px, py, x = xy_files
    seen = []

    def mine(rows):
        seen.append((len(rows), type(rows[0])))
        return torch.stack([torch.as_tensor(row) * 2 for row in rows])

    out = next(iter(DataLoader(HDF5Matrix(px, "x"), batch_size=5, collate_fn=mine)))
    assert torch.equal(out, torch.from_numpy(x[:5] * 2))
    assert seen[0][0] == 5 and issubclass(seen[0][1], np.ndarray)

    def unzip(samples):
        xs, ys = zip(*samples, strict=True)
        return np.stack(xs), [int(label) for label in ys]

    pairs = HDF5Dataset.from_matrices(HDF5Matrix(px, "x"), HDF5Matrix(py, "y", start=5))
    xs, ys = next(iter(DataLoader(pairs, batch_size=4, collate_fn=unzip)))
    assert ys == [0, 1, 2, 3]
    np.testing.assert_array_equal(xs, x[:4])
    rows = HDF5Matrix(py, "y").__getitems__([0, 9])
    assert [int(label) for label in rows] == [-5, 4]
    assert default_collate(rows).tolist() == [-5, 4]


def test_dict_samples_and_normalizers_through_the_default_collate(xy_files):
    px, _, x = xy_files
    named = HDF5Dataset(px, {"image": "x", "copy": "xz"}, normalizers={"image": add_one})
    batch = next(iter(DataLoader(named, batch_size=6)))
    assert type(batch) is dict and sorted(batch) == ["copy", "image"]
    np.testing.assert_array_equal(batch["image"].numpy(), x[:6] + 1)
    np.testing.assert_array_equal(batch["copy"].numpy(), x[:6])
    rows = named.__getitems__([2])
    assert dict(rows[0]).keys() == {"image", "copy"}


def test_keras_pairs_feed_batch_loader_and_dataloader(xy_files, make_h5):
    px, py, x = xy_files
    xm, ym = HDF5Matrix(px, "xz", start=10), HDF5Matrix(py, "y", start=15)
    for shuffle in (False, True, "batch", "chunks"):
        got = list(batch_loader((xm, ym), 16, shuffle=shuffle, seed=0))
        xs = torch.cat([b[0] for b in got]).numpy()
        ys = torch.cat([b[1] for b in got]).numpy()
        np.testing.assert_array_equal(xs, x[ys], err_msg=str(shuffle))
        assert sorted(ys.tolist()) == list(range(10, 100))
    named = next(iter(batch_loader({"x": xm, "y": ym}, 4)))
    assert named["y"].tolist() == [10, 11, 12, 13]
    pairs = HDF5Dataset.from_matrices(image=xm, label=ym)
    assert len(pairs) == 90 and pairs[0]["label"] == 10
    with pytest.raises(ValueError, match=r"same number of rows.*90.*95"):
        HDF5Dataset.from_matrices(xm, HDF5Matrix(py, "y", start=10))
    with pytest.raises(ValueError, match="same number of rows"):
        batch_loader((xm, HDF5Matrix(py, "y")), 8)
    with pytest.raises(TypeError, match="HDF5Matrix"):
        HDF5Dataset.from_matrices(xm, np.zeros(90))
    with pytest.raises(TypeError, match="not both"):
        HDF5Dataset.from_matrices(xm, y=ym)
    # a list is a list of samples, as before (only a tuple or a dict pairs arrays)
    samples = [np.full(3, i) for i in range(5)]
    assert [len(b) for b in batch_loader(samples, 2)] == [2, 2, 1]
    # numpy and HDF5 members mixed, and numpy pairs
    mixed = next(iter(batch_loader((xm, np.arange(90)), 5)))
    assert mixed[1].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(mixed[0].numpy(), x[10:15])


def test_batches_never_alias_the_users_arrays():
    x = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    batch = next(iter(batch_loader(x, 4)))
    batch += 100
    assert x[0, 0] == 0.0
    xb, yb = next(iter(batch_loader((x, y), 4)))
    xb += 100
    yb += 100
    assert x[0, 0] == 0.0 and y[0] == 0
    t = torch.arange(10)
    tb = next(iter(batch_loader(t, 4)))
    tb += 100
    assert t[0] == 0
    zero_copy = next(iter(batch_loader(x, 4, copy=False)))
    assert np.shares_memory(zero_copy.numpy(), x)


def test_chunk_order_keeps_each_window_within_its_chunks():
    # chunks of 10 file rows; the view starts at file row 25 (first chunk: 5 rows)
    order = chunk_order(103, 10, 25 % 10, 2, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(103))
    assert order.tolist() != list(range(103))
    chunk_of = (order + 5) // 10  # file chunk of each view row
    # walk the order: each run of rows comes from two chunks, drawn whole, then the next
    used: set[int] = set()
    position = 0
    while position < len(order):
        window = set()
        while position < len(order) and (len(window) < 2 or chunk_of[position] in window):
            window.add(int(chunk_of[position]))
            position += 1
        assert not window & used  # a chunk is read in one window only
        used |= window
    assert used == set(range(11))
    assert chunk_order(103, 10, 5, 2, 3, 0).tolist() == order.tolist()  # seeded
    assert chunk_order(103, 10, 5, 2, 3, 1).tolist() != order.tolist()


def test_chunk_shuffle_in_the_sampler(xy_files):
    px, _, x = xy_files
    matrix = HDF5Matrix(px, "xz", start=4)
    sampler = SliceBatchSampler(matrix, 10, shuffle="chunks", seed=0)
    assert (sampler.chunk_rows, sampler.chunk_offset) == (8, 4)
    keys = list(sampler)
    assert sorted(np.concatenate(keys).tolist()) == list(range(96))
    with pytest.raises(ValueError, match="chunk_rows"):
        SliceBatchSampler(HDF5Matrix(px, "x"), 10, shuffle="chunks")
    numpy_rows = list(SliceBatchSampler(50, 10, shuffle="chunks", chunk_rows=np.int64(5)))
    assert sorted(np.concatenate(numpy_rows).tolist()) == list(range(50))
    got = torch.cat(list(batch_loader(matrix, 10, shuffle="chunks", seed=1, num_workers=0)))
    np.testing.assert_array_equal(np.sort(got.numpy()[:, 0]), x[4:, 0])


@pytest.mark.slow
def test_chunk_shuffle_keeps_most_of_the_sequential_speed(make_h5):
    rows, cols, chunk = 60_000, 64, 4096
    data = np.random.default_rng(0).integers(0, 100, (rows, cols)).astype(np.float32)
    path = make_h5(x=data, chunks={"x": {"chunks": (chunk, cols), "compression": "gzip"}})
    matrix = HDF5Matrix(path, "x")

    def epoch(shuffle: object) -> float:
        start = time.perf_counter()
        total = sum(len(b) for b in batch_loader(matrix, 256, shuffle=shuffle, seed=0))
        assert total == rows
        return time.perf_counter() - start

    epoch(False)
    sequential = min(epoch(False) for _ in range(3))
    chunks = min(epoch("chunks") for _ in range(3))
    assert sequential / chunks >= 0.25, (sequential, chunks)  # measured ~0.6-0.9


def test_random_rows_of_compressed_chunks_warn_once(make_h5):
    data = np.zeros((64, 4), dtype=np.float32)
    path = make_h5(x=data, chunks={"x": {"chunks": (8, 4), "compression": "gzip"}})
    # a cache too small for the chunks: random rows decompress them again and again
    matrix = HDF5Matrix(path, "x", chunk_cache_bytes=0)
    with pytest.warns(UserWarning, match="shuffle='chunks'") as caught:
        batch_loader(matrix, 8, shuffle=True)
    assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch_loader(matrix, 8, shuffle=True)  # once
        batch_loader(matrix, 8, shuffle="chunks")
        batch_loader(HDF5Matrix(path, "x"), 8, shuffle=True)  # the chunks fit the cache
    fourth = make_h5(x=data, chunks={"x": {"chunks": (8, 4), "compression": "gzip"}})
    with pytest.warns(UserWarning, match="shuffle='chunks'") as caught:
        SliceBatchSampler(HDF5Matrix(fourth, "x", chunk_cache_bytes=0), 8, shuffle=True)
    assert len(caught) == 1 and caught[0].filename == __file__
    other = make_h5(x=data, chunks={"x": {"chunks": (8, 4), "compression": "gzip"}})
    with pytest.warns(UserWarning, match="shuffle=True") as caught:
        list(DataLoader(HDF5Matrix(other, "x", chunk_cache_bytes=0), batch_size=8, shuffle=True))
    assert len(caught) == 1
    third = make_h5(
        x=data, y=np.arange(64), chunks={"x": {"chunks": (8, 4), "compression": "gzip"}}
    )
    pairs = HDF5Dataset(third, ["x", "y"], chunk_cache_bytes=0)
    with pytest.warns(UserWarning, match="'x'") as caught:
        list(DataLoader(pairs, batch_size=8, shuffle=True))
    assert len(caught) == 1


def test_builtin_normalize_survives_clearing_the_custom_objects(xy_files):
    px, _, x = xy_files
    kregistry.get_custom_objects().clear()
    assert not any("normalize" in name for name in kregistry.get_custom_objects())
    unit = HDF5Matrix(px, "x", start=1, normalizer="normalize")
    np.testing.assert_allclose(np.linalg.norm(unit[:4], axis=-1), 1.0, rtol=1e-6)
    # a user's object of the same name wins
    with kregistry.custom_object_scope({"normalize": add_one}):
        mine = HDF5Matrix(px, "x", normalizer="normalize")
    np.testing.assert_array_equal(mine[0], x[0] + 1)


def test_numpy_integers_are_accepted_everywhere(xy_files):
    px, _, x = xy_files
    matrix = HDF5Matrix(
        px, "xz", start=np.int64(2), end=np.int32(50), chunk_cache_bytes=np.int64(2**20)
    )
    assert len(matrix) == 48 and matrix._reader.cache_bytes == 2**20
    np.testing.assert_array_equal(matrix[np.int16(3)], x[5])
    sampler = SliceBatchSampler(np.int64(48), np.int32(10), seed=np.int64(1), shuffle="batch")
    sampler.set_epoch(np.int64(2))
    assert len(sampler) == 5 and sampler.epoch == 2
    loader = batch_loader(
        matrix,
        np.int64(16),
        seed=np.uint8(3),
        shuffle=True,
        rank=np.int64(0),
        world_size=np.int64(1),
    )
    assert sum(len(b) for b in loader) == 48
    pairs = HDF5Dataset(px, ["x", "xz"], start=np.int64(1), end=np.int64(9))
    assert len(pairs) == 8


def test_h5py_opened_read_only_with_its_fast_reader(xy_files):
    px, _, _ = xy_files
    matrix = HDF5Matrix(px, "xz")
    dataset = matrix.data
    assert isinstance(dataset, h5py.Dataset)
    assert dataset.file.mode == "r" and dataset._readonly
    assert matrix._reader._fast is not None  # ints and slices take h5py's compiled reader
