"""Files that change under a running job: truncated in place, rewritten in place, replaced
by another file. Never a crash by signal, never stale offsets: the new file read right, or
a FileChangedError naming the file (through real DataLoader workers too)."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import kdata
from kdata import FileChangedError, HDF5Matrix, _h5file


def _write(path: Path, x: np.ndarray, *, pad: int = 0, rows_y: int = 0) -> None:
    """A file with dataset "x" (contiguous); ``pad`` bytes of another dataset written
    first move x's offset, as a regenerated file would."""
    with h5py.File(path, "w") as file:
        if pad:
            file.create_dataset("a_pad", data=np.zeros(pad, dtype=np.uint8))
        file.create_dataset("x", data=x)
        if rows_y:
            file.create_dataset("y", data=np.arange(rows_y))


@pytest.fixture
def recheck_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the path's identity at every read (the default is every 0.2 s)."""
    monkeypatch.setattr(_h5file, "RECHECK_SECONDS", 0.0)


def test_file_changed_error_rebuilds_from_one_message_and_pickles():
    error = FileChangedError("datapath 'a.h5' was truncated", path="a.h5")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is FileChangedError
    assert (str(again), again.path) == ("datapath 'a.h5' was truncated", "a.h5")
    assert isinstance(error, OSError)
    rebuilt = FileChangedError("one message")  # what torch does with a worker's error
    assert str(rebuilt) == "one message" and rebuilt.path is None


TRUNCATE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from kdata import FileChangedError, HDF5Matrix

    path, memory_map = sys.argv[1], sys.argv[2] == "1"
    matrix = HDF5Matrix(path, "x", memory_map=memory_map)
    assert matrix._reader.use_mmap == memory_map
    first = matrix[len(matrix) - 1].copy()
    size = __import__("os").path.getsize(path)
    with open(path, "r+b") as file:  # what `cp` over the file does first
        file.truncate(size // 2)
    for key in (len(matrix) - 1, slice(-64, None), [0, len(matrix) - 1]):
        try:
            matrix[key]
        except FileChangedError as error:
            assert path in str(error), error
            print("raised", type(error).__name__)
        else:
            print("no error")
    """
)


@pytest.mark.parametrize("memory_map", [True, False])
def test_truncated_in_place_raises_instead_of_dying_by_signal(tmp_path, memory_map):
    path = tmp_path / "big.h5"
    _write(path, np.arange(64 * 4096, dtype=np.float32).reshape(-1, 64))
    script = tmp_path / "truncate.py"
    script.write_text(TRUNCATE_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(path), "1" if memory_map else "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # a SIGBUS would show as a negative return code
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split("\n")[:3] == ["raised FileChangedError"] * 3, done.stdout


def test_error_keeps_its_type_through_a_real_worker(tmp_path):
    path = tmp_path / "data.h5"
    x = np.arange(4096, dtype=np.float64).reshape(-1, 8)
    _write(path, x)
    matrix = HDF5Matrix(str(path), "x")
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 3)
    loader = DataLoader(matrix, batch_size=16, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(FileChangedError, match=r"data\.h5"):
        list(loader)


@pytest.mark.parametrize("how", ["replace", "rewrite"])
@pytest.mark.parametrize("memory_map", [True, False])
def test_file_replaced_between_epochs_is_read_anew_in_workers(tmp_path, memory_map, how):
    path = tmp_path / "data.h5"
    old = np.arange(400, dtype=np.float32).reshape(100, 4)
    _write(path, old)
    matrix = HDF5Matrix(str(path), "x", start=10, memory_map=memory_map)
    matrix[0]  # the parent holds it open (a memory map at the old offset)
    loader = DataLoader(matrix, batch_size=30, num_workers=1, multiprocessing_context="fork")
    np.testing.assert_array_equal(torch.cat(list(loader)).numpy(), old[10:])
    # a regenerated file: new inode, same dataset name, x at another offset
    new = old * -1 - 7
    fresh = tmp_path / "fresh.h5"
    _write(fresh, new, pad=10_000)
    if how == "replace":
        os.replace(fresh, path)
    else:  # cp over it: same inode, which the forked worker inherits open
        shutil.copyfile(fresh, path)
    np.testing.assert_array_equal(torch.cat(list(loader)).numpy(), new[10:])


@pytest.mark.parametrize("memory_map", [True, False])
def test_file_replaced_in_a_running_process_is_read_anew(tmp_path, recheck_now, memory_map, caplog):
    path = tmp_path / "data.h5"
    old = np.arange(400, dtype=np.float32).reshape(100, 4)
    _write(path, old)
    matrix = HDF5Matrix(str(path), "x", memory_map=memory_map)
    np.testing.assert_array_equal(matrix[5], old[5])
    new = old + 1000
    fresh = tmp_path / "fresh.h5"
    _write(fresh, new, pad=5000)
    os.replace(fresh, path)
    with caplog.at_level(logging.INFO, logger="kdata"):
        np.testing.assert_array_equal(matrix[5], new[5])
        np.testing.assert_array_equal(matrix[90:], new[90:])
    assert any("re-opening" in record.getMessage() for record in caplog.records)
    assert all(record.name == "kdata" for record in caplog.records)


def test_rewritten_in_place_is_read_anew(tmp_path):
    # `cp new.h5 data.h5`: same inode, truncated then written; x moves in the file
    path = tmp_path / "data.h5"
    old = np.arange(400, dtype=np.float32).reshape(100, 4)
    _write(path, old)
    matrix = HDF5Matrix(str(path), "x")
    assert matrix._reader.use_mmap
    np.testing.assert_array_equal(matrix[3], old[3])
    inode = os.stat(path).st_ino
    fresh = tmp_path / "fresh.h5"
    new = old - 500
    _write(fresh, new, pad=20_000)
    shutil.copyfile(fresh, path)  # opens data.h5 with O_TRUNC and writes into it
    assert os.stat(path).st_ino == inode
    np.testing.assert_array_equal(matrix[3], new[3])
    np.testing.assert_array_equal(matrix[[99, 0]], new[[99, 0]])


def test_replaced_by_a_file_that_no_longer_fits_raises(tmp_path, recheck_now):
    path = tmp_path / "data.h5"
    _write(path, np.zeros((100, 4), dtype=np.float32))
    matrix = HDF5Matrix(str(path), "x", start=10, end=90)
    matrix[0]
    fresh = tmp_path / "fresh.h5"
    _write(fresh, np.zeros((50, 4), dtype=np.float32))  # too few rows for the view
    os.replace(fresh, path)
    with pytest.raises(FileChangedError, match=r"data\.h5.*90 rows") as caught:
        matrix[0]
    assert caught.value.path == str(path)
    _write(fresh, np.zeros((100, 4), dtype=np.float64))  # another dtype
    os.replace(fresh, path)
    with pytest.raises(FileChangedError, match="float64"):
        matrix[0]


def test_deleted_file_keeps_reading_the_open_one(tmp_path, recheck_now):
    path = tmp_path / "data.h5"
    x = np.arange(40, dtype=np.int64).reshape(10, 4)
    _write(path, x)
    matrix = kdata.HDF5Matrix(str(path), "x")
    matrix[0]
    os.remove(path)
    # the open file is still the one the view describes: its data are right
    np.testing.assert_array_equal(matrix[2:5], x[2:5])
