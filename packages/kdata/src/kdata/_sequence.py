"""``Sequence``: Keras's batch-dataset contract, as a ``torch.utils.data.Dataset``."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset

__all__ = ["Sequence"]


class Sequence(Dataset[Any], metaclass=ABCMeta):
    """A dataset cut into batches, with Keras's contract, as a torch ``Dataset``.

    A subclass defines ``__len__`` (how many batches one epoch has) and
    ``__getitem__(index)`` (batch ``index``, whole: arrays, a tuple or a dict of them);
    it may define ``on_epoch_end`` to reshuffle or otherwise change the data between
    epochs. Being a torch ``Dataset`` of batches, it goes straight into
    ``DataLoader(seq, batch_size=None, num_workers=k)``; [`SequenceLoader`][kdata.SequenceLoader]
    adds the epoch guarantees (every batch exactly once, ``on_epoch_end`` once per epoch
    in the main process, seeded shuffling, tensors, sharding across
    ``torch.distributed`` ranks as ``DistributedSampler`` does, ranks that agree on what
    ``on_epoch_end`` draws).

    Examples:
        >>> import numpy as np
        >>> class Windows(Sequence):
        ...     def __init__(self, signal, width):
        ...         self.signal, self.width = signal, width
        ...     def __len__(self):
        ...         return len(self.signal) // self.width
        ...     def __getitem__(self, index):
        ...         start = index * self.width
        ...         return self.signal[start:start + self.width]
        >>> [w.tolist() for w in Windows(np.arange(7), 3)]
        [[0, 1, 2], [3, 4, 5]]
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
