"""The errors that kio raises beyond the standard ones."""

from __future__ import annotations

from typing import Any

__all__ = ["DownloadError", "OfflineError"]


class DownloadError(OSError):
    """A download that failed for good (after any retries).

    Subclasses :class:`OSError`, like :class:`urllib.error.URLError`, so code that already
    catches network errors as ``OSError`` keeps working.

    Attributes:
        url: the origin that was being fetched.
        status: the last HTTP status received, or ``None`` when none arrived (connection
            error, timeout, ``file://`` origin).
        attempts: how many requests were made.
    """

    def __init__(
        self, message: str, *, url: str, status: int | None = None, attempts: int = 1
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling calls cls(*args), which lacks the keyword-only fields: an
        # error raised in a multiprocessing or DataLoader worker could not reach the parent.
        return (_rebuild, (type(self), str(self.args[0]), dict(self.__dict__)))


def _rebuild(cls: type[DownloadError], message: str, fields: dict[str, Any]) -> DownloadError:
    error = cls.__new__(cls, message)
    OSError.__init__(error, message)
    error.__dict__.update(fields)
    return error


class OfflineError(DownloadError, FileNotFoundError):
    """Offline mode is on and the file is not in the cache (or fails its hash check).

    Subclasses both :class:`DownloadError` and :class:`FileNotFoundError`.

    Attributes:
        path: where the file was expected.
    """

    def __init__(self, message: str, *, url: str, path: str) -> None:
        super().__init__(message, url=url, status=None, attempts=0)
        self.path = path
