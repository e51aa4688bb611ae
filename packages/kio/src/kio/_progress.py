"""The download progress bar: tqdm on an interactive stderr, nothing otherwise."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "wants_progress"]


def wants_progress(progress: bool | None) -> bool:
    """``progress`` as asked, or (None) whether stderr is a terminal."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False
    return bool(progress)


class Progress:
    """A byte counter that drives a tqdm bar when enabled (and costs nothing when not)."""

    def __init__(self, enabled: bool, total: int | None, initial: int, desc: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )

    def update(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
