"""Shared fixtures for kdata's tests: HDF5 files, and a helpers module spawn workers import."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

HERE = str(Path(__file__).resolve().parent)
# spawned DataLoader workers (and torch.distributed processes) unpickle classes from
# _helpers_kdata: make it importable here and in every child process
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)

import h5py  # noqa: E402


@pytest.fixture
def make_h5(tmp_path: Path) -> Callable[..., str]:
    """Write datasets to a new HDF5 file under tmp_path: ``make_h5(x=array, ...)``."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, chunks: dict | None = None, **arrays: np.ndarray) -> str:
        path = tmp_path / (name or f"data{next(counter)}.h5")
        with h5py.File(path, "w") as file:
            for key, value in arrays.items():
                options = (chunks or {}).get(key, {})
                file.create_dataset(key, data=value, **options)
        return str(path)

    return make


@pytest.fixture
def matrix_file(make_h5: Callable[..., str]) -> tuple[str, np.ndarray]:
    """A 40 x 3 float32 dataset "x" and labels "y", contiguous, plus a gzip copy "xz"."""
    x = np.arange(120, dtype=np.float32).reshape(40, 3)
    path = make_h5(
        x=x,
        xz=x,
        y=np.arange(40, dtype=np.int64) % 4,
        chunks={"xz": {"chunks": (7, 3), "compression": "gzip"}},
    )
    return path, x
