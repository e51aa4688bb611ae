"""Fixtures shared by every package's tests. Imports nothing but the standard library,
pytest and kregistry, so each package's tests run alone (see hatch.toml, env `solo`)."""

from __future__ import annotations

import gc
import multiprocessing
import sys
from collections.abc import Iterator

import pytest

from kregistry._store import GLOBAL_LAYER


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    """Each test starts and ends with the registry it found (objects and names)."""
    objects, names = GLOBAL_LAYER.objects.copy(), GLOBAL_LAYER.names.copy()
    yield
    GLOBAL_LAYER.objects.clear()
    GLOBAL_LAYER.objects.update(objects)
    GLOBAL_LAYER.names.clear()
    GLOBAL_LAYER.names.update(names)


@pytest.fixture(autouse=True)
def _dataloader_workers_end_with_their_test() -> Iterator[None]:
    """DataLoader workers a test started are shut down when it ends, not in a later test.

    An iterator whose worker raised lives on in the exception's traceback, a reference
    cycle. When the cycle collector frees it, its queues are finalized first, so the
    workers never get the message to stop and torch waits 5 s to join each one, inside
    whichever later test happens to trigger the collection (and trips its timing checks).
    """
    yield
    dataloader = sys.modules.get("torch.utils.data.dataloader")
    if dataloader is None or not multiprocessing.active_children():
        return
    iterator = dataloader._MultiProcessingDataLoaderIter
    for obj in gc.get_objects():
        if type(obj) is iterator:  # not isinstance: it would touch deprecated proxies
            obj._shutdown_workers()
