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


def resolve_error_in_child(name: str) -> tuple[type[BaseException], str] | None:
    """Resolve ``name`` in a pool worker; report the error's type and message, if any."""
    try:
        kregistry.resolve(name)
    except Exception as error:
        return type(error), str(error)
    return None


class ResolvingDataset:
    """A map-style dataset whose items resolve a name (torch not imported here)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Any:
        return kregistry.resolve(self.name, kind="normalizer")
