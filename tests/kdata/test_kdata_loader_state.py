"""What persistent workers are sent between epochs; batches that never alias user arrays;
kdata's one nested-structure walker."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from collections import OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest
import torch
from test_kdata_loader_support import BigShuffled

from kdata import Sequence, SequenceLoader, pin_batch, to_tensors
from kdata._convert import map_structure

slow = pytest.mark.slow
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def expected_epoch(seq: BigShuffled) -> np.ndarray:
    return np.concatenate([seq[i] for i in range(len(seq))])


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=slow)])
def test_persistent_workers_get_only_what_on_epoch_end_changed(context):
    seq = BigShuffled(rows=32_768, width=64, batch_size=4096)  # x: 8 MiB, never changes
    loader = SequenceLoader(
        seq, num_workers=2, multiprocessing_context=context, persistent_workers=True
    )
    with loader:
        for _ in range(4):
            wanted = expected_epoch(seq)
            got = torch.cat(list(loader)).numpy()
            np.testing.assert_array_equal(got, wanted)  # the workers follow the new order
    # one update per epoch after the first, each about the size of the index order
    assert len(loader.published_bytes) == 3
    assert all(size < seq.indices.nbytes + 4096 for size in loader.published_bytes)
    assert max(loader.published_bytes) < seq.x.nbytes // 20


def test_worker_hand_offs_are_logged(caplog):
    seq = BigShuffled(rows=64, width=2, batch_size=16)
    with (
        caplog.at_level(logging.DEBUG, logger="kdata"),
        SequenceLoader(
            seq, num_workers=1, multiprocessing_context="fork", persistent_workers=True
        ) as loader,
    ):
        list(loader)
        list(loader)
    messages = [r.getMessage() for r in caplog.records if r.name == "kdata"]
    assert any("starting 1 fork workers for BigShuffled" in m for m in messages)
    assert any("bytes of BigShuffled's state to persistent workers" in m for m in messages)
    assert any("['epoch', 'indices']" in m for m in messages)  # what changed, by name


def test_an_array_changed_in_place_is_sent_and_seen():
    seq = BigShuffled(rows=4096, width=16, batch_size=1024, inplace=True)
    loader = SequenceLoader(
        seq, num_workers=2, multiprocessing_context="fork", persistent_workers=True
    )
    with loader:
        for _ in range(3):
            wanted = expected_epoch(seq)
            np.testing.assert_array_equal(torch.cat(list(loader)).numpy(), wanted)
    assert len(loader.published_bytes) == 2
    assert all(size > seq.x.nbytes for size in loader.published_bytes)


class Reshaped(Sequence):
    """on_epoch_end adds an attribute and deletes another: both must reach the workers."""

    def __init__(self) -> None:
        self.base = np.zeros(3)
        self.temporary = 1

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> np.ndarray:
        extra = getattr(self, "added", 0) + getattr(self, "temporary", 100)
        return self.base + index + extra

    def on_epoch_end(self) -> None:
        self.added = getattr(self, "added", 0) + 10
        if hasattr(self, "temporary"):
            del self.temporary


class CustomState(Reshaped):
    """A sequence that pickles itself its own way: it is sent whole, still correct."""

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


@pytest.mark.parametrize("kind", [Reshaped, CustomState])
def test_added_and_deleted_attributes_reach_persistent_workers(kind):
    seq = kind()
    loader = SequenceLoader(
        seq, num_workers=1, multiprocessing_context="fork", persistent_workers=True
    )
    with loader:
        firsts = [float(next(iter(list(loader)))[0]) for _ in range(3)]
    assert firsts == [1.0, 110.0, 120.0]


class InPlace(Sequence):
    """Batches are views of `x`; on_epoch_end rewrites `x` in place (a Keras habit)."""

    def __init__(self, as_tensor: bool = False) -> None:
        self.x = np.arange(12, dtype=np.float64).reshape(6, 2)
        self.t = torch.arange(12.0).reshape(6, 2)
        self.as_tensor = as_tensor

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> object:
        if self.as_tensor:
            return self.t[2 * index : 2 * index + 2]
        return self.x[2 * index : 2 * index + 2]

    def on_epoch_end(self) -> None:
        self.x[:] = -self.x
        self.t.neg_()


class HeldBatches(Sequence):
    """Batches the sequence keeps (whole arrays it owns, a kept tuple), rewritten in place."""

    def __init__(self) -> None:
        self.cache = [np.full(3, float(i)) for i in range(3)]
        self.pair = (np.zeros(2), np.ones(2))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> object:
        return self.pair if index == 3 else self.cache[index]

    def on_epoch_end(self) -> None:
        for array in [*self.cache, *self.pair]:
            array += 100


def test_arrays_the_sequence_keeps_are_copied_too():
    seq = HeldBatches()
    loader = SequenceLoader(seq)
    first = list(loader)
    list(loader)
    assert [float(b[0]) for b in first[:3]] == [0.0, 1.0, 2.0]
    assert [float(t[0]) for t in first[3]] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("options", "as_tensor"),
    [
        ({}, False),
        ({}, True),
        ({"convert": False}, False),
        ({"num_workers": 2, "multiprocessing_context": "fork"}, False),
        ({"num_workers": 2, "multiprocessing_context": "fork", "persistent_workers": True}, True),
    ],
)
def test_batches_never_share_memory_with_the_sequence(options, as_tensor):
    seq = InPlace(as_tensor)
    loader = SequenceLoader(seq, **options)
    original = np.arange(12, dtype=np.float64).reshape(6, 2)
    first = list(loader)  # on_epoch_end has negated x in place once this returns
    second = list(loader)  # ... and again
    for index, batch in enumerate(first):
        np.testing.assert_array_equal(np.asarray(batch), original[2 * index : 2 * index + 2])
    assert float(np.asarray(second[0])[0, 1]) == -1.0  # the new values were read
    loader.close()


def test_zero_copy_is_an_explicit_choice():
    seq = InPlace()
    loader = SequenceLoader(seq, copy=False)
    first = list(loader)
    assert float(first[0][0, 1]) == -1.0  # aliased: rewritten by on_epoch_end
    with pytest.raises(TypeError, match="copy must be True or False"):
        SequenceLoader(seq, copy="no")  # type: ignore[arg-type]


Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Example:
    x: object
    label: object
    note: str = "n"


def test_one_walker_keeps_every_container_type():
    def make(value):
        return np.full(2, value, dtype=np.float32)

    factory = defaultdict(list)
    factory["a"] = make(1)
    batch = {
        "tuple": (make(0), make(1)),
        "list": [make(2), [make(3)]],
        "ordered": OrderedDict(b=make(4), a=make(5)),
        "default": factory,
        "pair": Pair(make(6), np.int64(7)),
        "example": Example(make(8), np.float32(9)),
        "text": "t",
        "strings": np.array(["a", "b"]),
    }
    for copy in (False, True):
        out = to_tensors(batch, copy=copy)
        assert type(out) is dict and list(out) == list(batch)
        assert type(out["tuple"]) is tuple and isinstance(out["tuple"][0], torch.Tensor)
        assert type(out["list"]) is list and type(out["list"][1]) is list
        assert type(out["ordered"]) is OrderedDict and list(out["ordered"]) == ["b", "a"]
        assert type(out["default"]) is defaultdict and out["default"].default_factory is list
        assert isinstance(out["default"]["a"], torch.Tensor)
        assert type(out["pair"]) is Pair and int(out["pair"].y) == 7
        assert type(out["example"]) is Example and isinstance(out["example"].x, torch.Tensor)
        assert out["example"].note == "n" and float(out["example"].label) == 9.0
        assert out["text"] == "t" and isinstance(out["strings"], np.ndarray)
        shares = np.shares_memory(out["tuple"][0].numpy(), batch["tuple"][0])
        assert shares is (not copy)
    # pin_batch walks the same way (without an accelerator it returns the batch as is)
    pinned = pin_batch(to_tensors(batch))
    assert type(pinned["ordered"]) is OrderedDict and type(pinned["pair"]) is Pair
    assert map_structure(lambda v: v, batch)["default"].default_factory is list


class WholeState(BigShuffled):
    """BigShuffled pickled its own way: the loader must send all of it (the old cost)."""

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def private_mb(pid: int) -> float:
    """Memory of a process not shared with its parent (smaps_rollup), in MB."""
    with open(f"/proc/{pid}/smaps_rollup") as file:
        fields = [line.split() for line in file if line.startswith("Private_")]
    return sum(int(field[1]) for field in fields) / 1024


@slow
def test_persistent_workers_do_not_copy_an_unchanged_big_array():
    def worker_memory(kind: type) -> float:
        before = {p.pid for p in multiprocessing.active_children()}
        seq = kind(rows=65_536, width=128, batch_size=8192)  # x: 32 MiB
        with SequenceLoader(
            seq, num_workers=1, multiprocessing_context="fork", persistent_workers=True
        ) as loader:
            for _ in range(3):
                list(loader)
            (pid,) = {p.pid for p in multiprocessing.active_children()} - before
            return private_mb(pid)

    changes_only, whole = worker_memory(BigShuffled), worker_memory(WholeState)
    # the whole sequence costs the worker a private copy of x; the changes do not
    assert whole - changes_only > 16, (changes_only, whole)
