"""kio's logger and warnings that point at the user's line.

Everything a user may want to see goes to ``logging.getLogger("kio")`` (silent by
default, as a library should be): the start of each download, retries with their wait,
resumes. Warnings are attributed to the first frame outside the kio package, so
``warnings`` shows the line of the user's code that called kio, however deep inside
kio the warning was raised.
"""

from __future__ import annotations

import logging
import sys
import warnings

__all__ = ["logger", "warn_caller", "user_stacklevel"]

logger = logging.getLogger("kio")

# Frames skipped when attributing a warning: kio's own, and the standard-library
# modules kio calls back from (a tarfile filter, a zipfile read, a context manager).
_PASS_THROUGH = ("tarfile", "zipfile", "shutil", "contextlib")


def _is_internal(frame: object) -> bool:
    name = getattr(frame, "f_globals", {}).get("__name__", "")
    return name == "kio" or name.startswith("kio.") or name in _PASS_THROUGH


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes ``warnings.warn`` (called by the caller of this
    function) point at the first frame outside kio."""
    frame = sys._getframe(1)  # the function that is about to call warnings.warn
    level = 1
    while frame is not None and _is_internal(frame):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the user's calling line."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
