"""HDF5Matrix and HDF5Dataset on real HDF5 files: numpy indexing, normalizers, errors,
pickling, chunk caches, and reading from real DataLoader workers (fork and spawn)."""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
import torch
from _helpers_kdata import add_one, as_float64_halves
from torch.utils.data import DataLoader

import kregistry
from kdata import BatchRows, HDF5Dataset, HDF5Matrix, collate_batch

KEYS = [
    0,
    5,
    -1,
    -25,
    np.int64(3),
    slice(None),
    slice(2, 20, 3),
    slice(None, None, -1),
    slice(20, 2, -4),
    slice(3, 3),
    slice(-5, None),
    slice(100, 200),
    [4, 1, 4, 0, -1],
    [],
    np.array([[1, 2], [3, 1]]),
    np.array([7]),
    np.array([9, -2, 9, 0], dtype=np.int32),  # a shuffling sampler's key: one gather
    (slice(1, 6), 2),
    (2, slice(None, None, -1)),
    ([0, 3, 3], [2, 0, 1]),
    (Ellipsis, 1),
    (None, slice(2, 4)),
    Ellipsis,
    (),
    torch.tensor([2, 0]),
    # several advanced indices broadcast together (also when the rows come back sorted)
    ([0, 1], [0, 1]),
    (np.array([3, 9]), np.array([2, 0])),
    ([4], Ellipsis, [1]),
    ([], []),
    # boolean scalars add an axis; a 2-D mask covers rows and columns
    True,
    np.bool_(False),
    np.array(True),
    (True, 0),
    (slice(None), True),
    np.arange(90).reshape(30, 3) % 4 == 0,
    np.zeros((30, 3), dtype=bool),
    np.int32(-2),
    np.uint8(7),
]


def _key_id(key: object) -> str:
    if isinstance(key, np.ndarray) and key.size > 8:
        return f"array{key.shape}-{key.dtype}"
    return repr(key)


@pytest.mark.parametrize("dataset", ["x", "xz"])
@pytest.mark.parametrize("key", KEYS, ids=[_key_id(k) for k in KEYS])
def test_indexing_follows_numpy(matrix_file, dataset, key):
    path, x = matrix_file
    view = x[5:35]
    matrix = HDF5Matrix(path, dataset, start=5, end=35)
    expected = view[key.numpy() if isinstance(key, torch.Tensor) else key]
    got = matrix[key]
    assert np.shape(got) == np.shape(expected)
    np.testing.assert_array_equal(got, expected)


def test_boolean_masks_and_array_protocol(matrix_file):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "x", start=10)
    view = x[10:]
    mask = view[:, 0] % 2 == 0
    np.testing.assert_array_equal(matrix[mask], view[mask])
    np.testing.assert_array_equal(matrix[torch.from_numpy(mask)], view[mask])
    np.testing.assert_array_equal(np.asarray(matrix), view)
    np.testing.assert_array_equal(np.asarray(matrix, dtype=np.float64), view)
    assert (len(matrix), matrix.shape, matrix.ndim, matrix.size) == (30, (30, 3), 2, 90)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(np.stack(list(matrix)), view)
    assert np.mean(matrix) == pytest.approx(view.mean())
    with pytest.raises(IndexError, match="boolean index"):
        matrix[np.ones(3, dtype=bool)]


@pytest.mark.parametrize(
    "key", [30, -31, [0, 30], np.array([-31]), 10**12, np.int32(-31), np.uint16(30), (0, 3)]
)
def test_out_of_range_raises_index_error(matrix_file, key):
    path, _ = matrix_file
    matrix = HDF5Matrix(path, "x", start=10)
    with pytest.raises(IndexError, match="out of bounds"):
        matrix[key]


def _random_key(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple:
    parts = []
    for size in shape[: rng.integers(1, len(shape) + 1)]:
        kind = rng.integers(0, 7)
        if kind == 0:
            parts.append(int(rng.integers(-size, size)))
        elif kind == 1:
            step = int(rng.choice([-3, -1, 1, 2]))
            parts.append(slice(int(rng.integers(-size, size)), None, step))
        elif kind == 2:
            parts.append([int(i) for i in rng.integers(-size, size, rng.integers(0, 4))])
        elif kind == 3:
            parts.append(rng.integers(0, size, (2, 2)))
        elif kind == 4:
            parts.append(rng.random(size) < 0.5)
        elif kind == 5:
            parts.append(np.int64(rng.integers(0, size)))
        else:
            parts.append(slice(None))
    if rng.random() < 0.2:
        parts.insert(int(rng.integers(0, len(parts) + 1)), None)
    return tuple(parts)


def test_random_keys_agree_with_numpy(make_h5):
    # numpy decides every result (values, shape, dtype) and every IndexError
    data = np.arange(12 * 5 * 4, dtype=np.int32).reshape(12, 5, 4)
    path = make_h5(x=data, chunks={"x": {"chunks": (3, 5, 4), "compression": "gzip"}})
    matrix = HDF5Matrix(path, "x", start=2, end=11)
    view = data[2:11]
    rng = np.random.default_rng(0)
    for _ in range(400):
        key = _random_key(rng, view.shape)
        try:
            expected = view[key]
        except IndexError:
            with pytest.raises(IndexError):
                matrix[key]
            continue
        got = matrix[key]
        assert np.shape(got) == expected.shape, key
        assert np.asarray(got).dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=repr(key))


@pytest.mark.parametrize(
    "key", [np.ones(29, dtype=bool), np.ones(31, dtype=bool), np.ones((29, 3), dtype=bool)]
)
def test_mask_of_the_wrong_length_raises_index_error(matrix_file, key):
    path, x = matrix_file
    with pytest.raises(IndexError):
        x[10:][key]  # numpy refuses it too
    with pytest.raises(IndexError, match="boolean index"):
        HDF5Matrix(path, "x", start=10)[key]


@pytest.mark.parametrize("key", [1.5, "a", np.array([0.5]), {1}, [1.0]])
def test_bad_key_types_raise_index_error(matrix_file, key):
    path, _ = matrix_file
    with pytest.raises(IndexError, match=r"valid indices|not supported"):
        HDF5Matrix(path, "x")[key]


def test_negative_index_is_relative_to_the_view(matrix_file):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "x", start=4, end=9)
    np.testing.assert_array_equal(matrix[-1], x[8])
    np.testing.assert_array_equal(matrix[-5], x[4])
    np.testing.assert_array_equal(matrix[::2], x[4:9:2])
    assert len(matrix[2:]) == 3


def test_normalizer_callable_and_name(matrix_file):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "x", normalizer=add_one)
    np.testing.assert_array_equal(matrix[3], x[3] + 1)
    np.testing.assert_array_equal(matrix[[5, 1]], x[[5, 1]] + 1)
    halves = HDF5Matrix(path, "xz", start=2, normalizer=as_float64_halves)
    assert halves.shape == (38, 2) and halves.dtype == np.float64
    empty = halves[[]]
    assert empty.shape == (0, 2) and empty.dtype == np.float64
    np.testing.assert_array_equal(halves[1:4], x[3:6, :2] / 2)
    # a name: a scope's object, then kdata's built-ins ("normalize")
    with kregistry.custom_object_scope({"plus_one": add_one}):
        named = HDF5Matrix(path, "x", normalizer="plus_one")
    np.testing.assert_array_equal(named[0], x[0] + 1)
    unit = HDF5Matrix(path, "x", start=1, normalizer="normalize")
    np.testing.assert_allclose(np.linalg.norm(unit[:5], axis=-1), 1.0, rtol=1e-6)
    with pytest.raises(kregistry.UnknownObjectError, match="normalise"):
        HDF5Matrix(path, "x", normalizer="normalise")


def test_normalizer_that_drops_rows_is_refused(matrix_file):
    path, _ = matrix_file
    with pytest.raises(ValueError, match="number of rows"):
        HDF5Matrix(path, "x", normalizer=lambda block: block[:0])


def test_bad_construction_errors(matrix_file, make_h5, tmp_path):
    path, _ = matrix_file
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        HDF5Matrix(missing, "x")
    with pytest.raises(KeyError, match=r"'w'.*x, xz, y"):
        HDF5Matrix(path, "w")
    with pytest.raises(ValueError, match="start=10 > end=5"):
        HDF5Matrix(path, "x", start=10, end=5)
    with pytest.raises(ValueError, match="end=41"):
        HDF5Matrix(path, "x", end=41)
    with pytest.raises(ValueError, match="start must be >= 0"):
        HDF5Matrix(path, "x", start=-1)
    with pytest.raises(TypeError, match="start"):
        HDF5Matrix(path, "x", start=1.5)
    scalar = make_h5(s=np.float64(3.0))
    with pytest.raises(ValueError, match="scalar"):
        HDF5Matrix(scalar, "s")
    not_h5 = tmp_path / "text.h5"
    not_h5.write_text("hello")
    with pytest.raises(OSError, match=r"text\.h5"):
        HDF5Matrix(str(not_h5), "x")
    with h5py.File(path, "a") as file:
        file.create_group("grp")
    with pytest.raises(KeyError, match="group"):
        HDF5Matrix(path, "grp")


def test_file_is_opened_read_only_and_never_changed(matrix_file):
    path, x = matrix_file
    with open(path, "rb") as file:
        before = os.stat(path).st_mtime_ns, file.read()
    matrix = HDF5Matrix(path, "xz", normalizer=add_one)
    matrix[:]
    matrix[[3, 1]]
    assert matrix.data.file.mode == "r"
    matrix.close()
    with open(path, "rb") as file:
        assert (os.stat(path).st_mtime_ns, file.read()) == before
    with pytest.raises(TypeError):
        matrix[0] = 1  # no __setitem__: a read-only view
    np.testing.assert_array_equal(matrix[0], x[0] + 1)  # re-opens after close


def test_pickles_without_a_handle(matrix_file):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "xz", start=3, normalizer=add_one)
    matrix[0]  # opens the file in this process
    state = pickle.dumps(matrix)
    assert b"h5py" not in state  # no handle travels, only the path
    copy = pickle.loads(state)
    assert copy._reader._src is None
    np.testing.assert_array_equal(copy[[2, 0]], x[[5, 3]] + 1)
    with pytest.raises(TypeError, match=r"normalizer.*pickled"):
        pickle.dumps(HDF5Matrix(path, "x", normalizer=lambda block: block))


def test_getitems_reads_one_sorted_batch_and_reorders(matrix_file):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "xz", start=1)
    rows = matrix.__getitems__([9, 2, 2, 30, 0])
    assert isinstance(rows, BatchRows) and len(rows) == 5
    np.testing.assert_array_equal(rows.batch, x[[10, 3, 3, 31, 1]])
    np.testing.assert_array_equal(np.stack(rows), rows.batch)
    with pytest.raises(IndexError):
        matrix.__getitems__([39])


def test_memory_map_is_used_for_contiguous_data_and_gives_copies(matrix_file):
    path, x = matrix_file
    mapped = HDF5Matrix(path, "x")
    plain = HDF5Matrix(path, "x", memory_map=False)
    assert mapped._reader.use_mmap and not plain._reader.use_mmap
    assert not HDF5Matrix(path, "xz")._reader.use_mmap  # compressed: through HDF5
    block = mapped[2:6]
    assert block.flags.writeable
    assert not isinstance(block, np.memmap)
    block[:] = -1  # a copy: the file's data is untouched
    np.testing.assert_array_equal(mapped[2:6], x[2:6])
    np.testing.assert_array_equal(plain[[3, 1, 20]], mapped[[3, 1, 20]])


def test_chunk_cache_is_sized_for_large_compressed_chunks(make_h5):
    # compressible data (fast to write); one chunk is 16384 x 256 x 4 B = 16 MiB, twice
    # h5py's default cache: with that cache every batch would decompress it again
    data = np.arange(32768, dtype=np.float32)[:, None] + np.arange(256, dtype=np.float32)
    path = make_h5(
        x=data, chunks={"x": {"chunks": (16384, 256), "compression": "gzip", "compression_opts": 1}}
    )
    matrix = HDF5Matrix(path, "x")
    matrix[0]
    nslots, nbytes, _ = matrix.data.id.get_access_plist().get_chunk_cache()
    assert nbytes >= 2 * 16 * 1024**2  # a batch may span two chunks: both fit
    assert nslots >= 521 and all(nslots % p for p in range(2, int(nslots**0.5) + 1))
    np.testing.assert_array_equal(matrix[1000:3000:7], data[1000:3000:7])
    matrix.close()  # HDF5 shares an open dataset (and its cache) within a process
    small = HDF5Matrix(path, "x", chunk_cache_bytes=1024**2)
    small[0]
    assert small.data.id.get_access_plist().get_chunk_cache()[1] == 1024**2
    with pytest.raises(ValueError, match="chunk_cache_bytes"):
        HDF5Matrix(path, "x", chunk_cache_bytes=-1)


def test_hdf5_dataset_reads_x_and_y_together(matrix_file, make_h5):
    path, x = matrix_file
    y = np.arange(40) % 4
    pair = HDF5Dataset(path, ["xz", "y"], start=2, end=30, normalizers={"xz": add_one})
    assert len(pair) == 28
    xs, ys = pair[[5, 0, 5]]
    np.testing.assert_array_equal(xs, x[[7, 2, 7]] + 1)
    np.testing.assert_array_equal(ys, y[[7, 2, 7]])
    x0, y0 = pair[-1]
    np.testing.assert_array_equal(x0, x[29] + 1)
    assert y0 == y[29]
    named = HDF5Dataset(path, {"image": "x", "label": "y"}, normalizers={"image": "normalize"})
    sample = named[3:1:-1]
    assert set(sample) == {"image", "label"}
    expected = x[3:1:-1] / np.linalg.norm(x[3:1:-1], axis=-1, keepdims=True)
    np.testing.assert_allclose(sample["image"], expected, rtol=1e-6)
    rows = named.__getitems__([4, 1])
    assert rows[0]["label"] == 0 and rows[1]["label"] == 1
    assert rows.batch["image"].shape == (2, 3)
    # one handle per file and process
    assert named.matrices[0]._reader.dataset().file == named.matrices[1]._reader.dataset().file
    copy = pickle.loads(pickle.dumps(pair))
    np.testing.assert_array_equal(copy[3][0], x[5] + 1)
    uneven = make_h5(x=np.zeros((4, 2)), short=np.zeros(3))
    with pytest.raises(ValueError, match="same number of rows"):
        HDF5Dataset(uneven, ["x", "short"])
    with pytest.raises(TypeError, match="list of names"):
        HDF5Dataset(path, "x")
    with pytest.raises(KeyError, match="'z'"):
        HDF5Dataset(path, ["x"], normalizers={"z": add_one})
    with pytest.raises(IndexError, match="row key"):
        pair[1, 2]
    with pytest.raises(IndexError, match="one-dimensional row mask"):
        pair[np.ones((28, 3), dtype=bool)]


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_dataloader_workers_read_every_row_once(matrix_file, context):
    path, x = matrix_file
    matrix = HDF5Matrix(path, "xz", normalizer=add_one)
    matrix[0]  # the parent holds an open handle: workers must open their own
    loader = DataLoader(
        matrix,
        batch_size=6,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=context,
        collate_fn=collate_batch,
        generator=torch.Generator().manual_seed(0),
    )
    batches = list(loader)
    got = torch.cat(batches).numpy()
    assert got.shape == (40, 3)
    np.testing.assert_array_equal(np.sort(got[:, 0]), np.sort(x[:, 0] + 1))
    pair = HDF5Dataset(path, ["x", "y"])
    out = list(DataLoader(pair, batch_size=16, num_workers=2, multiprocessing_context="fork"))
    np.testing.assert_array_equal(torch.cat([b[0] for b in out]).numpy(), x)
    np.testing.assert_array_equal(torch.cat([b[1] for b in out]).numpy(), np.arange(40) % 4)


def test_dataset_plus_dataset_still_concatenates(matrix_file):
    path, _ = matrix_file
    matrix = HDF5Matrix(path, "x")
    assert len(matrix + matrix) == 80
    with pytest.raises(TypeError):
        matrix + 1
