"""kio: `get_file` with Keras's arguments and cache layout, and a download people can trust.

Part of the k* family, a PyTorch-native port of `keras.utils` (kio needs no torch).
Downloads are cached, verified right after they arrive, resumable, atomic, shared between
processes by a lock, retried on transient errors, and extracted safely. What a user may
want to see is logged to `logging.getLogger("kio")` (silent by default). A `kio` command
(also `python -m kio`) downloads a file and prints its path.

Example:
    >>> import hashlib, pathlib, tempfile
    >>> import kio
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     source = pathlib.Path(tmp, "data.csv")
    ...     _ = source.write_bytes(b"x,y")
    ...     sha = hashlib.sha256(b"x,y").hexdigest()
    ...     path = kio.get_file(origin=source.as_uri(), file_hash=sha,
    ...                         cache_dir=pathlib.Path(tmp, "cache"))
    ...     print(pathlib.Path(path).read_bytes())
    b'x,y'
"""

from importlib import metadata as _metadata

from kio._archive import UnsafeArchiveError, extract_archive
from kio._cache import default_cache_dir
from kio._errors import DownloadError, OfflineError
from kio._get_file import get_file
from kio._hashing import hash_file, validate_file

__version__ = _metadata.version("kutorch-kio")

__all__ = [
    "get_file",
    "extract_archive",
    "hash_file",
    "validate_file",
    "default_cache_dir",
    "DownloadError",
    "OfflineError",
    "UnsafeArchiveError",
]
