"""``get_file``: Keras's arguments and cache layout, with a download people can trust."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import os
import urllib.parse
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import filelock
import requests

from kio._archive import ArchiveFormat, clean_stale_temps, extract_to_folder
from kio._archive import resolve_archive_formats as _resolve_formats
from kio._cache import (
    ENV_OFFLINE,
    check_cache_subdir,
    check_stored_name,
    default_cache_dir,
    is_offline,
    prepare_datadir,
)
from kio._checks import check_int
from kio._download import FetchOptions, fetch, local_path_of
from kio._errors import OfflineError
from kio._hashing import HashFactory, hash_algorithm_name, hash_file, resolve_expected
from kio._log import logger, warn_caller
from kio._progress import wants_progress
from kio._state import (
    STATE_DIR,
    FileIdentity,
    StatePaths,
    read_json,
    remove_quietly,
    write_json,
)

__all__ = ["get_file"]

_SCHEMES = ("http", "https", "file")


def _check_origin(origin: object, session: object) -> str:
    if origin is None:
        raise ValueError("origin is required: the URL to download the file from, got None")
    if not isinstance(origin, str):
        raise TypeError(f"origin must be a URL str, got {origin!r} ({type(origin).__name__})")
    scheme = urllib.parse.urlsplit(origin).scheme.lower()
    if scheme not in _SCHEMES and not (session is not None and scheme):
        raise ValueError(
            f"origin must be an http://, https:// or file:// URL, got {origin!r} "
            "(pass session= with a mounted adapter for other schemes)"
        )
    return origin


def _check_fname(fname: object, origin: str) -> str:
    if fname is None or fname == "":
        name = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(origin).path))
        if name in ("", ".", ".."):
            raise ValueError(
                f"fname=None takes the file name from the URL, but origin={origin!r} ends "
                "without one; pass fname"
            )
        return name
    if not isinstance(fname, (str, os.PathLike)):
        raise TypeError(
            f"fname must be a str, a path or None, got {fname!r} ({type(fname).__name__})"
        )
    return os.fspath(fname)


def _check_seconds(value: object, argument: str, *, allow_zero: bool) -> float:
    """A finite number of seconds (checked here: a bad one would only fail on a retry)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:
            value = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{argument} must be a number of seconds, got {value!r}") from None
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        accepted = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{argument} must be a finite number of seconds {accepted}, got {value!r}")
    return seconds


def _check_timeout(timeout: object) -> float | tuple[float | None, float | None] | None:
    if timeout is None:
        return None
    if isinstance(timeout, tuple):
        if len(timeout) != 2:
            raise ValueError(f"timeout must be seconds or a (connect, read) pair, got {timeout!r}")
        connect, read = (
            None if part is None else _check_seconds(part, "timeout", allow_zero=False)
            for part in timeout
        )
        return (connect, read)
    return _check_seconds(timeout, "timeout", allow_zero=False)


class _Expected:
    """The hash a file must have, and how to compute it."""

    def __init__(self, digest: str, factory: HashFactory) -> None:
        self.digest = digest
        self.factory = factory
        self.name = hash_algorithm_name(factory)


def _memo_says_valid(path: str, state: StatePaths, expected: _Expected) -> bool:
    identity = FileIdentity.of(path)
    memo = read_json(state.memo)
    if identity is None or memo is None or not identity.matches(memo.get("file")):
        return False
    hashes = memo.get("hashes")
    return isinstance(hashes, dict) and hashes.get(expected.name) == expected.digest


def _remember(path: str, state: StatePaths, algorithm: str, digest: str) -> None:
    identity = FileIdentity.of(path)
    if identity is None:
        return
    memo = read_json(state.memo)
    hashes: dict[str, str] = {}
    if memo is not None and identity.matches(memo.get("file")):
        old = memo.get("hashes")
        if isinstance(old, dict):
            hashes.update({k: v for k, v in old.items() if isinstance(v, str)})
    hashes[algorithm] = digest
    # Only an optimisation: a read-only cache (a shared mount) cannot keep it.
    with contextlib.suppress(OSError):
        write_json(state.memo, {"file": identity.as_dict(), "hashes": hashes})


def _cache_problem(path: str, state: StatePaths, expected: _Expected | None) -> str | None:
    """None when ``path`` can be served from the cache, else why not ("" when missing).

    Hashes the file at most once per change (the verified digest is remembered).
    """
    if not os.path.isfile(path):
        return ""
    if expected is None or _memo_says_valid(path, state, expected):
        return None
    actual = hash_file(path, expected.factory)
    if actual == expected.digest:
        _remember(path, state, expected.name, actual)
        return None
    return f"the cached {path!r} has {expected.name} {actual}, not the expected {expected.digest}"


_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")


def _untar_names(name: str) -> tuple[str, str]:
    """(stored name, returned name) for ``untar=True``.

    Keras 2 stores ``fname + '.tar.gz'`` and returns ``fname``; a ``fname`` that already
    ends with a tar suffix (``x.tar.gz``) is stored as it is and returns ``x``, as later
    Keras does (Keras 2 stored ``x.tar.gz.tar.gz``).
    """
    lowered = name.lower()
    for suffix in _TAR_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name, name[: -len(suffix)]
    return name + ".tar.gz", name


def _untar_result(result: str, folder: str, state: StatePaths) -> str:
    """The folder ``untar=True`` returns: ``result`` when the archive made it, else the
    single top-level folder it made, else the folder it was extracted into."""
    if os.path.isdir(result):
        return result
    marker = read_json(state.extracted)
    entries = marker.get("entries") if marker is not None else None
    if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], str):
        single = os.path.join(folder, entries[0])
        chosen = single if os.path.isdir(single) else folder
    else:
        chosen = folder
    warn_caller(
        f"untar=True: the archive has no top-level folder {os.path.basename(result)!r}; "
        f"returning {chosen!r}, where its contents are"
    )
    return chosen


def _extraction_current(archive: str, datadir: str, state: StatePaths) -> bool:
    marker = read_json(state.extracted)
    identity = FileIdentity.of(archive)
    if marker is None or identity is None or not identity.matches(marker.get("archive")):
        return False
    entries = marker.get("entries")
    return isinstance(entries, list) and all(
        isinstance(name, str) and os.path.lexists(os.path.join(datadir, name)) for name in entries
    )


def _extract(
    archive: str,
    datadir: str,
    state: StatePaths,
    formats: list[ArchiveFormat],
    archive_format: Any,
    unsafe: str,
) -> None:

    # Under the archive's lock: only this archive's temporary folders whose owner is gone.
    clean_stale_temps(datadir, os.path.basename(archive))
    remove_quietly(state.extracted)
    # The entries come back only once every extracted member is verified in place, so
    # the marker below is never written for a partial extraction.
    entries = extract_to_folder(archive, datadir, formats, unsafe, reserved=(STATE_DIR,))
    if entries is None:
        warn_caller(
            f"extract=True but {archive!r} is not an archive of format {archive_format!r}; "
            "it was left as it is"
        )
        return
    identity = FileIdentity.of(archive)
    if identity is not None:
        write_json(state.extracted, {"archive": identity.as_dict(), "entries": entries})


def get_file(
    fname: str | os.PathLike[str] | None = None,
    origin: str | None = None,
    untar: bool = False,
    md5_hash: str | None = None,
    file_hash: str | None = None,
    cache_subdir: str | os.PathLike[str] = "datasets",
    hash_algorithm: Any = "auto",
    extract: bool = False,
    archive_format: Any = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force_download: bool = False,
    progress: bool | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float | tuple[float | None, float | None] | None = 30.0,
    session: requests.Session | None = None,
    proxies: Mapping[str, str] | None = None,
    verify: bool | str | None = None,
    headers: Mapping[str, str] | None = None,
    offline: bool | None = None,
    lock_timeout: float | None = None,
    unsafe: Literal["raise", "skip"] = "raise",
    max_retry_after: float = 60.0,
) -> str:
    """Download a file from a URL if it is not already in the cache (Keras's ``get_file``).

    The file at ``origin`` lands in ``cache_dir/cache_subdir/fname`` (by default
    ``~/.keras/datasets/fname``) and is not downloaded again while it is there and, when
    a hash is given, valid. Downloads go to a partial file under ``.kio/`` in the same
    folder, resume with HTTP ``Range`` after an interruption, are verified against
    ``file_hash`` as soon as they arrive, and are renamed into place only when complete
    and verified. A lock file makes concurrent processes share one download.

    Args:
        fname: the file's name in the cache, maybe with sub-folders (``"sub/x.bin"``).
            It must stay inside the cache: an absolute path or a ``..`` component is a
            ``ValueError`` (Keras allowed them), as are a trailing ``/``, the reserved
            name ``.kio`` and a name too long for the file system once kio's suffixes
            (``.part.json``...) are added. None (Keras 3) takes the last part of the
            URL's path.
        origin: the URL: ``http://``, ``https://`` or ``file://`` (a regular file).
        untar: deprecated alias of ``extract`` (Keras 2): the file is saved as
            ``fname + '.tar.gz'`` (or as ``fname`` when it already ends with a tar suffix
            such as ``.tar.gz``, which is then left out of the returned name, as later
            Keras does), extracted as tar into the cache folder, and the return value is
            the extracted folder ``cache_dir/cache_subdir/fname``; when the archive has
            no such top-level folder, the folder its contents went to (with a warning).
        md5_hash: deprecated alias of ``file_hash`` with ``hash_algorithm='md5'``.
        file_hash: the expected hex digest, or pooch's ``"sha256:<hex>"`` /
            ``"md5:<hex>"`` spelling. A digest whose length fits no algorithm is refused
            before any request. A download that does not match is removed and raises
            ``ValueError``; a cached file that does not match is downloaded again (as in
            Keras).
        cache_subdir: the folder under ``cache_dir`` (relative, inside the cache: an
            absolute path or ``..`` is a ``ValueError``; ``""`` is the root itself).
        hash_algorithm: ``'auto'`` (by the digest's length: 64 sha256 as in Keras, 32
            md5, 40 sha1, 128 sha512), ``'md5'``, ``'sha256'``, ``'sha1'``,
            ``'sha512'``, a name registered under ``"kio.hash"`` or a callable returning
            a hashlib-like object.
        extract: extract the archive into the folder that holds it
            (``cache_dir/cache_subdir`` for a plain ``fname``, as in Keras 2); the return
            value stays the archive's path. Each top-level entry of the archive replaces
            a same-named entry as a whole. An archive extracted before and unchanged
            since is not extracted again.
        archive_format: ``'auto'`` (``['tar', 'zip']``), ``'tar'`` (tar, tar.gz, tar.bz2,
            tar.xz), ``'zip'``, a name registered under ``"kio.archive"``, a callable, a
            list of those, or None (no extraction).
        cache_dir: the cache root; default ``$KIO_HOME``, else ``$KERAS_HOME``, else
            ``~/.keras``. Created when missing. A cache folder that cannot be written (a
            read-only shared mount) still serves the valid files it holds.
        force_download: download again even when a valid copy is cached (Keras 3).
        progress: show a tqdm progress bar; None (default) shows it when stderr is a
            terminal.
        retries: how many times a failed request is retried (connection errors,
            timeouts, HTTP 429 and 5xx, truncated bodies); other 4xx and TLS errors are
            not retried. Retries resume from the partial file when the server gave a
            strong validator (else they start again from byte 0); a failure after the
            partial file grew starts a new count (at most 50 attempts in all).
        backoff: the first retry waits about ``backoff`` seconds, doubling each time;
            a ``Retry-After`` (seconds or a date) of a 429 or 503 answer is honoured.
        timeout: seconds to wait for the connection and between bytes, as in
            ``requests`` (a float or a ``(connect, read)`` pair).
        session: a ``requests.Session`` to send the requests (auth, adapters, mounts).
        proxies: ``requests``-style proxies; the ``HTTP(S)_PROXY``/``NO_PROXY`` variables
            are honoured without it.
        verify: TLS verification: a bool or a CA bundle path; ``REQUESTS_CA_BUNDLE`` and
            ``CURL_CA_BUNDLE`` are honoured without it.
        headers: extra HTTP headers (e.g. an authorization token). Sent to the origin's
            host only: after a redirect to another origin (scheme, host or port), none of
            them is sent, nor any ``Authorization``, ``Cookie`` or
            ``Proxy-Authorization`` header.
        offline: serve only from the cache and fail fast on a miss; None (default) reads
            ``$KIO_OFFLINE`` (``1``/``true``/``yes``/``on``). ``file://`` origins still work.
        lock_timeout: seconds to wait for another process's download of the same file;
            None waits as long as it takes; past it, ``TimeoutError``.
        unsafe: ``'raise'`` refuses an archive with a member that would land outside the
            cache folder (``..``, absolute path, escaping link, device file);
            ``'skip'`` leaves those members out with a warning.
        max_retry_after: the longest ``Retry-After`` wait (seconds) that kio honours; a
            server asking for more ends the download with ``DownloadError``.

    Returns:
        The path of the downloaded file (with ``untar``: the extracted folder's path).

    Raises:
        ValueError: a missing ``origin``, a bad argument (a name that would leave the
            cache, a malformed hash), a hash mismatch after download (naming the URL,
            the expected and the actual digest), a damaged archive, or an unsafe archive
            member (`kio.UnsafeArchiveError`).
        TypeError: an argument of the wrong type.
        kio.DownloadError: the download failed for good (an ``OSError`` naming the URL
            and the last HTTP status).
        kio.OfflineError: offline mode and no valid cached copy (also a
            ``FileNotFoundError``); names the URL and the expected path.
        FileNotFoundError: a ``file://`` origin that does not exist.
        IsADirectoryError: a ``file://`` origin that is a folder.
        PermissionError: ``cache_dir`` cannot be created, or the file must be fetched
            into a cache folder where kio cannot write.
        TimeoutError: ``lock_timeout`` passed while another process held the file's lock.

    Examples:
        >>> import hashlib, pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     source = pathlib.Path(tmp, "data.csv")
        ...     _ = source.write_bytes(b"a,b\\n1,2\\n")
        ...     digest = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
        ...     path = get_file(origin=source.as_uri(), file_hash=digest,
        ...                     cache_dir=pathlib.Path(tmp, "cache"))
        ...     print(pathlib.Path(path).relative_to(tmp))
        cache/datasets/data.csv
    """
    try:
        origin = _check_origin(origin, session)
        name = _check_fname(fname, origin)
        if unsafe not in ("raise", "skip"):
            raise ValueError(f"unsafe must be 'raise' or 'skip', got {unsafe!r}")
        retries = check_int(retries, "retries", 0)
        backoff = _check_seconds(backoff, "backoff", allow_zero=True)
        checked_timeout = _check_timeout(timeout)
        if lock_timeout is not None:
            lock_timeout = _check_seconds(lock_timeout, "lock_timeout", allow_zero=True)
        max_retry_after = _check_seconds(max_retry_after, "max_retry_after", allow_zero=True)
        hash_argument = "file_hash"
        if md5_hash is not None:
            warnings.warn(
                "md5_hash is deprecated: use file_hash (with hash_algorithm='md5')",
                DeprecationWarning,
                stacklevel=2,
            )
            if file_hash is None:
                file_hash, hash_algorithm, hash_argument = md5_hash, "md5", "md5_hash"
        if untar:
            warnings.warn("untar is deprecated: use extract=True", DeprecationWarning, stacklevel=2)
        expected: _Expected | None = None
        if file_hash is not None:
            # Refused here, before any request: a digest that no algorithm could produce.
            expected = _Expected(*resolve_expected(file_hash, hash_algorithm, hash_argument))
        formats: list[ArchiveFormat] = []
        if untar:
            formats = _resolve_formats("tar")
        elif extract:
            formats = _resolve_formats(archive_format)

        subdir = check_cache_subdir(cache_subdir)
        root = os.path.expanduser(os.fspath(cache_dir)) if cache_dir is not None else None
        stored, returned = _untar_names(name) if untar else (name, name)
        stored = check_stored_name(
            stored,
            "fname",
            os.path.join(root or default_cache_dir(), subdir),
            extracting=bool(formats),
        )
    except (TypeError, ValueError) as exc:
        # Marked for the command line, which reports bad arguments as usage errors.
        exc.kio_bad_argument = True  # type: ignore[union-attr]
        raise
    datadir = prepare_datadir(root, subdir)
    target = os.path.join(datadir, stored)
    result = target[: len(target) - (len(stored) - len(returned))] if untar else target
    target_dir = os.path.dirname(target)
    if not os.path.isdir(target_dir):
        try:
            os.makedirs(target_dir, exist_ok=True)
        except OSError as exc:
            raise PermissionError(
                f"fname={fname!r}: cannot create the folder {target_dir!r} in the cache ({exc})"
            ) from None
    state = StatePaths(target)
    wants_extraction = bool(formats)

    def done() -> str:
        return _untar_result(result, target_dir, state) if untar else result

    # Fast path, without the lock: a complete file only ever appears by rename, so a file
    # at `target` whose verified digest is remembered can be served at once.
    if (
        not force_download
        and os.path.isfile(target)
        and (expected is None or _memo_says_valid(target, state, expected))
        and (not wants_extraction or _extraction_current(target, target_dir, state))
    ):
        return done()

    is_local = origin.lower().startswith("file:")
    if is_offline(offline) and not is_local:
        where = f"offline mode (${ENV_OFFLINE} or offline=True): cannot fetch {origin} to {target}"
        if force_download:
            raise OfflineError(
                f"{where}: force_download=True needs the network", url=origin, path=target
            )
        problem = _cache_problem(target, state, expected)
        if problem is not None:
            reason = problem or "no copy is cached"
            raise OfflineError(f"{where}: {reason}", url=origin, path=target)
        if not wants_extraction or _extraction_current(target, target_dir, state):
            return done()
    if is_local:
        local_path_of(origin)  # validate early: a bad file:// URL is a ValueError

    options = FetchOptions(
        retries=retries,
        backoff=backoff,
        timeout=checked_timeout,
        session=session,
        proxies=proxies,
        verify=verify,
        headers=dict(headers or {}),
        progress=wants_progress(progress),
        max_retry_after=max_retry_after,
    )
    lock = filelock.FileLock(state.lock, timeout=-1 if lock_timeout is None else lock_timeout)
    try:
        state.ensure_folder()
        lock.acquire()
    except filelock.Timeout:
        raise TimeoutError(
            f"lock_timeout={lock_timeout}: another process still holds the lock {state.lock!r} "
            f"while it fetches {origin} to {target}"
        ) from None
    except OSError as exc:
        # No lock can be taken: a read-only cache folder (a shared dataset mount). A valid
        # copy is served as it is; nothing can be downloaded or extracted there.
        problem = None if force_download else _cache_problem(target, state, expected)
        where = f"cannot take the lock {state.lock!r} to fetch {origin} to {target} ({exc})"
        if force_download:
            raise PermissionError(
                f"{where}; force_download=True needs a cache folder kio can write "
                "(pass a writable cache_dir)"
            ) from None
        if problem is None:
            if not wants_extraction or _extraction_current(target, target_dir, state):
                logger.info("serving %s from a cache folder kio cannot lock (%s)", target, exc)
                return done()
            problem = "the archive is not extracted there"
        raise PermissionError(
            f"{where}; {problem or 'no copy is cached'}, so there is nothing valid to serve "
            "(pass a writable cache_dir)"
        ) from None
    try:
        problem = None if force_download else _cache_problem(target, state, expected)
        if force_download or problem is not None:
            if problem:
                warn_caller(f"{problem}: downloading it again")
            if force_download:
                remove_quietly(state.part)
                remove_quietly(state.part_meta)
            _download(origin, target, state, options, expected)
        if wants_extraction and not _extraction_current(target, target_dir, state):
            _extract(target, target_dir, state, formats, archive_format, unsafe)
    finally:
        lock.release()
    return done()


def _download(
    origin: str,
    target: str,
    state: StatePaths,
    options: FetchOptions,
    expected: _Expected | None,
) -> None:
    factory = expected.factory if expected is not None else None
    fetched = fetch(origin, state, options, factory, os.path.basename(target))
    if expected is not None and fetched.digest != expected.digest and fetched.resumed:
        # The hash is the final judge: bytes resumed from an earlier attempt may belong to
        # another version of the file. One more try, whole.
        logger.info(
            "the resumed download of %s has %s %s, not %s: fetching it whole again",
            origin,
            expected.name,
            fetched.digest,
            expected.digest,
        )
        remove_quietly(state.part_meta)
        remove_quietly(state.part)
        fetched = fetch(origin, state, options, factory, os.path.basename(target))
    digest = fetched.digest
    if expected is not None and digest != expected.digest:
        remove_quietly(state.part)
        remove_quietly(state.part_meta)
        raise ValueError(
            f"the file downloaded from {origin} does not have the expected {expected.name} "
            f"hash: expected {expected.digest}, got {digest}; the download was removed"
        )
    os.replace(state.part, target)
    remove_quietly(state.part_meta)
    if expected is not None and digest is not None:
        _remember(target, state, expected.name, digest)
    else:
        remove_quietly(state.memo)
