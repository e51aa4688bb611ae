"""Fetching bytes into a partial file: HTTP(S) with retries and resume, and ``file://``.

The fetchers only ever write the partial file (``.kio/NAME.part``); the caller verifies it
and renames it into place. A partial file left by an interrupted call is resumed by the
next one with an HTTP ``Range`` request, guarded by ``If-Range`` and by the validators
(ETag, Last-Modified, total size) saved beside it, so bytes of two different versions of
a file are never glued together.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3.exceptions

from kio._errors import DownloadError
from kio._hashing import Hasher, HashFactory
from kio._progress import Progress
from kio._state import StatePaths, read_json, remove_quietly, write_json

__all__ = ["FetchOptions", "fetch", "local_path_of"]

_CHUNK = 1 << 20
_MAX_BACKOFF = 30.0
# An attempt that received data before failing resumes without using up a retry; this
# caps the attempts in all, so a server that always drops after a few bytes still ends.
_MAX_ATTEMPTS = 50
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


@dataclass
class FetchOptions:
    """How to fetch: the keyword-only extras of ``get_file``."""

    retries: int = 3
    backoff: float = 0.5
    timeout: float | tuple[float | None, float | None] | None = 30.0
    session: requests.Session | None = None
    proxies: Mapping[str, str] | None = None
    verify: bool | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    progress: bool = False
    chunk_size: int = _CHUNK


class _Retryable(Exception):
    """One failed attempt that may succeed if tried again."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Fatal(Exception):
    """A failure that retrying cannot fix (4xx, TLS, a malformed request)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Restart(Exception):
    """The partial file cannot be resumed: start over at once (not a failure)."""


def local_path_of(url: str) -> str:
    """The local path of a ``file://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"origin={url!r}: file:// URLs must name a local path (file:///path), "
            f"got host {parts.netloc!r}"
        )
    return urllib.request.url2pathname(parts.path)


def fetch(
    url: str,
    state: StatePaths,
    options: FetchOptions,
    hash_factory: HashFactory | None,
    desc: str,
) -> str | None:
    """Fetch ``url`` into ``state.part``; return its digest when ``hash_factory`` is given.

    Raises:
        DownloadError: the download failed for good (the message names the URL and status).
        FileNotFoundError: a ``file://`` origin that does not exist.
    """
    state.ensure_folder()
    if url.lower().startswith("file:"):
        return _fetch_local(url, state, options, hash_factory, desc)
    return _HttpFetch(url, state, options, hash_factory, desc).run()


def _fetch_local(
    url: str,
    state: StatePaths,
    options: FetchOptions,
    hash_factory: HashFactory | None,
    desc: str,
) -> str | None:
    source = local_path_of(url)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"origin={url!r}: no such file {source!r}")
    remove_quietly(state.part_meta)
    remove_quietly(state.part)  # write a new file, never truncate one (see _stream)
    if hash_factory is None and not options.progress:
        # copyfile uses the kernel's fast paths (sendfile / copy_file_range).
        shutil.copyfile(source, state.part)
        return None
    hasher = hash_factory() if hash_factory is not None else None
    bar = Progress(options.progress, os.path.getsize(source), 0, desc)
    try:
        with open(source, "rb", buffering=0) as src, open(state.part, "wb", buffering=0) as dst:
            buffer = bytearray(options.chunk_size)
            view = memoryview(buffer)
            while True:
                count = src.readinto(buffer)
                if not count:
                    break
                chunk = view[:count]
                dst.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                bar.update(count)
    finally:
        bar.close()
    return hasher.hexdigest().lower() if hasher is not None else None


def _strong_validator(meta: Mapping[str, Any]) -> str | None:
    etag = meta.get("etag")
    if isinstance(etag, str) and etag and not etag.startswith("W/"):
        return etag
    modified = meta.get("last_modified")
    return modified if isinstance(modified, str) and modified else None


class _HttpFetch:
    """One HTTP download with its retries; state kept across attempts."""

    def __init__(
        self,
        url: str,
        state: StatePaths,
        options: FetchOptions,
        hash_factory: HashFactory | None,
        desc: str,
    ) -> None:
        self.url = url
        self.state = state
        self.options = options
        self.hash_factory = hash_factory
        self.desc = desc
        self.hasher: Hasher | None = None
        self.hashed = 0  # bytes of the partial file that self.hasher has seen

    # -- the retry loop -------------------------------------------------------------------
    def run(self) -> str | None:
        meta = read_json(self.state.part_meta)
        if meta is None or meta.get("url") != self.url:
            self._discard()
            meta = {}
        session = self.options.session or requests.Session()
        attempts = failures = restarts = 0
        last_status: int | None = None
        best = self._part_size()
        try:
            while True:
                attempts += 1
                try:
                    return self._attempt(session, meta)
                except _Fatal as fatal:
                    status = fatal.status if fatal.status is not None else last_status
                    raise self._error(fatal.reason, status, attempts) from None
                except _Restart:
                    self._discard()
                    meta = {}
                    best = 0
                    restarts += 1
                    if restarts > 3:
                        raise self._error(
                            "the server kept answering a resume request inconsistently",
                            last_status,
                            attempts,
                        ) from None
                    continue
                except _Retryable as failure:
                    if failure.status is not None:
                        last_status = failure.status
                    # A failure after the partial file grew starts a new streak: a long
                    # download over a flaky link keeps going as long as it makes progress.
                    size = self._part_size()
                    failures = 1 if size > best else failures + 1
                    best = max(best, size)
                    if failures > self.options.retries or attempts >= _MAX_ATTEMPTS:
                        raise self._error(failure.reason, last_status, attempts) from None
                    self._sleep(failures)
                    meta = read_json(self.state.part_meta) or {}
        finally:
            if self.options.session is None:
                session.close()

    def _part_size(self) -> int:
        try:
            return os.path.getsize(self.state.part)
        except OSError:
            return 0

    def _sleep(self, failures: int) -> None:
        delay = min(self.options.backoff * 2 ** (failures - 1), _MAX_BACKOFF)
        # Jitter spreads the retries of many processes hitting one failing server.
        time.sleep(delay * (0.5 + random.random() / 2))

    def _error(self, reason: str, status: int | None, attempts: int) -> DownloadError:
        status_text = f"HTTP status {status}" if status is not None else "no HTTP status"
        plural = "s" if attempts != 1 else ""
        return DownloadError(
            f"could not download {self.url}: {reason} ({status_text}; {attempts} attempt{plural})",
            url=self.url,
            status=status,
            attempts=attempts,
        )

    def _discard(self) -> None:
        remove_quietly(self.state.part)
        remove_quietly(self.state.part_meta)
        self.hasher = None
        self.hashed = 0

    # -- one request ----------------------------------------------------------------------
    def _attempt(self, session: requests.Session, meta: dict[str, Any]) -> str | None:
        offset = self._part_size()
        headers = {"Accept-Encoding": "identity", "User-Agent": "kio (python-requests)"}
        headers.update(self.options.headers)
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            validator = _strong_validator(meta)
            if validator is not None:
                headers["If-Range"] = validator
        try:
            response = session.get(
                self.url,
                headers=headers,
                stream=True,
                timeout=self.options.timeout,
                proxies=dict(self.options.proxies) if self.options.proxies else None,
                verify=self.options.verify,
                allow_redirects=True,
            )
        except requests.exceptions.SSLError as exc:
            # A certificate problem does not fix itself: fail at once.
            raise _Fatal(f"SSL error: {exc}", None) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except requests.RequestException as exc:
            raise _Fatal(f"{type(exc).__name__}: {exc}", None) from None
        with response:
            return self._receive(response, offset, meta)

    def _receive(
        self, response: requests.Response, offset: int, meta: dict[str, Any]
    ) -> str | None:
        status = response.status_code
        if status == 416 and offset > 0:
            raise _Restart()
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}", status)
        if status >= 400:
            if status in (404, 410):
                self._discard()
            raise _Fatal(f"HTTP {status} {response.reason}", status)
        if status not in (200, 206):
            raise _Fatal(f"unexpected HTTP {status} {response.reason}", status)

        etag = response.headers.get("ETag")
        modified = response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        if status == 206:
            if offset == 0:
                raise _Restart()
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise _Restart()
            total = None if match.group(3) == "*" else int(match.group(3))
            known_total = meta.get("total")
            if known_total is not None and total is not None and known_total != total:
                raise _Restart()
            if etag and meta.get("etag") and etag != meta.get("etag"):
                raise _Restart()
        else:
            # 200: the whole file, whether or not we asked for a range; start over cleanly.
            offset = 0
            self.hasher = None
            self.hashed = 0
            total = int(length) if length and length.isdigit() else None
        write_json(
            self.state.part_meta,
            {
                "url": self.url,
                "etag": etag or meta.get("etag"),
                "last_modified": modified or meta.get("last_modified"),
                "total": total,
            },
        )
        self._catch_up_hash(offset)
        return self._stream(response, offset, total, status)

    def _catch_up_hash(self, offset: int) -> None:
        """Make the running hash cover the first ``offset`` bytes of the partial file."""
        if self.hash_factory is None:
            return
        if self.hasher is None or self.hashed != offset:
            self.hasher = self.hash_factory()
            self.hashed = 0
            if offset:
                with open(self.state.part, "rb", buffering=0) as handle:
                    remaining = offset
                    while remaining:
                        data = handle.read(min(remaining, _CHUNK))
                        if not data:
                            break
                        self.hasher.update(data)
                        remaining -= len(data)
                        self.hashed += len(data)

    def _stream(
        self, response: requests.Response, offset: int, total: int | None, status: int
    ) -> str | None:
        raw = response.raw
        received = 0
        bar = Progress(self.options.progress, total, offset, self.desc)
        if offset and not os.path.exists(self.state.part):
            raise _Restart()
        if not offset:
            # A new file, never a truncated one: ext4 (auto_da_alloc) flushes a file
            # truncated to zero when it is closed, which cost ~30% of a loopback download.
            remove_quietly(self.state.part)
        try:
            with open(self.state.part, "r+b" if offset else "wb", buffering=0) as out:
                if offset:
                    out.seek(offset)
                    if os.fstat(out.fileno()).st_size > offset:
                        out.truncate()
                hasher = self.hasher
                chunk_size = self.options.chunk_size
                # Full-chunk reads are the fastest on fast links; with a progress bar on
                # screen, read1 shows bytes as they arrive instead of once per chunk.
                read = raw.read
                if self.options.progress and hasattr(raw, "read1"):
                    read = raw.read1
                while True:
                    try:
                        data = read(chunk_size, decode_content=False)
                    except (
                        urllib3.exceptions.HTTPError,
                        requests.RequestException,
                        OSError,
                    ) as exc:
                        raise _Retryable(
                            f"connection broken after {offset + received} bytes: "
                            f"{type(exc).__name__}: {exc}",
                            status,
                        ) from None
                    if not data:
                        break
                    out.write(data)
                    if hasher is not None:
                        hasher.update(data)
                        self.hashed += len(data)
                    received += len(data)
                    bar.update(len(data))
        finally:
            bar.close()
        size = offset + received
        if total is not None and size != total:
            raise _Retryable(f"incomplete body: {size} of {total} bytes", status)
        if self.hasher is not None:
            return self.hasher.hexdigest().lower()
        return None
