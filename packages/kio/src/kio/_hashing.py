"""Hash algorithms by name (through kregistry) and hashing files.

A hash algorithm is any callable that takes no argument and returns a fresh object with
``update(bytes)`` and ``hexdigest()``, the interface of `hashlib`. The built-ins
(``"md5"``, ``"sha1"``, ``"sha256"``, ``"sha512"``) are kio's module objects: they are
not stored in the user's custom objects, so they resolve even after
``kregistry.get_custom_objects().clear()``. Register your own with
``kregistry.register(package="kio.hash", name="name")``; a user's object of a built-in's
name wins over the built-in.

Expected digests may carry their algorithm as a prefix, as pooch writes them:
``"sha256:<hex>"``, ``"md5:<hex>"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, Protocol

import kregistry
from kio._checks import check_int

__all__ = [
    "Hasher",
    "HashFactory",
    "HASH_NAMESPACE",
    "resolve_hash_algorithm",
    "hash_algorithm_name",
    "hash_file",
    "parse_hash",
    "check_digest_length",
    "resolve_expected",
    "validate_file",
]

HASH_NAMESPACE = "kio.hash"
_CHUNK = 1 << 20
_HEX = "0123456789abcdef"


class Hasher(Protocol):
    """What a hash algorithm returns: the incremental interface of `hashlib`."""

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


BUILTINS: dict[str, HashFactory] = {
    "md5": md5,
    "sha1": sha1,
    "sha256": sha256,
    "sha512": sha512,
}
# Keras picks sha256 for 64 hex characters and md5 for anything else; the other lengths
# below could never match an md5 digest, so choosing by length only turns certain
# failures into working checks.
_AUTO_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
_ACCEPTED = "a hex digest of 32 (md5), 40 (sha1), 64 (sha256) or 128 (sha512) digits"


def parse_hash(file_hash: object, argument: str = "file_hash") -> tuple[str | None, str]:
    """Split ``file_hash`` into its algorithm prefix (or None) and its hex digest.

    Accepts a bare hex digest and pooch's ``"<algorithm>:<hex>"`` spelling; the digest
    comes back stripped and lower-cased.

    Args:
        file_hash: the expected digest, as a user wrote it.
        argument: the argument's name, for error messages.

    Returns:
        ``(algorithm, digest)``; ``algorithm`` is None without a prefix.

    Raises:
        TypeError: ``file_hash`` is not a str.
        ValueError: the digest is empty or holds a character that is not a hex digit.

    Examples:
        >>> parse_hash("SHA256:ABC1")
        ('sha256', 'abc1')
    """
    if not isinstance(file_hash, str):
        raise TypeError(
            f"{argument} must be a hex digest str, got {file_hash!r} ({type(file_hash).__name__})"
        )
    value = file_hash.strip()
    algorithm: str | None = None
    if ":" in value:
        prefix, _, value = value.partition(":")
        algorithm = prefix.strip().lower()
        value = value.strip()
        if not algorithm:
            raise ValueError(
                f"{argument} must be a hex digest or '<algorithm>:<hex digest>', got {file_hash!r}"
            )
    value = value.lower()
    # Checked before any download: a typo could never match a hexdigest, and would only
    # be found out after the whole transfer.
    if not value or value.strip(_HEX):
        raise ValueError(
            f"{argument} must be a non-empty hex digest (0-9, a-f), optionally prefixed "
            f"'<algorithm>:' as in 'sha256:<hex>', got {file_hash!r}"
        )
    return algorithm, value


def _digest_length(factory: HashFactory) -> int | None:
    """How many hex digits ``factory``'s digests have, or None when it cannot tell."""
    for name, builtin in BUILTINS.items():
        if factory is builtin:
            return {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}[name]
    try:
        return len(factory().hexdigest())
    except Exception:  # a user's algorithm that cannot report it: checked after download
        return None


def check_digest_length(
    digest: str, factory: HashFactory, name: str, argument: str = "file_hash"
) -> None:
    """Refuse a digest whose length the algorithm can never produce (before any request).

    Raises:
        ValueError: the lengths differ; names both.
    """
    length = _digest_length(factory)
    if length is not None and len(digest) != length:
        raise ValueError(
            f"{argument} has {len(digest)} hex digits but {name} digests have {length}, "
            f"got {digest!r}"
        )


def resolve_hash_algorithm(algorithm: Any, file_hash: str | None = None) -> HashFactory:
    """Turn ``hash_algorithm`` (a name, ``'auto'`` or a factory) into a hash factory.

    Args:
        algorithm: ``'auto'``, a name (``'md5'``, ``'sha256'``, ..., or one registered
            under ``"kio.hash"``) or a callable returning a hashlib-like object.
        file_hash: the expected digest, used by ``'auto'``: 64 hex characters pick sha256
            (as in Keras), 32 md5, 128 sha512, 40 sha1.

    Returns:
        A callable that returns a fresh hasher.

    Raises:
        kregistry.UnknownObjectError: an unknown name (a `ValueError`), listing close
            matches.
        ValueError: ``'auto'`` with a digest whose length fits no algorithm.
        TypeError: ``algorithm`` is neither a str nor a callable.

    Examples:
        >>> resolve_hash_algorithm("auto", "0" * 64)().name
        'sha256'
    """
    if isinstance(algorithm, str) and algorithm.lower() == "auto":
        length = len(file_hash) if file_hash is not None else 64
        if length not in _AUTO_BY_LENGTH:
            raise ValueError(
                f"file_hash must be {_ACCEPTED} with hash_algorithm='auto', got "
                f"{length} digits ({file_hash!r}); pass hash_algorithm for another algorithm"
            )
        algorithm = _AUTO_BY_LENGTH[length]
    if isinstance(algorithm, str):
        # Lower-case so "SHA256" (a common spelling) works; users' names are tried as given.
        candidates = [algorithm]
        if algorithm != algorithm.lower():
            candidates.append(algorithm.lower())
        for index, name in enumerate(candidates):
            try:
                factory: HashFactory = kregistry.resolve(
                    name, kind="hash algorithm", namespace=HASH_NAMESPACE, module_objects=BUILTINS
                )
                return factory
            except kregistry.UnknownObjectError:
                if index == len(candidates) - 1:
                    raise
    factory = kregistry.resolve(algorithm, kind="hash algorithm", namespace=HASH_NAMESPACE)
    return factory


def hash_algorithm_name(factory: HashFactory) -> str:
    """A stable name for ``factory``, used as the key of remembered digests."""
    for name, builtin in BUILTINS.items():
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
        ValueError: an unknown algorithm name (`kregistry.UnknownObjectError`), or a
            ``chunk_size`` below 1.
        TypeError: ``algorithm`` is neither a str nor a callable.

    Examples:
        >>> hash_file("/dev/null", "md5")
        'd41d8cd98f00b204e9800998ecf8427e'
    """
    # At least 1: a zero-sized buffer would read nothing and give the empty digest.
    size = check_int(chunk_size, "chunk_size", 1)
    factory = resolve_hash_algorithm(algorithm)
    hasher = factory()
    buffer = bytearray(size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            hasher.update(view[:count])
    return hasher.hexdigest().lower()


def resolve_expected(
    file_hash: object, algorithm: Any = "auto", argument: str = "file_hash"
) -> tuple[str, HashFactory]:
    """Check ``file_hash`` against ``algorithm`` at once; return (digest, factory).

    Raises:
        TypeError: ``file_hash`` is not a str or ``algorithm`` not a str or callable.
        ValueError: not a hex digest, a prefix that disagrees with ``algorithm``, or a
            length that the algorithm can never produce.
    """
    prefix, digest = parse_hash(file_hash, argument)
    if prefix is not None:
        if not (isinstance(algorithm, str) and algorithm.lower() in ("auto", prefix)):
            raise ValueError(
                f"{argument}={file_hash!r} names the algorithm {prefix!r} but "
                f"hash_algorithm={algorithm!r}; pass one or the other"
            )
        algorithm = prefix
    factory = resolve_hash_algorithm(algorithm, digest)
    check_digest_length(digest, factory, hash_algorithm_name(factory), argument)
    return digest, factory


def validate_file(
    fpath: str | os.PathLike[str],
    file_hash: str,
    algorithm: Any = "auto",
    chunk_size: int = 65535,
) -> bool:
    """Whether the file at ``fpath`` has the digest ``file_hash`` (Keras's ``validate_file``).

    Args:
        fpath: the file to check.
        file_hash: the expected hex digest (``"sha256:<hex>"`` is accepted too).
        algorithm: ``'auto'``, a registered name or a hash factory.
        chunk_size: bytes read at a time.

    Returns:
        True when the digests match (case-insensitive).

    Raises:
        ValueError: ``file_hash`` is not a hex digest (or has a length the algorithm
            cannot produce), or ``algorithm`` is an unknown name
            (`kregistry.UnknownObjectError`).
        TypeError: ``file_hash`` is not a str, or ``algorithm`` is neither a str nor a
            callable.
        FileNotFoundError: ``fpath`` does not exist.

    Examples:
        >>> validate_file("/dev/null", "d41d8cd98f00b204e9800998ecf8427e")
        True
    """
    expected, factory = resolve_expected(file_hash, algorithm)
    return hash_file(fpath, factory, chunk_size=chunk_size) == expected
