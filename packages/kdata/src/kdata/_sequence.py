"""``Sequence``: Keras's batch-dataset contract, as a ``torch.utils.data.Dataset``."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset

__all__ = ["Sequence"]


class Sequence(Dataset[Any], metaclass=ABCMeta):
    """Base class for fitting to a sequence of batches, such as a dataset (Keras's contract).

    Every ``Sequence`` implements ``__getitem__`` (returns a whole batch) and ``__len__``
    (the number of batches in an epoch); ``on_epoch_end`` may change the data between
    epochs. A ``Sequence`` is a torch ``Dataset`` of batches, so
    ``DataLoader(seq, batch_size=None, num_workers=k)`` works as is;
    :class:`kdata.SequenceLoader` adds the epoch guarantees (every batch exactly once,
    ``on_epoch_end`` once per epoch in the main process, seeded shuffling, tensors,
    sharding across ``torch.distributed`` ranks).

    Examples:
        >>> import math
        >>> import numpy as np
        >>> class Batches(Sequence):
        ...     def __init__(self, x, batch_size):
        ...         self.x, self.batch_size = x, batch_size
        ...     def __len__(self):
        ...         return math.ceil(len(self.x) / self.batch_size)
        ...     def __getitem__(self, idx):
        ...         return self.x[idx * self.batch_size:(idx + 1) * self.batch_size]
        >>> [len(b) for b in Batches(np.arange(5), 2)]
        [2, 2, 1]
    """

    @abstractmethod
    def __getitem__(self, index: int) -> Any:
        """Return batch number ``index`` (``0 <= index < len(self)``)."""
        raise NotImplementedError

    @abstractmethod
    def __len__(self) -> int:
        """Return the number of batches in one epoch."""
        raise NotImplementedError

    def on_epoch_end(self) -> None:
        """Called once at the end of every epoch; override to shuffle or change the data."""

    def __iter__(self) -> Iterator[Any]:
        """Yield the batches of one epoch in order (``on_epoch_end`` is not called)."""
        for index in range(len(self)):
            yield self[index]
