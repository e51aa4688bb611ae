"""``SequenceLoader``: epochs over a ``Sequence`` with the guarantees Keras promised."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import kregistry
from kdata._convert import accelerator_available, pin_batch, to_tensors, warn_no_accelerator
from kdata._order import epoch_order, resolve_seed, resolve_shard, shard

__all__ = ["SequenceLoader"]


def _with_batch_index(error: Exception, index: int, sequence: object) -> Exception:
    """The same kind of error, its message naming the batch that failed.

    An error class whose constructor takes other arguments is kept as it is, with a note
    naming the batch (shown in tracebacks, and in the message DataLoader workers send).
    """
    where = f"batch {index} of {type(sequence).__name__}"
    message = f"{where}: {type(error).__name__}: {error}"
    try:
        wrapped = type(error)(message)
        if message in str(wrapped):
            return wrapped
    except Exception:
        pass
    add_note = getattr(error, "add_note", None)
    if add_note is None:  # Python 3.10
        return RuntimeError(message)
    add_note(f"raised while fetching {where}")
    return error


def _fetch(sequence: Any, index: int) -> Any:
    try:
        return sequence[index]
    except Exception as error:
        wrapped = _with_batch_index(error, index, sequence)
        if wrapped is error:
            raise
        raise wrapped from error


class _EpochFetcher(Dataset[Any]):
    """What worker processes hold: the sequence, refreshed when the main process says so.

    A task is ``(generation, state_path, index)``. ``generation`` counts the
    ``on_epoch_end`` calls whose effect workers must see; persistent workers that are
    behind load the main process's pickled sequence from ``state_path`` once.
    """

    def __init__(self, sequence: Any) -> None:
        self.sequence = sequence
        self.generation = 0

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, task: tuple[int, str | None, int]) -> Any:
        generation, state_path, index = task
        if generation != self.generation and state_path is not None:
            with open(state_path, "rb") as file:
                self.sequence = pickle.load(file)
            self.generation = generation
        return _fetch(self.sequence, index)


class _TaskSampler(Sampler[tuple[int, "str | None", int]]):
    """Hands the DataLoader this epoch's batch indices, each exactly once."""

    def __init__(self) -> None:
        self.order: np.ndarray[Any, Any] = np.zeros(0, dtype=np.int64)
        self.generation = 0
        self.state_path: str | None = None

    def __iter__(self) -> Iterator[tuple[int, str | None, int]]:
        generation, path = self.generation, self.state_path
        for index in self.order.tolist():
            yield generation, path, index

    def __len__(self) -> int:
        return len(self.order)


def _identity(batch: Any) -> Any:
    return batch


def _merge(base: kregistry.ScopeSnapshot, top: kregistry.ScopeSnapshot) -> kregistry.ScopeSnapshot:
    added = {**base.added, **top.added}
    removed = (base.removed | top.removed) - added.keys()
    return kregistry.ScopeSnapshot(added, frozenset(removed))


class SequenceLoader:
    """Run epochs over a :class:`Sequence` (or any dataset of batches), Keras's promises kept.

    ``for batch in loader`` runs one epoch. In it every batch index of
    ``range(len(sequence))`` (this rank's share of it, when sharded) is fetched exactly
    once, whatever ``num_workers`` is (0, 1, 4; fork or spawn), and batches come back in
    epoch order. After the last batch, ``sequence.on_epoch_end()`` is called exactly once,
    in the main process; workers see its effect in the next epoch, persistent workers
    included (the main process's sequence is sent to them once per epoch), and a length
    that it changes is used for the next epoch. An epoch left early (``break``, an
    exception) does not call ``on_epoch_end``.

    Args:
        sequence: a :class:`Sequence`, or any object with ``__getitem__(int)`` returning a
            batch and ``__len__`` (``on_epoch_end`` is optional).
        shuffle: shuffle the batch order each epoch; the order depends only on ``seed``
            and the epoch number.
        seed: seed of the shuffles (and of the workers' random generators); by default one
            drawn once per loader (shared by all ranks through the process group).
        num_workers: worker processes fetching batches; 0 fetches in this process, with
            no DataLoader in between.
        convert: turn numpy arrays in batches (arrays, tuples, lists, dicts) into tensors.
        pin_memory: put batches in pinned memory (when an accelerator is present).
        multiprocessing_context: ``"fork"``, ``"spawn"``, ``"forkserver"`` or a context.
        persistent_workers: keep the workers between epochs.
        prefetch_factor: batches loaded in advance by each worker (DataLoader's default).
        timeout: seconds to wait for a batch from a worker (0: forever).
        worker_init_fn: called in each worker with its id, after the kregistry scope is
            installed there.
        rank: this process's rank; with ``world_size``, the loader yields only its share of
            each epoch (every batch goes to exactly one rank). Both ``None``: taken from
            the initialized ``torch.distributed`` default group, else no sharding.
        world_size: the number of ranks.
        drop_last: when sharded, drop the last ``len % world_size`` batches of each epoch so
            every rank gets the same count.

    The kregistry scope active when the loader is created, and the one active when an
    epoch starts (it wins), are installed in every worker process (fork and spawn), so
    names registered in a ``custom_object_scope`` resolve inside ``__getitem__``.

    Raises:
        TypeError: ``sequence`` has no ``__getitem__``/``__len__``, or an argument has the
            wrong type.
        ValueError: a bad ``num_workers``, ``rank``/``world_size`` or ``seed``.

    Examples:
        >>> import numpy as np
        >>> from kdata import Sequence, SequenceLoader
        >>> class Squares(Sequence):
        ...     def __len__(self):
        ...         return 3
        ...     def __getitem__(self, idx):
        ...         return np.full(2, idx * idx)
        >>> [b.tolist() for b in SequenceLoader(Squares())]
        [[0, 0], [1, 1], [4, 4]]
    """

    def __init__(
        self,
        sequence: Any,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        num_workers: int = 0,
        convert: bool = True,
        pin_memory: bool = False,
        multiprocessing_context: Any = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        timeout: float = 0.0,
        worker_init_fn: Callable[[int], None] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not (hasattr(sequence, "__getitem__") and hasattr(sequence, "__len__")):
            raise TypeError(
                f"sequence must have __getitem__ and __len__ (a kdata.Sequence), got "
                f"{type(sequence).__name__}"
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int):
            raise TypeError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers=True needs num_workers > 0")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"worker_init_fn must be callable or None, got {worker_init_fn!r}")
        self.sequence = sequence
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.convert = convert
        self.pin_memory = pin_memory
        self.multiprocessing_context = multiprocessing_context
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.rank, self.world_size = resolve_shard(rank, world_size)
        self.drop_last = drop_last
        self.seed = resolve_seed(seed, self.world_size, shuffle)
        self.epoch = 0
        self._scope = kregistry.capture_scope()
        self._loader: DataLoader[Any] | None = None
        self._fetcher: _EpochFetcher | None = None
        self._sampler = _TaskSampler()
        self._state_dir: str | None = None
        self._stale = False  # on_epoch_end ran since the workers last got the sequence
        self._warned_pickle = False

    # -- epochs -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the number of the next epoch (it fixes the shuffle), as DistributedSampler."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> list[int]:
        """The batch indices this rank fetches in ``epoch`` (default: the next one)."""
        epoch = self.epoch if epoch is None else epoch
        full = epoch_order(len(self.sequence), self.shuffle, self.seed, epoch)
        return shard(full, self.rank, self.world_size, self.drop_last).tolist()  # type: ignore[no-any-return]

    def __len__(self) -> int:
        """Batches in the next epoch, for this rank."""
        length = len(self.sequence)
        if self.world_size == 1:
            return length
        if self.drop_last:
            return length // self.world_size
        return len(range(self.rank, length, self.world_size))

    def __iter__(self) -> Iterator[Any]:
        order = np.asarray(self.order(), dtype=np.int64)
        self.epoch += 1
        if self.num_workers == 0:
            return self._run_inline(order)
        return self._run_workers(order)

    def _end_epoch(self) -> None:
        end = getattr(self.sequence, "on_epoch_end", None)
        if end is not None:
            end()
            self._stale = True

    def _run_inline(self, order: np.ndarray[Any, Any]) -> Iterator[Any]:
        sequence, convert = self.sequence, self.convert
        pin = self.pin_memory and accelerator_available()
        if self.pin_memory and not pin:
            warn_no_accelerator()
        scope = _merge(self._scope, kregistry.capture_scope())
        if scope or pin or not convert:
            for index in order.tolist():
                if scope:
                    with scope:
                        batch = _fetch(sequence, index)
                else:
                    batch = _fetch(sequence, index)
                if convert:
                    batch = to_tensors(batch)
                if pin:
                    batch = pin_batch(batch)
                yield batch
        else:
            # the common case, kept to the bare minimum per batch (the goal: a plain loop)
            getitem = sequence.__getitem__
            for index in order.tolist():
                try:
                    batch = getitem(index)
                except Exception as error:
                    wrapped = _with_batch_index(error, index, sequence)
                    if wrapped is error:
                        raise
                    raise wrapped from error
                yield to_tensors(batch)
        self._end_epoch()

    def _run_workers(self, order: np.ndarray[Any, Any]) -> Iterator[Any]:
        loader = self._worker_loader()
        self._sampler.order = order
        iterator = iter(loader)
        yield from iterator
        del iterator
        self._end_epoch()

    def _worker_loader(self) -> DataLoader[Any]:
        if self._loader is not None and self.persistent_workers:
            if not (self._stale and _overrides_epoch_end(self.sequence)):
                return self._loader
            if self._publish_state():
                self._stale = False
                return self._loader
            # the sequence does not pickle: new workers (forked) copy the current state
            self._shutdown_workers()
        # fresh workers (every epoch unless persistent) copy the current sequence
        self._stale = False
        self._fetcher = _EpochFetcher(self.sequence)
        self._sampler.generation, self._sampler.state_path = 0, None
        scope = _merge(self._scope, kregistry.capture_scope())
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        self._loader = DataLoader(
            self._fetcher,
            batch_size=None,
            sampler=self._sampler,
            num_workers=self.num_workers,
            collate_fn=to_tensors if self.convert else _identity,
            pin_memory=self.pin_memory and accelerator_available(),
            worker_init_fn=kregistry.ScopedWorkerInit(scope, then=self.worker_init_fn),
            multiprocessing_context=self.multiprocessing_context,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            timeout=self.timeout,
            generator=generator,
        )
        if self.pin_memory and not accelerator_available():
            warn_no_accelerator()
        return self._loader

    def _publish_state(self) -> bool:
        """Write the main process's sequence where persistent workers will load it.

        Returns False (after one warning) when the sequence cannot be pickled.
        """
        try:
            blob = pickle.dumps(self.sequence, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            if not self._warned_pickle:
                self._warned_pickle = True
                warnings.warn(
                    f"{type(self.sequence).__name__} cannot be pickled ({error}), so its "
                    f"on_epoch_end changes cannot be sent to persistent workers; they are "
                    f"restarted each epoch instead (define the class at module level)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return False
        if self._state_dir is None:
            self._state_dir = tempfile.mkdtemp(prefix="kdata-sequence-")
        generation = self._sampler.generation + 1
        path = os.path.join(self._state_dir, f"state-{generation}.pkl")
        partial = path + ".partial"
        with open(partial, "wb") as file:
            file.write(blob)
        os.replace(partial, path)  # workers never see a half-written state
        old = self._sampler.state_path
        self._sampler.generation, self._sampler.state_path = generation, path
        if old is not None:
            # no task of the last epoch is in flight any more
            os.remove(old)
        return True

    # -- resources ----------------------------------------------------------------------

    def _shutdown_workers(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            iterator = getattr(loader, "_iterator", None)
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            loader._iterator = None

    def close(self) -> None:
        """Stop persistent workers and remove the files used to refresh them."""
        self._shutdown_workers()
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
            self._sampler.state_path = None

    def __enter__(self) -> SequenceLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"SequenceLoader({type(self.sequence).__name__}, shuffle={self.shuffle}, "
            f"num_workers={self.num_workers}, epoch={self.epoch}, rank={self.rank}/"
            f"{self.world_size})"
        )


def _overrides_epoch_end(sequence: object) -> bool:
    from kdata._sequence import Sequence

    method = getattr(type(sequence), "on_epoch_end", None)
    return method is not None and method is not Sequence.on_epoch_end
