"""Hash algorithms by name (through kregistry) and hashing files.

A hash algorithm is any callable that takes no argument and returns a fresh object with
``update(bytes)`` and ``hexdigest()``, the interface of :mod:`hashlib`. The built-ins are
registered as ``"kio.hash>md5"``, ``"kio.hash>sha1"``, ``"kio.hash>sha256"`` and
``"kio.hash>sha512"``; register your own with
``kregistry.register("name", package="kio.hash")``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, Protocol

import kregistry

__all__ = [
    "Hasher",
    "HashFactory",
    "HASH_NAMESPACE",
    "resolve_hash_algorithm",
    "hash_algorithm_name",
    "hash_file",
    "normalize_hash",
    "validate_file",
]

HASH_NAMESPACE = "kio.hash"
_CHUNK = 1 << 20
_HEX = "0123456789abcdef"


class Hasher(Protocol):
    """What a hash algorithm returns: the incremental interface of :mod:`hashlib`."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


HashFactory = Callable[[], Hasher]


def md5() -> Hasher:
    """MD5, as Keras uses for 32-character hashes (not a security guarantee)."""
    return hashlib.md5(usedforsecurity=False)


def sha1() -> Hasher:
    """SHA-1, picked by ``'auto'`` for a 40-character hash."""
    return hashlib.sha1(usedforsecurity=False)


def sha256() -> Hasher:
    """SHA-256, picked by ``'auto'`` for a 64-character hash (as in Keras)."""
    return hashlib.sha256()


def sha512() -> Hasher:
    """SHA-512, picked by ``'auto'`` for a 128-character hash."""
    return hashlib.sha512()


_BUILTINS: dict[str, HashFactory] = {
    "md5": md5,
    "sha1": sha1,
    "sha256": sha256,
    "sha512": sha512,
}
# Keras picks sha256 for 64 hex characters and md5 for anything else; the other lengths
# below could never match an md5 digest, so choosing by length only turns certain
# failures into working checks.
_AUTO_BY_LENGTH = {40: "sha1", 64: "sha256", 128: "sha512"}


def register_builtins() -> None:
    """File the built-in algorithms in the registry (idempotent)."""
    for name, factory in _BUILTINS.items():
        kregistry.register(name=name, package=HASH_NAMESPACE)(factory)


register_builtins()


def normalize_hash(file_hash: object, argument: str = "file_hash") -> str:
    """Check that ``file_hash`` is a hex digest str; return it stripped and lower-cased.

    Raises:
        TypeError: ``file_hash`` is not a str.
        ValueError: it is empty or holds a character that is not a hex digit.
    """
    if not isinstance(file_hash, str):
        raise TypeError(
            f"{argument} must be a hex digest str, got {file_hash!r} ({type(file_hash).__name__})"
        )
    value = file_hash.strip().lower()
    # Checked before any download: a digest with a prefix ("sha256:...") or a typo could
    # never match a hexdigest, and would only be found out after the whole transfer.
    if not value or value.strip(_HEX):
        raise ValueError(f"{argument} must be a non-empty hex digest (0-9, a-f), got {file_hash!r}")
    return value


def resolve_hash_algorithm(algorithm: Any, file_hash: str | None = None) -> HashFactory:
    """Turn ``hash_algorithm`` (a name, ``'auto'`` or a factory) into a hash factory.

    Args:
        algorithm: ``'auto'``, a registered name (``'md5'``, ``'sha256'``, ...) or a
            callable returning a hashlib-like object.
        file_hash: the expected digest, used by ``'auto'``: 64 hex characters pick sha256
            (as in Keras), 128 sha512, 40 sha1, anything else md5.

    Returns:
        A callable that returns a fresh hasher.

    Raises:
        kregistry.UnknownObjectError: an unknown name (a ``ValueError``), listing close
            matches.
        TypeError: ``algorithm`` is neither a str nor a callable.

    Examples:
        >>> resolve_hash_algorithm("auto", "0" * 64)().name
        'sha256'
    """
    if algorithm == "auto":
        length = len(file_hash) if file_hash is not None else 64
        algorithm = _AUTO_BY_LENGTH.get(length, "md5")
    if isinstance(algorithm, str):
        # Lower-case so "SHA256" (a common spelling) works; users' names are tried as given.
        candidates = [algorithm]
        if algorithm != algorithm.lower():
            candidates.append(algorithm.lower())
        for index, name in enumerate(candidates):
            try:
                factory: HashFactory = kregistry.resolve(
                    name, kind="hash algorithm", namespace=HASH_NAMESPACE, module_objects=_BUILTINS
                )
                return factory
            except kregistry.UnknownObjectError:
                if index == len(candidates) - 1:
                    raise
    factory = kregistry.resolve(algorithm, kind="hash algorithm", namespace=HASH_NAMESPACE)
    return factory


def hash_algorithm_name(factory: HashFactory) -> str:
    """A stable name for ``factory``, used as the key of remembered digests."""
    for name, builtin in _BUILTINS.items():
        if factory is builtin:
            return name
    return kregistry.get_registered_name(factory)


def hash_file(
    path: str | os.PathLike[str], algorithm: Any = "sha256", chunk_size: int = _CHUNK
) -> str:
    """Return the hex digest of the file at ``path``.

    Args:
        path: the file to read.
        algorithm: a registered name or a hash factory (``'auto'`` means sha256 here).
        chunk_size: bytes read at a time.

    Returns:
        The lower-case hex digest.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown algorithm name (:class:`kregistry.UnknownObjectError`),
            or a ``chunk_size`` below 1.
        TypeError: ``algorithm`` is neither a str nor a callable.

    Examples:
        >>> hash_file("/dev/null", "md5")
        'd41d8cd98f00b204e9800998ecf8427e'
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        # A zero-sized buffer would read nothing and return the digest of empty input.
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    factory = resolve_hash_algorithm(algorithm)
    hasher = factory()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            hasher.update(view[:count])
    return hasher.hexdigest().lower()


def validate_file(
    fpath: str | os.PathLike[str],
    file_hash: str,
    algorithm: Any = "auto",
    chunk_size: int = 65535,
) -> bool:
    """Whether the file at ``fpath`` has the digest ``file_hash`` (Keras's ``validate_file``).

    Args:
        fpath: the file to check.
        file_hash: the expected hex digest.
        algorithm: ``'auto'``, a registered name or a hash factory.
        chunk_size: bytes read at a time.

    Returns:
        True when the digests match (case-insensitive).

    Raises:
        ValueError: ``file_hash`` is not a hex digest, or ``algorithm`` is an unknown
            name (:class:`kregistry.UnknownObjectError`).
        TypeError: ``file_hash`` is not a str, or ``algorithm`` is neither a str nor a
            callable.
        FileNotFoundError: ``fpath`` does not exist.

    Examples:
        >>> validate_file("/dev/null", "d41d8cd98f00b204e9800998ecf8427e")
        True
    """
    expected = normalize_hash(file_hash)
    factory = resolve_hash_algorithm(algorithm, expected)
    return hash_file(fpath, factory, chunk_size=max(chunk_size, 1)) == expected
