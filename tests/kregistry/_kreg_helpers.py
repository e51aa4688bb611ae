"""Module-level objects for the process tests: a spawned child imports them by name."""

from __future__ import annotations

from typing import Any

import kregistry


def double(x: int) -> int:
    return 2 * x


def triple(x: int) -> int:
    return 3 * x


class Swish:
    def __call__(self, x: float) -> float:
        return x


def lookup_in_child(snapshot: kregistry.ScopeSnapshot, names: list[str]) -> dict[str, Any]:
    """Install ``snapshot`` in this process and report what each name resolves to."""
    snapshot.install()
    objects = kregistry.get_custom_objects()
    return {name: objects.get(name) for name in names}


def worker_sees(names: list[str]) -> dict[str, Any]:
    """Run in a pool worker whose initializer installed a scope."""
    objects = kregistry.get_custom_objects()
    return {name: objects.get(name) for name in names}
