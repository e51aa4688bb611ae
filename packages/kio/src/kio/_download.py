"""Fetching bytes into a partial file: HTTP(S) with retries and resume, and ``file://``.

The fetchers only ever write the partial file (``.kio/NAME.part``); the caller verifies it
and renames it into place.

A partial file is resumed (HTTP ``Range``) only when all of these hold, otherwise the
download starts again from byte 0:

- its record (``.kio/NAME.part.json``) names the same URL and the partial file itself
  (inode and device, recorded when the file was created and before any byte was
  written, so a crash can never pair a record with bytes it does not describe);
- the server gave a strong validator: an ETag that is not weak (``W/``), or else a
  ``Last-Modified`` that the response's ``Date`` shows to be at least one second old
  (RFC 9110, 8.8.2.2); it is sent as ``If-Range``;
- the ``206`` answer starts at the requested byte, announces the same total size and
  carries the same validator.

A hash, when given, is the final judge: a resumed download that fails it is fetched
once more from byte 0 before the mismatch is reported.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import random
import re
import shutil
import stat
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import requests
import urllib3.exceptions

from kio._errors import DownloadError
from kio._hashing import Hasher, HashFactory
from kio._log import logger
from kio._progress import Progress
from kio._state import StatePaths, read_json, remove_quietly, write_json

__all__ = ["FetchOptions", "Fetched", "fetch", "local_path_of", "USER_AGENT"]

_CHUNK = 1 << 20
_MAX_BACKOFF = 30.0
_MAX_REDIRECTS = 30
# An attempt that received data before failing resumes without using up a retry; this
# caps the attempts in all, so a server that always drops after a few bytes still ends.
_MAX_ATTEMPTS = 50
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
# Statuses that mean "come back later": retried, honouring Retry-After.
_BUSY = (429, 503)
# Headers never sent to another origin after a redirect (with every header the user set).
_SENSITIVE = ("authorization", "proxy-authorization", "cookie")
_KIO_HEADERS = ("accept-encoding", "user-agent", "range", "if-range")
_SESSION_DEFAULTS = {name.lower() for name in requests.utils.default_headers()}


def _version() -> str:
    try:
        return metadata.version("kutorch-kio")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0"


USER_AGENT = f"kio/{_version()} python-requests/{requests.__version__}"


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
    max_retry_after: float = 60.0


@dataclass
class Fetched:
    """What a fetch produced: the digest (when asked) and whether bytes were resumed."""

    digest: str | None
    resumed: bool


class _Retryable(Exception):
    """One failed attempt that may succeed if tried again."""

    def __init__(
        self, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that retrying cannot fix (4xx, TLS, a malformed request)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Restart(Exception):
    """The partial file cannot be resumed: start over at once (not a failure)."""

    def __init__(self, reason: str, status: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def local_path_of(url: str) -> str:
    """The local path of a ``file://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"origin={url!r}: file:// URLs must name a local path (file:///path), "
            f"got host {parts.netloc!r}"
        )
    return urllib.request.url2pathname(parts.path)


def check_local_source(url: str) -> str:
    """The path of a ``file://`` origin, if it is a regular file (else a clear error)."""
    source = local_path_of(url)
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"origin={url!r}: no such file {source!r}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(
            f"origin={url!r} is a folder ({source!r}), not a file; get_file copies one file "
            "(pack a folder into an archive and pass extract=True)"
        )
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ValueError(
            f"origin={url!r} must be a regular file, got {kind} at {source!r} (its size is "
            "unknown and reading it could block or never end)"
        )
    return source


def fetch(
    url: str,
    state: StatePaths,
    options: FetchOptions,
    hash_factory: HashFactory | None,
    desc: str,
) -> Fetched:
    """Fetch ``url`` into ``state.part``.

    Raises:
        DownloadError: the download failed for good (the message names the URL and status).
        FileNotFoundError: a ``file://`` origin that does not exist.
    """
    state.ensure_folder()
    logger.info("Downloading data from %s", url)
    if url.lower().startswith("file:"):
        return Fetched(_fetch_local(url, state, options, hash_factory, desc), False)
    return _HttpFetch(url, state, options, hash_factory, desc).run()


def _fetch_local(
    url: str,
    state: StatePaths,
    options: FetchOptions,
    hash_factory: HashFactory | None,
    desc: str,
) -> str | None:
    source = check_local_source(url)
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


def _http_date(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


def strong_validator(meta: Mapping[str, Any]) -> str | None:
    """The validator that may go in ``If-Range``, or None when there is no strong one."""
    etag = meta.get("etag")
    if isinstance(etag, str) and etag:
        # A weak ETag may not be used, and with an ETag a date may not be used either.
        return None if etag.startswith("W/") else etag
    modified, date = _http_date(meta.get("last_modified")), _http_date(meta.get("date"))
    if modified is not None and date is not None and (date - modified).total_seconds() >= 1:
        value = meta.get("last_modified")
        return value if isinstance(value, str) else None
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


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
        self.resumed = False

    # -- the retry loop -------------------------------------------------------------------
    def run(self) -> Fetched:
        meta = self._resumable_meta()
        session = self.options.session or requests.Session()
        attempts = failures = restarts = 0
        last_status: int | None = None
        best = self._part_size() if meta else 0
        try:
            while True:
                attempts += 1
                try:
                    digest = self._attempt(session, meta)
                    return Fetched(digest, self.resumed)
                except _Fatal as fatal:
                    status = fatal.status if fatal.status is not None else last_status
                    raise self._error(fatal.reason, status, attempts) from None
                except _Restart as restart:
                    logger.info("restarting %s from byte 0: %s", self.url, restart.reason)
                    self._discard()
                    meta = {}
                    best = 0
                    restarts += 1
                    if restarts > 3:
                        raise self._error(
                            f"resuming kept failing: {restart.reason}", restart.status, attempts
                        ) from None
                    continue
                except _Retryable as failure:
                    if failure.status is not None:
                        last_status = failure.status
                    meta = self._resumable_meta()
                    # A failure after the partial file grew starts a new streak: a long
                    # download over a flaky link keeps going as long as it makes progress.
                    size = self._part_size() if meta else 0
                    failures = 1 if size > best else failures + 1
                    best = max(best, size)
                    if failures > self.options.retries or attempts >= _MAX_ATTEMPTS:
                        raise self._error(failure.reason, last_status, attempts) from None
                    delay = self._delay(failures, failure, attempts)
                    logger.info(
                        "retrying %s in %.1f s (retry %d of %d, %d bytes kept): %s",
                        self.url,
                        delay,
                        failures,
                        self.options.retries,
                        size,
                        failure.reason,
                    )
                    time.sleep(delay)
        finally:
            if self.options.session is None:
                session.close()

    def _part_size(self) -> int:
        try:
            return os.path.getsize(self.state.part)
        except OSError:
            return 0

    def _resumable_meta(self) -> dict[str, Any]:
        """The partial file's record when the partial file may be resumed, else {} (and
        then the partial file and its record are removed)."""
        meta = read_json(self.state.part_meta)
        try:
            st = os.stat(self.state.part)
        except OSError:
            st = None
        ok = (
            meta is not None
            and st is not None
            and meta.get("url") == self.url
            and meta.get("part") == {"inode": st.st_ino, "device": st.st_dev}
            and strong_validator(meta) is not None
            and (not isinstance(meta.get("total"), int) or st.st_size <= meta["total"])
        )
        if not ok:
            self._discard()
            return {}
        assert meta is not None
        return meta

    def _delay(self, failures: int, failure: _Retryable, attempts: int) -> float:
        delay = min(self.options.backoff * 2.0 ** (failures - 1), _MAX_BACKOFF)
        # Jitter spreads the retries of many processes hitting one failing server.
        delay *= 0.5 + random.random() / 2
        if failure.retry_after is not None:
            if failure.retry_after > self.options.max_retry_after:
                raise self._error(
                    f"{failure.reason}: the server asked to retry after "
                    f"{failure.retry_after:.0f} s (Retry-After), more than "
                    f"max_retry_after={self.options.max_retry_after:g}",
                    failure.status,
                    attempts,
                ) from None
            delay = max(delay, failure.retry_after)
        return delay

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
        # The record first: a partial file without its record is never resumed.
        remove_quietly(self.state.part_meta)
        remove_quietly(self.state.part)
        self.hasher = None
        self.hashed = 0

    # -- one request ----------------------------------------------------------------------
    def _attempt(self, session: requests.Session, meta: dict[str, Any]) -> str | None:
        offset = self._part_size() if meta else 0
        headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        headers.update(self.options.headers)
        validator = strong_validator(meta) if offset else None
        if offset > 0 and validator is not None:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = validator
        else:
            offset = 0
        try:
            response = self._send(session, headers)
        except requests.exceptions.SSLError as exc:
            # A certificate problem does not fix itself: fail at once.
            raise _Fatal(f"SSL error: {exc}", None) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except requests.RequestException as exc:
            raise _Fatal(f"{type(exc).__name__}: {exc}", None) from None
        with response:
            return self._receive(response, offset, meta)

    def _send(self, session: requests.Session, headers: dict[str, str]) -> requests.Response:
        """GET with redirects followed here, so that no header the user set (nor any
        credential) goes to another origin than the one the user named."""
        origin = _origin(self.url)
        private = {name.lower() for name in self.options.headers} | {
            name.lower() for name in session.headers if name.lower() not in _SESSION_DEFAULTS
        }
        private = (private | set(_SENSITIVE)) - set(_KIO_HEADERS)
        url = self.url
        for _ in range(_MAX_REDIRECTS + 1):
            prepared = session.prepare_request(requests.Request("GET", url, headers=headers))
            if _origin(url) != origin:
                for name in list(prepared.headers):
                    if name.lower() in private:
                        del prepared.headers[name]
                # Cookies of the session's jar are scoped to their own domain by requests.
                jar_cookie = requests.cookies.get_cookie_header(  # type: ignore[no-untyped-call]
                    session.cookies, prepared
                )
                if jar_cookie:
                    prepared.headers["Cookie"] = jar_cookie
            settings = session.merge_environment_settings(
                prepared.url,
                dict(self.options.proxies) if self.options.proxies else {},
                True,
                self.options.verify,
                None,
            )
            response = session.send(
                prepared, allow_redirects=False, timeout=self.options.timeout, **settings
            )
            location = session.get_redirect_target(response)
            if location is None:
                return response
            response.close()
            url = urllib.parse.urljoin(response.url, location)
            if _origin(url)[0] not in ("http", "https"):
                raise _Fatal(f"redirected to {url!r}, which is not an http(s) URL", None)
            logger.debug("%s: redirected to %s", self.url, url)
        raise _Fatal(f"more than {_MAX_REDIRECTS} redirects", None)

    def _receive(
        self, response: requests.Response, offset: int, meta: dict[str, Any]
    ) -> str | None:
        status = response.status_code
        if status == 416 and offset > 0:
            raise _Restart(
                f"asked for bytes={offset}- of a partial download, the server answered 416 "
                "(range not satisfiable)",
                status,
            )
        if status in _BUSY:
            raise _Retryable(
                f"HTTP {status} {response.reason}",
                status,
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}", status)
        if status >= 400:
            if status in (404, 410):
                self._discard()
            raise _Fatal(f"HTTP {status} {response.reason}", status)
        if status not in (200, 206):
            raise _Fatal(f"unexpected HTTP {status} {response.reason}", status)

        headers = response.headers
        if status == 206:
            content_range = headers.get("Content-Range", "")
            if offset == 0:
                raise _Restart(
                    f"asked for the whole file, the server answered 206 with Content-Range "
                    f"{content_range!r}",
                    status,
                )
            match = _CONTENT_RANGE.match(content_range)
            total = None if match is None or match.group(3) == "*" else int(match.group(3))
            problem = None
            if match is None or int(match.group(1)) != offset:
                problem = f"Content-Range {content_range!r}"
            elif isinstance(meta.get("total"), int) and total != meta["total"]:
                problem = f"Content-Range {content_range!r} (the file had {meta['total']} bytes)"
            elif meta.get("etag") and headers.get("ETag") != meta["etag"]:
                problem = f"ETag {headers.get('ETag')!r} (the partial file has {meta['etag']!r})"
            elif not meta.get("etag") and headers.get("Last-Modified") != meta.get("last_modified"):
                problem = (
                    f"Last-Modified {headers.get('Last-Modified')!r} (the partial file has "
                    f"{meta.get('last_modified')!r})"
                )
            if problem is not None:
                raise _Restart(
                    f"asked for bytes={offset}- and the server answered 206 with {problem}",
                    status,
                )
            logger.info("resuming %s at byte %d of %s", self.url, offset, total or "?")
            self.resumed = True
            self._catch_up_hash(offset)
            return self._stream(response, offset, total, status)
        # 200: the whole file, whether or not a range was asked for; start over cleanly.
        length = headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        self._discard()
        return self._stream(response, 0, total, status)

    def _new_part(self, response: requests.Response, total: int | None) -> int:
        """Create the partial file, then record what describes it, before any byte."""
        fd = os.open(self.state.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            st = os.fstat(fd)
            write_json(
                self.state.part_meta,
                {
                    "url": self.url,
                    "etag": response.headers.get("ETag"),
                    "last_modified": response.headers.get("Last-Modified"),
                    "date": response.headers.get("Date"),
                    "total": total,
                    "part": {"inode": st.st_ino, "device": st.st_dev},
                },
            )
        except BaseException:
            os.close(fd)
            raise
        return fd

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
        if offset:
            # Opened as it is; _resumable_meta checked that it is the recorded file.
            fd = os.open(self.state.part, os.O_WRONLY)
        else:
            self.hasher = self.hash_factory() if self.hash_factory is not None else None
            self.hashed = 0
            # A new file, never a truncated one: ext4 (auto_da_alloc) flushes a file
            # truncated to zero when it is closed, which cost ~30% of a loopback download.
            fd = self._new_part(response, total)
        bar = None
        try:
            with open(fd, "wb", buffering=0, closefd=True) as out:
                if offset:
                    out.seek(offset)
                    if os.fstat(fd).st_size > offset:
                        out.truncate()
                bar = Progress(self.options.progress, total, offset, self.desc)
                hasher = self.hasher
                chunk_size = self.options.chunk_size
                # read1 returns the bytes that arrived (up to chunk_size) without waiting
                # for a whole chunk: every byte received is written at once, so a timeout
                # on a slow link loses nothing and the next attempt resumes after it.
                read = getattr(raw, "read1", None)
                if read is None:  # urllib3 1.x
                    read = raw.read
                    chunk_size = min(chunk_size, 1 << 16)
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
            if bar is not None:
                bar.close()
        size = offset + received
        if total is not None and size != total:
            raise _Retryable(f"incomplete body: {size} of {total} bytes", status)
        if self.hasher is not None:
            return self.hasher.hexdigest().lower()
        return None
