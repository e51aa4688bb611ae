"""`SequenceLoader`: epochs over a `Sequence` with the guarantees Keras promised."""

from __future__ import annotations

import logging
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
from kdata._convert import (
    accelerator_available,
    copy_batch,
    pin_batch,
    to_tensors,
    unaliased_tensors,
    warn_no_accelerator,
)
from kdata._order import (
    _as_int,
    check_not_sharded,
    epoch_order,
    group_matches,
    resolve_seed,
    resolve_shard,
    shard,
    shard_length,
)
from kdata._state import StateDiff, diffable, fingerprint, seeded_global_rngs

__all__ = ["SequenceLoader"]

logger = logging.getLogger("kdata")


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
            # keep what the error carries besides its message (a name, suggestions, ...)
            extra = {k: v for k, v in vars(error).items() if k not in vars(wrapped)}
            vars(wrapped).update(extra)
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
    """What worker processes hold: the sequence, brought up to date when the main says so.

    A task is `(generation, state_path, index)`. `generation` counts the updates of the
    main process's sequence that workers must see; a persistent worker that is behind
    loads the update from `state_path` once: the attributes that changed since the
    workers were started (a small dict when `on_epoch_end` reshuffles an index array),
    or, for a sequence whose state is not a plain `__dict__`, the whole sequence.
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
                update = pickle.load(file)
            if "sequence" in update:
                self.sequence = update["sequence"]
            else:
                state = vars(self.sequence)
                for name in update["delete"]:
                    state.pop(name, None)
                state.update(update["set"])
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
    """The scope of the loader's creation, with the one active now on top (it wins)."""
    added = {**base.added, **top.added}
    removed = (base.removed | top.removed) - added.keys()
    unavailable = {**base.unavailable, **top.unavailable}
    for name in added:
        unavailable.pop(name, None)
    return kregistry.ScopeSnapshot(added, frozenset(removed), unavailable)


class SequenceLoader:
    """Run epochs over a [`Sequence`][kdata.Sequence] (or any dataset of batches).

    `for batch in loader` runs one epoch. In it every batch index of
    `range(len(sequence))` (this rank's share of it, when sharded) is fetched exactly
    once, whatever `num_workers` is (0, 1, 4; fork or spawn), and batches come back in
    epoch order. After the last batch, `sequence.on_epoch_end()` is called exactly once,
    in the main process; workers see its effect in the next epoch, persistent workers
    included (they are sent only the attributes that changed), and a length that it
    changes is used for the next epoch. An epoch left early (`break`, an exception) does
    not call `on_epoch_end`.

    Batches never share memory with the sequence's arrays: with `num_workers=0` each
    batch is copied (`copy=False` opts out); with workers, batches cross a process boundary
    and are fresh anyway.

    Sharding across `torch.distributed` ranks follows `DistributedSampler` exactly (same
    seed, epoch and `drop_last`: the same batch indices per rank). Without `drop_last`,
    every rank gets `ceil(len / world_size)` batches, the order padded by repeating its
    first batches (a few batches are seen twice per epoch), so no rank waits for another
    in a collective. With a process group, the ranks also agree on the sequence's state:
    `on_epoch_end` runs with numpy's, `random`'s and torch's global generators seeded
    identically on every rank (the previous generator states are restored afterwards),
    and array and list attributes that still differ (a generator of its own, a shuffle
    in `__init__`) are replaced by rank 0's, with a warning.

    Args:
        sequence: a [`Sequence`][kdata.Sequence], or any object with `__getitem__(int)`
            returning a batch and `__len__` (`on_epoch_end` is optional).
        shuffle: shuffle the batch order each epoch; the order depends only on `seed`
            and the epoch number (`DistributedSampler`'s permutation).
        seed: seed of the shuffles, of `on_epoch_end`'s global generators when sharded,
            and of the workers' generators; by default one drawn once per loader (shared
            by all ranks through the process group).
        num_workers: worker processes fetching batches; 0 fetches in this process, with
            no DataLoader in between.
        convert: turn numpy arrays in batches (arrays, tuples, lists, dicts) into tensors.
        pin_memory: put batches in pinned memory (when an accelerator is present).
        multiprocessing_context: `"fork"`, `"spawn"`, `"forkserver"` or a context.
        persistent_workers: keep the workers between epochs.
        prefetch_factor: batches loaded in advance by each worker (DataLoader's default).
        timeout: seconds to wait for a batch from a worker (0: forever).
        worker_init_fn: called in each worker with its id, after the kregistry scope is
            installed there.
        rank: this process's rank; with `world_size`, the loader yields only its share of
            each epoch. Both `None`: taken from the initialized `torch.distributed`
            default group, else no sharding.
        world_size: the number of ranks.
        drop_last: when sharded, drop the last `len % world_size` batches of each epoch
            instead of padding, so every rank gets the same count.
        copy: with `num_workers=0`, copy each batch so that it never shares memory with
            the sequence's arrays (an in-place `on_epoch_end` cannot rewrite batches
            already yielded). `False`: zero-copy, at that risk.
        agree_ranks: when sharded with a process group, seed `on_epoch_end` identically
            on every rank and make the ranks' array and list attributes agree (see
            above). `False` leaves that to you.

    The kregistry scope active when the loader is created, and the one active when an
    epoch starts (it wins), are installed in every worker process (fork and spawn), so
    names registered in a `custom_object_scope` resolve inside `__getitem__`.

    If a batch raises, the error (its message naming the batch) is re-raised after the
    worker processes are stopped; `close()` (or leaving a `with` block) stops persistent
    workers.

    Attributes:
        epoch: the number of the next epoch (see `set_epoch`).
        rank: this process's rank (0 when not sharded).
        world_size: the number of ranks (1 when not sharded).
        seed: the seed in use (given, or drawn and agreed by the ranks).
        published_bytes: the size of each update sent to persistent workers (one per
            epoch whose `on_epoch_end` changed something), to check what they cost.

    Raises:
        TypeError: `sequence` has no `__getitem__`/`__len__`, or an argument has the
            wrong type.
        ValueError: a bad `num_workers`, `rank`/`world_size` or `seed`, or a sequence
            already sharded (`__kshard__` set, e.g. by `kparallel.shard`) that this loader
            would shard again.

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
        copy: bool = True,
        agree_ranks: bool = True,
    ) -> None:
        if not (hasattr(sequence, "__getitem__") and hasattr(sequence, "__len__")):
            raise TypeError(
                f"sequence must have __getitem__ and __len__ (a kdata.Sequence), got "
                f"{type(sequence).__name__}"
            )
        num_workers = _as_int(num_workers, "num_workers", minimum=0)
        if prefetch_factor is not None:
            prefetch_factor = _as_int(prefetch_factor, "prefetch_factor")
        for name, flag in (
            ("shuffle", shuffle),
            ("drop_last", drop_last),
            ("copy", copy),
            ("agree_ranks", agree_ranks),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers=True needs num_workers > 0, got num_workers=0")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"worker_init_fn must be callable or None, got {worker_init_fn!r}")
        self.sequence = sequence
        self.shuffle = bool(shuffle)
        self.num_workers = num_workers
        self.convert = convert
        self.pin_memory = pin_memory
        self.multiprocessing_context = multiprocessing_context
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.rank, self.world_size = resolve_shard(rank, world_size)
        check_not_sharded(sequence, f"sequence {type(sequence).__name__}", self.world_size)
        self.drop_last = bool(drop_last)
        self.copy = bool(copy)
        # collectives (seed agreement, state checks) only on the group this loader shards by
        self._agree = bool(agree_ranks) and self.world_size > 1
        self._collective = self._agree and group_matches(self.rank, self.world_size)
        self._seed_shared = seed is not None or self._collective
        self.seed = resolve_seed(seed, self.world_size, self.shuffle or self._collective)
        if self._agree and not self._seed_shared and _overrides_epoch_end(sequence):
            warnings.warn(
                f"rank and world_size are given but no torch.distributed process group is "
                f"initialized and no seed: the ranks cannot agree on what "
                f"{type(sequence).__name__}.on_epoch_end draws at random; pass seed=... (the "
                f"same on every rank)",
                RuntimeWarning,
                stacklevel=2,
            )
        self.epoch = 0
        self._scope = kregistry.capture_scope()
        self._loader: DataLoader[Any] | None = None
        self._iterator: Any = None  # the running epoch's DataLoader iterator
        self._fetcher: _EpochFetcher | None = None
        self._sampler = _TaskSampler()
        self._state_dir: str | None = None
        self._diff: StateDiff | None = None
        self._stale = False  # on_epoch_end ran since the workers last got the sequence
        self._warned_pickle = False
        self._warned_disagree = False
        self._checked_start = False
        self.published_bytes: list[int] = []  # bytes sent to persistent workers, per update
        if self.world_size > 1:
            logger.info(
                "SequenceLoader(%s): rank %d of %d, %d batches per rank per epoch, seed %d",
                type(sequence).__name__,
                self.rank,
                self.world_size,
                len(self),
                self.seed,
            )

    # -- epochs -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Set the number of the next epoch (it fixes the shuffle), as DistributedSampler."""
        self.epoch = _as_int(epoch, "epoch", minimum=0)

    def order(self, epoch: int | None = None) -> list[int]:
        """The batch indices this rank fetches in `epoch` (default: the next one).

        Exactly `list(DistributedSampler(...))` for the same length, rank, world size,
        shuffle, seed, epoch and `drop_last`.
        """
        epoch = self.epoch if epoch is None else _as_int(epoch, "epoch")
        full = epoch_order(len(self.sequence), self.shuffle, self.seed, epoch)
        return shard(full, self.rank, self.world_size, self.drop_last).tolist()  # type: ignore[no-any-return]

    def __len__(self) -> int:
        """Batches in the next epoch, for this rank."""
        return shard_length(len(self.sequence), self.world_size, self.drop_last)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        self.epoch += 1
        if self.num_workers == 0:
            return self._run_inline(epoch)
        return self._run_workers(epoch)

    def _start_epoch(self, epoch: int) -> np.ndarray[Any, Any]:
        """This rank's batch order for `epoch`, after the ranks agreed on the sequence."""
        if self._collective and not self._checked_start:
            self._checked_start = True
            self._agree_state("the start", warn=False)
        return np.asarray(self.order(epoch), dtype=np.int64)

    def _end_epoch(self, epoch: int) -> None:
        end = getattr(self.sequence, "on_epoch_end", None)
        if end is None:
            return
        if self._agree and self._seed_shared:
            # every rank draws the same "random" numbers in on_epoch_end
            seed = int(np.random.SeedSequence([self.seed, epoch, 0x6B64]).generate_state(1)[0])
            logger.debug("on_epoch_end of epoch %d with global RNGs seeded %d", epoch, seed)
            with seeded_global_rngs(seed):
                end()
        else:
            end()
        self._stale = True
        if self._collective:
            self._agree_state(f"the end of epoch {epoch}", warn=True)

    def _agree_state(self, when: str, warn: bool) -> None:
        """Make every rank hold rank 0's array and list attributes (a collective)."""
        dist = torch.distributed
        mine = fingerprint(self.sequence)
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, mine)
        union = set().union(*gathered)
        first = gathered[0]
        names = sorted(
            n for n in union if any(t.get(n, _MISSING) != first.get(n, _MISSING) for t in gathered)
        )
        if not names:
            return
        name = type(self.sequence).__name__
        attributes = [n for n in names if n != "__len__"]
        box: list[Any] = [None]
        if self.rank == 0:
            state = getattr(self.sequence, "__dict__", {})
            box = [{n: state[n] for n in attributes if n in state}]
        dist.broadcast_object_list(box, src=0)
        if self.rank != 0:
            state = vars(self.sequence)
            for n in attributes:
                state.pop(n, None)
            state.update(box[0])
        self._stale = True
        lengths = [len(self.sequence)]
        all_lengths: list[Any] = [None] * self.world_size
        dist.all_gather_object(all_lengths, lengths[0])
        if len(set(all_lengths)) > 1:
            raise RuntimeError(
                f"the ranks disagree on len({name}) at {when} ({all_lengths}) even after "
                f"taking rank 0's attributes {attributes}: every rank must hold the same "
                f"sequence when SequenceLoader shards it"
            )
        message = (
            f"the ranks disagreed on {name}'s attributes {attributes} at {when}; rank 0's "
            f"values were sent to every rank"
        )
        if warn and not self._warned_disagree:
            self._warned_disagree = True
            warnings.warn(
                f"{message}. on_epoch_end runs with numpy's, random's and torch's global "
                f"generators seeded alike on every rank, so it draws from a generator of "
                f"its own (np.random.default_rng() without a seed?): seed it the same on "
                f"every rank to avoid sending these attributes each epoch",
                RuntimeWarning,
                stacklevel=4,
            )
        else:
            logger.info("%s (a shuffle in __init__ without a seed?)", message)

    def _run_inline(self, epoch: int) -> Iterator[Any]:
        order = self._start_epoch(epoch)
        sequence, convert, copy = self.sequence, self.convert, self.copy
        pin = self.pin_memory and accelerator_available()
        if self.pin_memory and not pin:
            warn_no_accelerator(stacklevel=3)
        scope = _merge(self._scope, kregistry.capture_scope())
        if scope or pin or not convert:
            for index in order.tolist():
                if scope:
                    with scope:
                        batch = _fetch(sequence, index)
                else:
                    batch = _fetch(sequence, index)
                if convert:
                    # a copy unless nothing else can reach an array (a tensor already
                    # pinned would not be copied by pin_batch)
                    batch = unaliased_tensors(batch) if copy else to_tensors(batch)
                elif copy:
                    batch = copy_batch(batch)
                if pin:
                    batch = pin_batch(batch)
                yield batch
            self._end_epoch(epoch)
            return
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
            # unaliased_tensors: copies, except arrays made for this batch that nothing else
            # refers to (a gather, arithmetic): their memory cannot be the user's
            yield unaliased_tensors(batch) if copy else to_tensors(batch)
        self._end_epoch(epoch)

    def _run_workers(self, epoch: int) -> Iterator[Any]:
        order = self._start_epoch(epoch)
        loader = self._worker_loader()
        self._sampler.order = order
        iterator = iter(loader)
        self._iterator = iterator
        try:
            yield from iterator
        except GeneratorExit:
            if not self.persistent_workers:  # left early: stop the workers now, not at gc
                _stop(iterator)
            raise
        except BaseException:
            # as Keras's OrderedEnqueuer: no worker outlives the error it reports
            _stop(iterator)
            if loader is self._loader:
                self._loader = None
                loader._iterator = None
            raise
        finally:
            self._iterator = None
        del iterator
        self._end_epoch(epoch)

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
        self._diff = None
        overrides = _overrides_epoch_end(self.sequence)
        if self.persistent_workers and overrides and diffable(self.sequence):
            self._diff = StateDiff(self.sequence)
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
        logger.debug(
            "starting %d %s workers for %s",
            self.num_workers,
            self.multiprocessing_context or "default-context",
            type(self.sequence).__name__,
        )
        if self.pin_memory and not accelerator_available():
            warn_no_accelerator(stacklevel=4)
        return self._loader

    def _publish_state(self) -> bool:
        """Write what persistent workers need to catch up with the main process's sequence.

        That is the attributes changed since the workers started (by content), or the
        whole sequence when its state is not a plain `__dict__`. Returns False (after one
        warning) when that cannot be pickled.
        """
        try:
            if self._diff is not None:
                updates, deleted = self._diff.changes(self.sequence)
                update: dict[str, Any] = {"set": updates, "delete": deleted}
            else:
                update = {"sequence": self.sequence}
            blob = pickle.dumps(update, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            if not self._warned_pickle:
                self._warned_pickle = True
                warnings.warn(
                    f"{type(self.sequence).__name__}'s state changed by on_epoch_end cannot "
                    f"be pickled ({error}), so it cannot be sent to persistent workers; they "
                    f"are restarted each epoch instead (define the class and what it holds "
                    f"at module level)",
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
        self.published_bytes.append(len(blob))
        logger.debug(
            "sent %d bytes of %s's state to persistent workers (update %d%s)",
            len(blob),
            type(self.sequence).__name__,
            generation,
            f": {sorted(update['set']) + sorted(update['delete'])}" if "set" in update else "",
        )
        return True

    # -- resources ----------------------------------------------------------------------

    def _shutdown_workers(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            _stop(getattr(loader, "_iterator", None))
            loader._iterator = None

    def close(self) -> None:
        """Stop the worker processes (persistent or of a running epoch) and remove the
        files used to refresh them."""
        iterator, self._iterator = self._iterator, None
        _stop(iterator)
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


_MISSING = object()


def _stop(iterator: Any) -> None:
    """Stop a DataLoader iterator's worker processes (joined, or terminated if stuck)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is None:
        return
    try:
        shutdown()
    except RuntimeError as error:
        # torch's SIGCHLD check fires when a worker ends by a signal while it is being
        # stopped (seen: a spawn worker's C++ runtime aborting as it exits). We asked it
        # to stop, and torch's own clean-up (its `finally`) has still run and terminated
        # what was left: that must not replace the error being raised, or fail close().
        logger.debug("a worker ended abnormally while being stopped: %s", error)
    logger.debug("stopped the worker processes")


def _overrides_epoch_end(sequence: object) -> bool:
    """Whether `on_epoch_end` may change the sequence (not `Sequence`'s empty default)."""
    from kdata._sequence import Sequence

    if "on_epoch_end" in getattr(sequence, "__dict__", {}):
        return True
    method = getattr(type(sequence), "on_epoch_end", None)
    return method is not None and method is not Sequence.on_epoch_end
