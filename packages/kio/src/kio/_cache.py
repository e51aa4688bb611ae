"""Where the cache lives: the default root, the environment variables, offline mode."""

from __future__ import annotations

import os
import tempfile
import warnings

__all__ = ["default_cache_dir", "is_offline", "prepare_datadir", "ENV_HOME", "ENV_OFFLINE"]

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
        >>> os.environ["KIO_HOME"] = "/data/cache"
        >>> default_cache_dir()
        '/data/cache'
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


def prepare_datadir(cache_dir: str | None, cache_subdir: str) -> str:
    """Create and return ``cache_dir/cache_subdir`` (an absolute ``cache_subdir`` wins).

    A ``cache_dir`` given explicitly that cannot be created raises ``PermissionError``
    (nothing is written elsewhere); the default root falls back to the temporary folder
    with a warning, as Keras does.
    """
    explicit = cache_dir is not None
    root = os.path.expanduser(cache_dir) if cache_dir is not None else default_cache_dir()
    datadir = os.path.join(root, os.path.expanduser(cache_subdir))
    try:
        os.makedirs(datadir, exist_ok=True)
        if not os.access(datadir, os.W_OK):
            raise PermissionError(f"{datadir!r} is not writable")
    except OSError as exc:
        if explicit or os.path.isabs(os.path.expanduser(cache_subdir)):
            raise PermissionError(
                f"cache_dir={cache_dir!r}, cache_subdir={cache_subdir!r}: cannot create or "
                f"write the folder {datadir!r} ({exc})"
            ) from None
        fallback = os.path.join(tempfile.gettempdir(), ".keras")
        warnings.warn(
            f"the default cache folder {root!r} is not writable ({exc}); using {fallback!r} "
            f"(set ${ENV_HOME} to choose another)",
            UserWarning,
            stacklevel=3,
        )
        datadir = os.path.join(fallback, cache_subdir)
        os.makedirs(datadir, exist_ok=True)
    return datadir
