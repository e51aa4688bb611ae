"""SequenceLoader's worker processes: stopped on errors and on close(), scopes, error types."""

from __future__ import annotations

import multiprocessing
import time
import uuid
import warnings

import numpy as np
import pytest
import torch
from _helpers_kdata import FailingSequence, LoggedSequence, ScopedSequence, triple

import kregistry
from kdata import SequenceLoader

slow = pytest.mark.slow
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
CONTEXTS = ["fork", pytest.param("spawn", marks=slow)]


def children() -> set[int]:
    """Pids of this process's live multiprocessing children (finished ones are reaped)."""
    return {child.pid for child in multiprocessing.active_children() if child.pid is not None}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as file:
            state = next(line for line in file if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return False
    return "Z" not in state.split()[1]  # a zombie has exited


def wait_gone(pids: set[int], seconds: float = 5.0) -> set[int]:
    """The pids still running after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        children()  # reap
        left = {pid for pid in pids if alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("context", CONTEXTS)
def test_an_error_stops_every_worker_before_it_is_raised(context, persistent):
    before = children()
    loader = SequenceLoader(
        FailingSequence(bad=3, batches=8),
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=persistent,
    )
    iterator = iter(loader)
    next(iterator)
    workers = children() - before
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    with pytest.raises(ValueError, match="batch 3 of FailingSequence: ValueError: boom") as caught:
        for _ in iterator:
            pass
    # the traceback (held by `caught`) keeps the epoch's frames alive: no matter
    assert caught.value is not None
    assert wait_gone(workers) == set()
    loader.close()


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_worker_dying_by_a_signal_while_stopped_does_not_hide_the_error(context):
    # torch's SIGCHLD check raises "worker killed by signal" when a worker ends badly
    # during shutdown; the user must still get the batch's own error, and no worker left.
    from test_kdata_loader_support import abort_when_exiting

    before = children()
    loader = SequenceLoader(
        FailingSequence(bad=3, batches=8),
        num_workers=2,
        multiprocessing_context=context,
        worker_init_fn=abort_when_exiting,
    )
    with pytest.raises(ValueError, match="batch 3 of FailingSequence: ValueError: boom"):
        for _ in loader:
            pass
    assert wait_gone(children() - before) == set()
    loader.close()


@pytest.mark.parametrize("context", CONTEXTS)
def test_close_stops_the_workers_of_a_running_epoch(tmp_path, context):
    before = children()
    loader = SequenceLoader(
        LoggedSequence(str(tmp_path / "log"), batches=20),
        num_workers=2,
        multiprocessing_context=context,
    )
    iterator = iter(loader)
    next(iterator)
    workers = children() - before
    assert len(workers) == 2
    loader.close()  # the epoch is still running (and `iterator` still referenced)
    assert wait_gone(workers) == set()
    assert iterator is not None


def test_close_stops_persistent_workers(tmp_path):
    before = children()
    with SequenceLoader(
        LoggedSequence(str(tmp_path / "log"), batches=4),
        num_workers=2,
        multiprocessing_context="fork",
        persistent_workers=True,
    ) as loader:
        for _ in range(2):
            list(loader)
        workers = children() - before
        assert len(workers) == 2  # kept between epochs
    assert wait_gone(workers) == set()


def test_a_persistent_loader_gets_new_workers_after_an_error(tmp_path):
    seq = FailingSequence(bad=2, batches=4)
    loader = SequenceLoader(
        seq, num_workers=2, multiprocessing_context="fork", persistent_workers=True
    )
    with pytest.raises(ValueError, match="boom"):
        list(loader)
    seq.bad = 99  # fixed: the next epoch runs on fresh workers
    assert len(list(loader)) == 4
    loader.close()


class Unusual(Exception):
    """A user's error class with the usual one-message constructor."""


@pytest.mark.parametrize("error", [KeyError, IndexError, Unusual])
def test_errors_keep_their_type_through_a_real_worker(error):
    class Raises(FailingSequence):
        def __getitem__(self, index: int) -> np.ndarray:
            if index == self.bad:
                raise error("odd")
            return np.zeros(2)

    loader = SequenceLoader(Raises(bad=1), num_workers=1, multiprocessing_context="fork")
    with pytest.raises(error, match="batch 1 of Raises") as caught:
        list(loader)
    assert type(caught.value) is error


@slow
def test_unpicklable_scope_objects_do_not_break_spawn_workers():
    unused = f"kdata_unused_{uuid.uuid4().hex}"
    with kregistry.custom_object_scope({"kdata_test_fn": triple, unused: lambda v: v}):
        loader = SequenceLoader(ScopedSequence(), num_workers=2, multiprocessing_context="spawn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
        list(loader)  # a second epoch: new workers, no second warning
    assert [int(b[0]) for b in batches] == [0, 3, 6, 9]  # loads fine
    about = [w for w in caught if unused in str(w.message)]
    assert len(about) == 1 and issubclass(about[0].category, RuntimeWarning)


@slow
def test_a_worker_that_needs_an_unpicklable_scope_object_gets_a_clear_error():
    with kregistry.custom_object_scope({"kdata_test_fn": lambda v: v}):
        loader = SequenceLoader(ScopedSequence(), num_workers=1, multiprocessing_context="spawn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(kregistry.UnknownObjectError, match="kdata_test_fn") as caught:
            list(loader)
    assert type(caught.value) is kregistry.UnknownObjectError  # its type kept, via the worker
    assert "pickle" in str(caught.value)  # says why the name is missing there


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for machines without one")
@pytest.mark.parametrize("workers", [0, 1])
def test_pin_memory_warning_points_at_the_users_line(tmp_path, workers):
    loader = SequenceLoader(
        LoggedSequence(str(tmp_path / "log"), batches=2),
        num_workers=workers,
        pin_memory=True,
        multiprocessing_context="fork",
    )
    with pytest.warns(UserWarning, match="pin_memory") as record:
        batches = list(loader)  # the warning names this line
    assert len(batches) == 2
    ours = [w for w in record if "no accelerator" in str(w.message)]
    assert ours and ours[0].filename == __file__
