"""Fixtures shared by every package's tests. Imports nothing but the standard library,
pytest and kregistry, so each package's tests run alone (see hatch.toml, env `solo`)."""

from __future__ import annotations

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
