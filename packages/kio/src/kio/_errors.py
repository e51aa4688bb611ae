"""The errors that kio raises beyond the standard ones.

Each can be rebuilt from its message alone (``DownloadError("msg")``: torch re-raises a
DataLoader worker's error as ``type(msg)``), and pickles with its type and attributes (so
it reaches the parent of a multiprocessing or DataLoader worker intact).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DownloadError", "OfflineError"]


class DownloadError(OSError):
    """A download that failed for good (after any retries).

    Subclasses `OSError`, like `urllib.error.URLError`, so code that already catches
    network errors as `OSError` keeps working.

    Args:
        message: the whole message.
        url: the origin that was being fetched (None when unknown).
        status: the last HTTP status received, or None.
        attempts: how many requests were made.

    Attributes:
        url: the origin that was being fetched, or None when the error was rebuilt from
            its message alone.
        status: the last HTTP status received, or None when none arrived (connection
            error, timeout, `file://` origin).
        attempts: how many requests were made.

    Examples:
        >>> error = DownloadError("could not download x", url="https://h/x", status=404)
        >>> error.status, str(error)
        (404, 'could not download x')
    """

    def __init__(
        self,
        message: str = "",
        *,
        url: str | None = None,
        status: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling calls cls(*args) and drops the keyword fields.
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls: type[DownloadError], message: str, fields: dict[str, Any]) -> DownloadError:
    error = cls(message)
    error.__dict__.update(fields)
    return error


class OfflineError(DownloadError, FileNotFoundError):
    """Offline mode is on and the file is not in the cache (or fails its hash check).

    Subclasses both `DownloadError` and `FileNotFoundError`.

    Args:
        message: the whole message.
        url: the origin that could not be fetched.
        path: where the file was expected.

    Attributes:
        path: where the file was expected (None when rebuilt from its message alone).

    Examples:
        >>> OfflineError("offline", url="https://h/x", path="/c/x").path
        '/c/x'
    """

    def __init__(
        self, message: str = "", *, url: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message, url=url, status=None, attempts=0)
        self.path = path
