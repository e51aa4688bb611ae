"""Where the cache lives: the default root, the environment variables, offline mode,
and the names that may be stored in it."""

from __future__ import annotations

import contextlib
import os
import tempfile

from kio._log import warn_caller
from kio._state import STATE_DIR, TEMP_PREFIX

__all__ = [
    "default_cache_dir",
    "is_offline",
    "prepare_datadir",
    "check_cache_subdir",
    "check_stored_name",
    "ENV_HOME",
    "ENV_OFFLINE",
]

# Bytes that kio appends to a stored name for its side files (".part.json",
# ".extracted.json", extraction temporaries): a name must leave room for them.
SIDE_SUFFIX_BYTES = 15
EXTRACT_SUFFIX_BYTES = 32

ENV_HOME = "KIO_HOME"
ENV_OFFLINE = "KIO_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}


def default_cache_dir() -> str:
    """The cache root used when ``get_file`` is given no ``cache_dir``.

    ``$KIO_HOME`` when set, else ``$KERAS_HOME`` (so a Keras cache is shared), else
    ``~/.keras`` as in Keras.

    Returns:
        The path, with ``~`` expanded.

    Examples:
        >>> import os
        >>> saved = os.environ.get("KIO_HOME")
        >>> os.environ["KIO_HOME"] = "/data/cache"
        >>> try:
        ...     print(default_cache_dir())
        ... finally:
        ...     if saved is None:
        ...         del os.environ["KIO_HOME"]
        ...     else:
        ...         os.environ["KIO_HOME"] = saved
        /data/cache
    """
    for variable in (ENV_HOME, "KERAS_HOME"):
        value = os.environ.get(variable)
        if value:
            return os.path.expanduser(value)
    return os.path.join(os.path.expanduser("~"), ".keras")


def is_offline(offline: bool | None) -> bool:
    """``offline`` as given, or (None) whether ``$KIO_OFFLINE`` is set to a true value."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in _TRUE


def _parts(value: str) -> list[str]:
    seps = os.sep + (os.altsep or "")
    parts = [value]
    for sep in seps:
        parts = [piece for part in parts for piece in part.split(sep)]
    return parts


def _limit(folder: str, name: str, default: int) -> int:
    """``os.pathconf`` of the nearest existing folder at or above ``folder``."""
    probe = os.path.abspath(folder)
    while True:
        with contextlib.suppress(OSError, ValueError):
            return int(os.pathconf(probe, name))
        parent = os.path.dirname(probe)
        if parent == probe:
            return default
        probe = parent


def _check_inside(value: str, argument: str) -> list[str]:
    """The components of a relative path that stays inside the cache, else ValueError."""
    if os.path.isabs(value) or value.startswith("~") or os.path.splitdrive(value)[0]:
        raise ValueError(
            f"{argument} must be a path relative to the cache (kio never writes outside "
            f"cache_dir; pass cache_dir to choose the folder), got {value!r}"
        )
    parts = [part for part in _parts(value) if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise ValueError(
                f"{argument} must stay inside the cache folder (no '..' component), got {value!r}"
            )
        # Refusing the temporaries' prefix keeps the stale-temporary cleanup away from
        # the user's files.
        if part == STATE_DIR or part.startswith(TEMP_PREFIX):
            raise ValueError(
                f"{argument} must not use the name {part!r}: kio keeps its own state "
                f"there ({STATE_DIR!r} and {TEMP_PREFIX!r}... are reserved), got {value!r}"
            )
        if "\0" in part:
            raise ValueError(f"{argument} must not contain a NUL character, got {value!r}")
    return parts


def check_cache_subdir(cache_subdir: object) -> str:
    """``cache_subdir`` as a str relative to the cache root ("" for the root itself).

    Raises:
        TypeError: not a str or path.
        ValueError: absolute, ``~``, a ``..`` component or a name kio reserves.
    """
    if not isinstance(cache_subdir, (str, os.PathLike)):
        raise TypeError(
            f"cache_subdir must be a str or a path, got {cache_subdir!r} "
            f"({type(cache_subdir).__name__})"
        )
    value = os.fspath(cache_subdir)
    if not isinstance(value, str):
        raise TypeError(f"cache_subdir must be a str path, got {cache_subdir!r}")
    return os.path.join(*_check_inside(value, "cache_subdir")) if value.strip() else ""


def check_stored_name(name: str, argument: str, datadir: str, *, extracting: bool) -> str:
    """``name`` (a file name, maybe with sub-folders) normalized, if kio can store it.

    Raises:
        ValueError: it leaves the cache, ends with a separator, is empty, uses a name kio
            reserves, or is too long for the file system once kio's suffixes are added.
    """
    if name.endswith(os.sep) or (os.altsep and name.endswith(os.altsep)):
        raise ValueError(f"{argument} must name a file, not a folder (trailing '/'), got {name!r}")
    parts = _check_inside(name, argument)
    if not parts:
        raise ValueError(f"{argument} must name a file, got {name!r}")
    limit = _limit(datadir, "PC_NAME_MAX", 255)
    reserve = EXTRACT_SUFFIX_BYTES if extracting else SIDE_SUFFIX_BYTES
    for index, part in enumerate(parts):
        size = len(os.fsencode(part))
        room = limit - reserve if index == len(parts) - 1 else limit
        if size > room:
            raise ValueError(
                f"{argument} is too long to store: {part[:40]!r}... has {size} bytes, and "
                f"the file system allows {limit} per name, of which kio needs {reserve} for "
                f"its side files; use a name of at most {room} bytes"
            )
    # The longest path kio writes: DIR/.kio/NAME + suffix (DIR holds the file).
    longest = os.path.join(os.path.abspath(datadir), *parts[:-1], STATE_DIR, parts[-1])
    path_max = _limit(datadir, "PC_PATH_MAX", 4096)
    if len(os.fsencode(longest)) + reserve >= path_max:
        raise ValueError(
            f"{argument} is too long to store: with the cache folder, kio's side files "
            f"would have paths of {len(os.fsencode(longest)) + reserve} bytes, and the "
            f"file system allows {path_max - 1}; got {name[:40]!r}..."
        )
    return os.path.join(*parts)


def prepare_datadir(cache_dir: str | None, cache_subdir: str) -> str:
    """Create (when missing) and return ``cache_dir/cache_subdir``.

    ``cache_subdir`` was checked by `check_cache_subdir`. A folder that exists but cannot
    be written is returned as it is: a valid cached file there (a read-only shared mount)
    is still served. A ``cache_dir`` given explicitly that cannot be created raises
    ``PermissionError`` (nothing is written elsewhere); the default root falls back to
    the temporary folder with a warning, as Keras does.
    """
    explicit = cache_dir is not None
    root = os.path.expanduser(cache_dir) if cache_dir is not None else default_cache_dir()
    datadir = os.path.join(root, cache_subdir) if cache_subdir else root
    if os.path.isdir(datadir):
        return datadir
    try:
        os.makedirs(datadir, exist_ok=True)
    except OSError as exc:
        if explicit:
            raise PermissionError(
                f"cache_dir={cache_dir!r}, cache_subdir={cache_subdir!r}: cannot create or "
                f"write the folder {datadir!r} ({exc})"
            ) from None
        fallback = os.path.join(tempfile.gettempdir(), ".keras")
        warn_caller(
            f"the default cache folder {root!r} cannot be created ({exc}); using "
            f"{fallback!r} (set ${ENV_HOME} to choose another)"
        )
        datadir = os.path.join(fallback, cache_subdir) if cache_subdir else fallback
        os.makedirs(datadir, exist_ok=True)
    return datadir
