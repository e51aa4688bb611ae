"""kdata: Keras-style data for PyTorch, part of the k* family (a port of `keras.utils`).

- `Sequence`: Keras's batch-dataset contract, a `torch.utils.data.Dataset`;
  `SequenceLoader` runs epochs over it (every batch once, `on_epoch_end` once
  per epoch, seeded shuffling, tensors, workers, `torch.distributed` sharding).
- `HDF5Matrix`: Keras's array-like HDF5 view, with numpy indexing, as a
  `Dataset` with one-read batches (fast in a plain `DataLoader`); `HDF5Dataset` reads
  `x` and `y` together; `batch_loader` / `SliceBatchSampler` feed them to `DataLoader`
  by slice.
- `to_categorical` and `normalize`: Keras 2's results, numpy and torch.

Example:
    >>> from kdata import to_categorical
    >>> to_categorical([1, 0], num_classes=2).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
"""

from importlib import metadata as _metadata

from kdata._batches import SliceBatchSampler, batch_loader, collate_batch
from kdata._categorical import normalize, to_categorical
from kdata._convert import pin_batch, to_tensors
from kdata._h5file import FileChangedError
from kdata._hdf5 import BatchRows, HDF5Dataset, HDF5Matrix
from kdata._loader import SequenceLoader
from kdata._sequence import Sequence

__version__ = _metadata.version("kutorch-kdata")

__all__ = [
    "Sequence",
    "SequenceLoader",
    "HDF5Matrix",
    "HDF5Dataset",
    "batch_loader",
    "SliceBatchSampler",
    "BatchRows",
    "collate_batch",
    "to_categorical",
    "normalize",
    "to_tensors",
    "pin_batch",
    "FileChangedError",
]
