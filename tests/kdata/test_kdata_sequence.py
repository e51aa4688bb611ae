"""Sequence and SequenceLoader with real DataLoader worker processes (fork and spawn)."""

from __future__ import annotations

import os
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from _helpers_kdata import (
    FailingSequence,
    HDF5Batches,
    LoggedSequence,
    NestedSequence,
    ScopedSequence,
    UnpicklableSequence,
    log_lines,
    triple,
)
from torch.utils.data import DataLoader

import kregistry
from kdata import Sequence, SequenceLoader
from kdata._loader import _with_batch_index

slow = pytest.mark.slow
# torch warns about more workers than this machine's 2 cores: intended here
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def fetches(log: str) -> dict[int, Counter]:
    """{tag: Counter of batch indices fetched with that tag} from a LoggedSequence log."""
    out: dict[int, Counter] = {}
    for line in log_lines(log):
        tag, index, _ = line.split(":")
        out.setdefault(int(tag), Counter())[int(index)] += 1
    return out


def fetch_pids(log: str) -> set[int]:
    return {int(line.split(":")[2]) for line in log_lines(log)}


def test_sequence_is_an_abstract_dataset_of_batches(tmp_path):
    with pytest.raises(TypeError, match="abstract"):
        Sequence()  # type: ignore[abstract]
    seq = LoggedSequence(str(tmp_path / "log"), batches=3)
    assert isinstance(seq, torch.utils.data.Dataset)
    assert [int(b[0]) for b in seq] == [0, 1000, 2000]  # __iter__ runs one epoch
    assert seq.tag == 0  # ... without on_epoch_end


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=slow)])
def test_plain_dataloader_works_as_is(tmp_path, context):
    seq = LoggedSequence(str(tmp_path / "log"), batches=5)
    loader = DataLoader(seq, batch_size=None, num_workers=2, multiprocessing_context=context)
    batches = list(loader)
    assert [int(b[0]) for b in batches] == [0, 1000, 2000, 3000, 4000]
    assert all(isinstance(b, torch.Tensor) and b.shape == (4,) for b in batches)


EPOCH_CASES = [
    pytest.param(0, None, False, id="0-workers"),
    pytest.param(1, "fork", False, id="1-fork"),
    pytest.param(4, "fork", False, id="4-fork"),
    pytest.param(4, "fork", True, id="4-fork-persistent"),
    pytest.param(1, "spawn", False, id="1-spawn", marks=slow),
    pytest.param(4, "spawn", True, id="4-spawn-persistent", marks=slow),
]


@pytest.mark.parametrize(("workers", "context", "persistent"), EPOCH_CASES)
def test_epochs_keep_kerass_promises(tmp_path, workers, context, persistent):
    log = str(tmp_path / "fetch.log")
    seq = LoggedSequence(log, batches=6, grow=1)
    loader = SequenceLoader(
        seq, num_workers=workers, multiprocessing_context=context, persistent_workers=persistent
    )
    with loader:
        for epoch in range(3):
            assert len(loader) == 6 + epoch
            values = [int(batch[0]) for batch in loader]
            # every batch once, in order; the last on_epoch_end's effect (tag) visible
            assert values == [1000 * i + epoch for i in range(6 + epoch)]
            # on_epoch_end once per epoch, in this (the main) process
            assert log_lines(log + ".end") == [str(os.getpid())] * (epoch + 1)
    counts = fetches(log)
    for epoch in range(3):
        # exactly-once fetching, also in the workers (no extra or repeated fetches)
        assert counts[epoch] == Counter(range(6 + epoch))
    pids = fetch_pids(log)
    if workers:
        assert os.getpid() not in pids
    else:
        assert pids == {os.getpid()}
    assert seq.tag == 3 and len(seq) == 9


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=slow)])
def test_persistent_workers_follow_an_hdf5_sequence_that_changes(make_h5, context):
    path = make_h5(x=np.arange(23, dtype=np.float64))
    seq = HDF5Batches(path, "x", batch_size=4)
    seq[0]  # the parent holds an open handle: the workers must open their own
    loader = SequenceLoader(
        seq,
        shuffle=True,
        seed=3,
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=True,
    )
    pids = set()
    with loader:
        for epoch in range(3):
            batches = list(loader)
            # the batch size grew each epoch, and the new offset reached the workers
            assert len(batches) == -(-23 // (4 + epoch))
            values = torch.cat([x for x, _ in batches]).tolist()
            assert sorted(values) == [1000.0 * epoch + v for v in range(23)]
            pids |= {int(pid) for _, pid in batches}
    assert len(pids) == 2 and os.getpid() not in pids  # the same two workers throughout


def test_persistent_workers_reuse_processes_and_clean_up(tmp_path):
    log = str(tmp_path / "fetch.log")
    loader = SequenceLoader(
        LoggedSequence(log, batches=8),
        num_workers=2,
        multiprocessing_context="fork",
        persistent_workers=True,
    )
    for _ in range(3):
        list(loader)
    assert len(fetch_pids(log)) == 2  # the same two workers served all three epochs
    state_dir = loader._state_dir
    assert state_dir is not None and len(os.listdir(state_dir)) == 1  # only the latest
    loader.close()
    assert not os.path.exists(state_dir)


class HookSwapping(UnpicklableSequence):
    """on_epoch_end replaces the unpicklable hook: the change cannot travel by pickle."""

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        self.hook = lambda value: value + 1


def test_unpicklable_but_unchanged_attributes_do_not_stop_updates(tmp_path):
    log = str(tmp_path / "fetch.log")
    loader = SequenceLoader(
        UnpicklableSequence(log),
        num_workers=2,
        multiprocessing_context="fork",
        persistent_workers=True,
    )
    with loader, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epochs = [[int(b[0]) for b in loader] for _ in range(3)]
    # only the changed attribute (tag) was sent: the lambda stayed where it was
    assert epochs == [[0, 1000, 2000, 3000], [1, 1001, 2001, 3001], [2, 1002, 2002, 3002]]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(fetch_pids(log)) == 2  # the same two workers throughout


def test_unpicklable_change_gets_fresh_persistent_workers(tmp_path):
    log = str(tmp_path / "fetch.log")
    loader = SequenceLoader(
        HookSwapping(log),
        num_workers=2,
        multiprocessing_context="fork",
        persistent_workers=True,
    )
    with loader:
        assert [int(b[0]) for b in loader] == [0, 1000, 2000, 3000]
        with pytest.warns(RuntimeWarning, match="cannot be pickled") as record:
            second = [int(b[0]) for b in loader]  # the warning points here
        assert record[0].filename == __file__
        assert second == [1, 1001, 2001, 3001]  # on_epoch_end's effect reached the workers
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            third = [int(b[0]) for b in loader]
        assert third == [2, 1002, 2002, 3002]
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]  # once only
    assert fetches(log)[1] == Counter(range(4))


def test_epoch_left_early_skips_on_epoch_end(tmp_path):
    log = str(tmp_path / "fetch.log")
    seq = LoggedSequence(log, batches=6)
    for workers in (0, 2):
        loader = SequenceLoader(seq, num_workers=workers, multiprocessing_context="fork")
        for index, _ in enumerate(loader):
            if index == 1:
                break
        assert seq.tag == 0 and log_lines(log + ".end") == []
    loader = SequenceLoader(
        seq, num_workers=2, multiprocessing_context="fork", persistent_workers=True
    )
    for index, _ in enumerate(loader):
        if index == 1:
            break
    assert [int(b[0]) for b in loader] == [1000 * i for i in range(6)]  # a whole epoch
    assert seq.tag == 1
    loader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_shuffle_is_seeded_and_reproducible(tmp_path, workers):
    seq = LoggedSequence(str(tmp_path / "log"), batches=12)

    def orders(seed, epochs=3):
        loader = SequenceLoader(
            seq, shuffle=True, seed=seed, num_workers=workers, multiprocessing_context="fork"
        )
        return [[int(b[0]) // 1000 for b in loader] for _ in range(epochs)]

    first, again = orders(7), orders(7)
    assert first == again
    assert all(sorted(order) == list(range(12)) for order in first)
    assert len({tuple(order) for order in first}) == 3  # a new order each epoch
    assert orders(8) != first
    loader = SequenceLoader(seq, shuffle=True, seed=7)
    loader.set_epoch(2)
    assert loader.order() == first[2]
    assert [int(b[0]) // 1000 for b in loader] == first[2]


def test_numpy_batches_become_tensors(tmp_path):
    for workers in (0, 2):
        batches = list(
            SequenceLoader(NestedSequence(), num_workers=workers, multiprocessing_context="fork")
        )
        first = batches[1]
        assert isinstance(first["x"], torch.Tensor) and first["x"].dtype == torch.float32
        assert first["x"].shape == (2, 3) and float(first["x"][0, 0]) == 1.0
        array, scalar = first["pair"]
        assert isinstance(array, torch.Tensor) and isinstance(scalar, torch.Tensor)
        assert int(scalar) == 1 and first["name"] == "b1"
    raw = next(iter(SequenceLoader(NestedSequence(), convert=False)))
    assert isinstance(raw["x"], np.ndarray)


@pytest.mark.parametrize("workers", [0, 2])
def test_errors_name_the_batch(workers):
    loader = SequenceLoader(FailingSequence(bad=3), num_workers=workers)
    with pytest.raises(ValueError, match=r"batch 3 of FailingSequence: ValueError: boom"):
        list(loader)


def test_error_types_that_take_other_arguments_keep_their_type_with_a_note():
    class Picky(Exception):
        def __init__(self, a, b):
            super().__init__(a, b)

    error = Picky(1, 2)
    wrapped = _with_batch_index(error, 5, object())
    assert wrapped is error and "batch 5 of object" in error.__notes__[0]
    same = _with_batch_index(KeyError("k"), 2, object())
    assert isinstance(same, KeyError) and "batch 2" in str(same)


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=slow)])
def test_kregistry_scope_reaches_workers(context):
    with kregistry.custom_object_scope({"kdata_test_fn": triple}):
        loader = SequenceLoader(ScopedSequence(), num_workers=2, multiprocessing_context=context)
    batches = list(loader)  # iterated outside the scope: the loader carried it
    assert [int(b[0]) for b in batches] == [0, 3, 6, 9]
    assert all(int(b[1]) != os.getpid() for b in batches)
    # a scope active when an epoch starts also reaches the workers (and 0 workers)
    for workers in (0, 2):
        plain = SequenceLoader(
            ScopedSequence(), num_workers=workers, multiprocessing_context="fork"
        )
        with kregistry.custom_object_scope({"kdata_test_fn": abs}):
            assert [int(b[0]) for b in plain] == [0, 1, 2, 3]
    with pytest.raises(kregistry.UnknownObjectError, match="kdata_test_fn") as caught:
        list(SequenceLoader(ScopedSequence(), num_workers=0))
    # the message (or, for an error class that needs more arguments, a note) names the batch
    text = " ".join([str(caught.value), *getattr(caught.value, "__notes__", [])])
    assert "batch 0 of ScopedSequence" in text


def test_pin_memory(tmp_path):
    seq = LoggedSequence(str(tmp_path / "log"), batches=2)
    for workers in (0, 1):
        loader = SequenceLoader(
            seq, num_workers=workers, pin_memory=True, multiprocessing_context="fork"
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(loader)
        assert len(batches) == 2
        if torch.cuda.is_available():
            assert all(b.is_pinned() for b in batches)
        else:
            assert any("pin_memory" in str(w.message) for w in caught)


def test_sharding_by_explicit_rank(tmp_path):
    seq = LoggedSequence(str(tmp_path / "log"), batches=11)
    shares = [
        SequenceLoader(seq, shuffle=True, seed=3, rank=r, world_size=3).order() for r in range(3)
    ]
    # DistributedSampler's rule: 11 batches padded to 12 by repeating the first in order
    assert [len(s) for s in shares] == [4, 4, 4]
    counts = Counter(i for share in shares for i in share)
    assert set(counts) == set(range(11)) and sorted(counts.values()) == [1] * 10 + [2]
    even = [SequenceLoader(seq, rank=r, world_size=3, drop_last=True, seed=0) for r in range(3)]
    assert [len(loader) for loader in even] == [3, 3, 3]
    got = [int(b[0]) // 1000 for b in even[1]]
    assert got == even[1].order(0) == [1, 4, 7]


def test_bad_arguments():
    seq = NestedSequence()
    with pytest.raises(TypeError, match="__getitem__ and __len__"):
        SequenceLoader(42)
    with pytest.raises(ValueError, match="num_workers"):
        SequenceLoader(seq, num_workers=-1)
    with pytest.raises(TypeError, match="num_workers"):
        SequenceLoader(seq, num_workers="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="persistent_workers"):
        SequenceLoader(seq, persistent_workers=True)
    with pytest.raises(ValueError, match="rank and world_size"):
        SequenceLoader(seq, rank=1)
    with pytest.raises(ValueError, match="rank must be in"):
        SequenceLoader(seq, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be"):
        SequenceLoader(seq, rank=0, world_size=0)
    with pytest.raises(ValueError, match="seed"):
        SequenceLoader(seq, shuffle=True, rank=0, world_size=2)
    with pytest.raises(ValueError, match="seed must be"):
        SequenceLoader(seq, seed=-3)
    with pytest.raises(TypeError, match="shuffle"):
        SequenceLoader(seq, shuffle="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch"):
        SequenceLoader(seq).set_epoch(-1)
