"""The small files kio keeps beside the cache: where they live, and reading/writing them.

For a cached file ``DIR/NAME`` kio keeps, in the hidden folder ``DIR/.kio/``:

- ``NAME.lock``: the inter-process lock (``filelock``);
- ``NAME.part`` and ``NAME.part.json``: bytes of a download in progress, with the URL and
  the validators (ETag, Last-Modified, total size) needed to resume it safely;
- ``NAME.json``: the digests verified for the file, with its size, mtime, ctime, inode and
  device, so a later cache hit with ``file_hash`` skips re-reading it while the file is
  unchanged;
- ``NAME.extracted.json``: the extraction marker (archive identity and the top-level
  entries written), so an unchanged archive is not extracted again.

Everything stays inside the cache folder, on the same file system as the final file, so
``os.replace`` from the partial file is atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

__all__ = [
    "STATE_DIR",
    "TEMP_PREFIX",
    "StatePaths",
    "FileIdentity",
    "read_json",
    "write_json",
    "remove_quietly",
]

STATE_DIR = ".kio"
# Extraction temporaries, beside the extracted entries: ".kio-extract-<archive>-<hash>...".
# A name kio reserves, like STATE_DIR (the stale-temporary cleanup removes them).
TEMP_PREFIX = ".kio-extract-"


@dataclass(frozen=True)
class StatePaths:
    """Where the side files of one cached file live."""

    target: str

    @property
    def folder(self) -> str:
        return os.path.join(os.path.dirname(self.target), STATE_DIR)

    def _side(self, suffix: str) -> str:
        return os.path.join(self.folder, os.path.basename(self.target) + suffix)

    @property
    def lock(self) -> str:
        return self._side(".lock")

    @property
    def part(self) -> str:
        return self._side(".part")

    @property
    def part_meta(self) -> str:
        return self._side(".part.json")

    @property
    def memo(self) -> str:
        return self._side(".json")

    @property
    def extracted(self) -> str:
        return self._side(".extracted.json")

    def ensure_folder(self) -> None:
        os.makedirs(self.folder, exist_ok=True)


@dataclass(frozen=True)
class FileIdentity:
    """What tells a file apart from a changed one without reading it.

    The change time (``st_ctime_ns``) is the one field a user cannot set back: a file
    rewritten in place with the same size and its old mtime restored by ``os.utime``
    still gets a new ctime, so its remembered digest no longer applies.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str) -> FileIdentity | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def as_dict(self) -> dict[str, int]:
        return {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "device": self.device,
        }

    def matches(self, data: object) -> bool:
        return isinstance(data, dict) and all(
            data.get(key) == value for key, value in self.as_dict().items()
        )


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when missing or unreadable (never raises)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: str) -> None:
    """Remove a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
