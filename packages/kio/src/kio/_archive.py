"""Archive formats by name (through kregistry) and safe extraction.

An archive format is a callable ``fmt(path, target, unsafe) -> bool``: it returns False
when the file at ``path`` is not in its format, else extracts it into the (new, empty)
folder ``target`` and returns True. ``unsafe`` is ``"raise"`` or ``"skip"``, what to do
with a member that would land outside ``target``. The built-ins are registered as
``"kio.archive>tar"`` (tar, tar.gz, tar.bz2, tar.xz) and ``"kio.archive>zip"``.

Extraction always goes to a hidden temporary folder inside the destination; whatever a
format wrote is audited there (no symlink may resolve outside it, no device file or
FIFO), and only then are the top-level entries renamed into place. An interrupted
extraction leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import kregistry

__all__ = [
    "ARCHIVE_NAMESPACE",
    "ArchiveFormat",
    "UnsafeArchiveError",
    "extract_archive",
    "extract_to_folder",
    "resolve_archive_formats",
    "tar_format",
    "zip_format",
]

ARCHIVE_NAMESPACE = "kio.archive"
Unsafe = Literal["raise", "skip"]
ArchiveFormat = Callable[[str, str, str], bool]
TEMP_PREFIX = ".kio-extract-"


class UnsafeArchiveError(ValueError):
    """An archive member that would be written outside the extraction folder.

    Attributes:
        archive: the archive's path.
        member: the member's name in the archive.
        reason: why it is refused.
    """

    def __init__(self, archive: str, member: str, reason: str) -> None:
        super().__init__(
            f"refusing to extract {archive!r}: member {member!r} {reason}; nothing was "
            f"extracted (pass unsafe='skip' to leave such members out with a warning)"
        )
        self.archive = archive
        self.member = member
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # So that the error survives the trip back from a worker process.
        return (type(self), (self.archive, self.member, self.reason))


def _refuse(archive: str, member: str, reason: str, unsafe: str) -> None:
    if unsafe == "skip":
        warnings.warn(
            f"skipping unsafe member {member!r} of {archive!r}: {reason}",
            UserWarning,
            stacklevel=4,
        )
        return
    raise UnsafeArchiveError(archive, member, reason)


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _lexical_problem(name: str) -> str | None:
    """Why a member name is unsafe on its own (absolute, drive, climbing out), else None."""
    if not name:
        return "has an empty name"
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return "has an absolute path"
    normal = posixpath.normpath(unified)
    if normal == ".." or normal.startswith("../"):
        return "points outside the target folder (..)"
    return None


class _TarGuard:
    """Checks each tar member just before it is written (so the checks see the files and
    links already extracted), and strips what the stdlib's ``data`` filter strips."""

    def __init__(self, archive: str, target: str, unsafe: str) -> None:
        self.archive = archive
        self.root = os.path.realpath(target)
        self.unsafe = unsafe
        # While no symlink has been written, no path component can redirect a write, so a
        # lexical check is exact and much cheaper than realpath on every member.
        self.links_written = False

    def _resolved(self, relative: str) -> str:
        joined = os.path.join(self.root, relative)
        return os.path.realpath(joined) if self.links_written else os.path.normpath(joined)

    def problem(self, member: tarfile.TarInfo) -> str | None:
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            return "is a device file, FIFO or other special file"
        reason = _lexical_problem(member.name)
        if reason is not None:
            return reason
        if not _is_within(self._resolved(member.name), self.root):
            return "would be written through a link outside the target folder"
        if member.issym() or member.islnk():
            link = member.linkname
            if not link or link.startswith("/") or (len(link) > 1 and link[1] == ":"):
                return f"is a link to an absolute path {link!r}"
            if member.issym():
                base = os.path.realpath(os.path.join(self.root, os.path.dirname(member.name)))
                pointed = os.path.realpath(os.path.join(base, link))
            else:
                pointed = os.path.realpath(os.path.join(self.root, link))
            if not _is_within(pointed, self.root):
                return f"is a link pointing outside the target folder ({link!r})"
        return None

    def __call__(self, member: tarfile.TarInfo, path: str = "") -> tarfile.TarInfo | None:
        reason = self.problem(member)
        if reason is not None:
            _refuse(self.archive, member.name, reason, self.unsafe)
            return None
        if member.issym():
            self.links_written = True
        # As tarfile's "data" filter: no owners (we may run as root), no set-id/sticky
        # bits, no group/other write; files stay readable and writable by their owner.
        # The member belongs to our own TarFile object, so it is changed in place.
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        if not member.issym():
            mode = member.mode & 0o755
            if member.isreg() or member.islnk():
                mode |= 0o600
            elif member.isdir():
                mode |= 0o700
            member.mode = mode
        return member


def _tar_members(archive: tarfile.TarFile, guard: _TarGuard) -> Iterator[tarfile.TarInfo]:
    for member in archive:
        cleaned = guard(member)
        if cleaned is not None:
            yield cleaned


def tar_format(path: str, target: str, unsafe: str = "raise") -> bool:
    """The ``'tar'`` archive format: tar, tar.gz, tar.bz2 and tar.xz.

    Args:
        path: the archive.
        target: an empty folder to extract into.
        unsafe: ``"raise"`` or ``"skip"`` for members that would escape ``target``.

    Returns:
        False when ``path`` is not a tar archive, else True once extracted.

    Raises:
        UnsafeArchiveError: an unsafe member and ``unsafe="raise"``.
    """
    if not tarfile.is_tarfile(path):
        return False
    guard = _TarGuard(path, target, unsafe)
    with tarfile.open(path) as archive:
        # The guard already cleaned each member; "fully_trusted" stops tarfile from
        # re-checking (and from warning about the missing filter on newer Pythons).
        extra: dict[str, Any] = (
            {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        )
        archive.extractall(target, members=_tar_members(archive, guard), **extra)
    return True


def zip_format(path: str, target: str, unsafe: str = "raise") -> bool:
    """The ``'zip'`` archive format.

    Args:
        path: the archive.
        target: an empty folder to extract into.
        unsafe: ``"raise"`` or ``"skip"`` for members that would escape ``target``.

    Returns:
        False when ``path`` is not a zip archive, else True once extracted.

    Raises:
        UnsafeArchiveError: an unsafe member and ``unsafe="raise"``.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        members = []
        for info in archive.infolist():
            reason = _lexical_problem(info.filename)
            if reason is not None:
                _refuse(path, info.filename, reason, unsafe)
                continue
            members.append(info)
        try:
            archive.extractall(target, members=members)
        except (RuntimeError, NotImplementedError) as exc:
            # zipfile's words for an encrypted member or an unsupported compression.
            raise ValueError(f"could not extract {path!r}: {exc}") from None
    return True


_BUILTINS: dict[str, ArchiveFormat] = {"tar": tar_format, "zip": zip_format}


def register_builtins() -> None:
    """File the built-in formats in the registry (idempotent)."""
    for name, fmt in _BUILTINS.items():
        kregistry.register(name=name, package=ARCHIVE_NAMESPACE)(fmt)


register_builtins()


def resolve_archive_formats(archive_format: Any) -> list[ArchiveFormat]:
    """Turn ``archive_format`` into the list of formats to try, in order.

    Args:
        archive_format: ``'auto'`` (``['tar', 'zip']``, as in Keras), a registered name,
            a format callable, a list of those, or None / an empty list (no format).

    Raises:
        kregistry.UnknownObjectError: an unknown name (a ``ValueError``).
        TypeError: an entry that is neither a name nor a callable.
    """
    if archive_format is None:
        return []
    if archive_format == "auto":
        archive_format = ["tar", "zip"]
    if isinstance(archive_format, str) or callable(archive_format):
        archive_format = [archive_format]
    if not isinstance(archive_format, Sequence):
        raise TypeError(
            "archive_format must be 'auto', a format name ('tar', 'zip' or a registered "
            f"one), a callable, a list of those, or None; got {archive_format!r}"
        )
    formats: list[ArchiveFormat] = []
    for entry in archive_format:
        if not isinstance(entry, str) and not callable(entry):
            raise TypeError(
                f"archive_format entries must be names or callables, got {entry!r} "
                f"({type(entry).__name__})"
            )
        formats.append(
            kregistry.resolve(
                entry, kind="archive format", namespace=ARCHIVE_NAMESPACE, module_objects=_BUILTINS
            )
        )
    return formats


def _audit(folder: str, archive: str, unsafe: str) -> None:
    """Refuse (or remove) symlinks resolving outside ``folder`` and special files."""
    root = os.path.realpath(folder)
    stack = [root]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_symlink():
                    if not _is_within(os.path.realpath(entry.path), root):
                        relative = os.path.relpath(entry.path, root)
                        _refuse(archive, relative, "is a link pointing outside the target", unsafe)
                        os.unlink(entry.path)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif not entry.is_file(follow_symlinks=False):
                    relative = os.path.relpath(entry.path, root)
                    _refuse(archive, relative, "is a device file, FIFO or socket", unsafe)
                    os.unlink(entry.path)


def remove_tree(path: str) -> None:
    """Remove a file, link or folder tree if present (never follows links)."""
    if os.path.islink(path) or os.path.isfile(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def clean_stale_temps(folder: str, archive_name: str) -> None:
    """Remove temporary folders that an interrupted extraction of this archive left."""
    prefix = f"{TEMP_PREFIX}{archive_name}-"
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                remove_tree(entry.path)


# Errors of the decompressors and archive readers that mean "damaged or truncated".
_DAMAGED = (
    tarfile.TarError,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    EOFError,
    lzma.LZMAError,
    zlib.error,
)


def _member_error(exc: OSError, archive: str, temp: str) -> OSError:
    """``exc`` retold with the member's name instead of the hidden temporary path."""
    where = exc.filename if isinstance(exc.filename, str) else ""
    inside = where.startswith(temp + os.sep)
    member = where[len(temp) + len(os.sep) :] if inside else where
    return OSError(exc.errno, f"could not extract {archive!r}: member {member!r}: {exc.strerror}")


def extract_to_folder(
    file_path: str,
    path: str,
    formats: list[ArchiveFormat],
    unsafe: str = "raise",
    reserved: Sequence[str] = (),
) -> list[str] | None:
    """Extract into ``path`` through a temporary folder; return the top-level entries.

    Returns None when no format matched. Entries of the archive's top level replace
    same-named entries of ``path``, each by one rename. A top-level entry named in
    ``reserved`` (get_file passes its state folder) is unsafe, as is one that looks like
    an extraction temporary.
    """
    os.makedirs(path, exist_ok=True)
    archive_name = os.path.basename(file_path)
    temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{archive_name}-", dir=path)
    trash = temp + ".old"
    try:
        try:
            for fmt in formats:
                if _call_format(fmt, file_path, temp, unsafe):
                    break
            else:
                return None
        except gzip.BadGzipFile:
            raise  # an OSError, but a damaged archive: reported below
        except OSError as exc:
            raise _member_error(exc, file_path, temp) from None
        # Whatever wrote the files (a user's format too), nothing leaves this folder
        # unless every link in it resolves inside and no special file is there.
        _audit(temp, file_path, unsafe)
        entries = []
        for name in sorted(os.listdir(temp)):
            if name in reserved or name.startswith(TEMP_PREFIX):
                _refuse(file_path, name, "would replace kio's own files in the folder", unsafe)
                continue
            entries.append(name)
        final_archive = os.path.realpath(file_path)
        for name in entries:
            if os.path.realpath(os.path.join(path, name)) == final_archive:
                raise UnsafeArchiveError(file_path, name, "would overwrite the archive itself")
        for name in entries:
            destination = os.path.join(path, name)
            aside = os.path.join(trash, name)
            if os.path.lexists(destination):
                os.makedirs(trash, exist_ok=True)
                os.replace(destination, aside)
            try:
                os.replace(os.path.join(temp, name), destination)
            except BaseException:
                if os.path.lexists(aside):  # put the previous entry back
                    os.replace(aside, destination)
                raise
        return entries
    except _DAMAGED as exc:
        raise ValueError(
            f"could not extract {file_path!r}: the archive is damaged or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None
    finally:
        remove_tree(temp)
        remove_tree(trash)


def _call_format(fmt: ArchiveFormat, file_path: str, target: str, unsafe: str) -> bool:
    result = fmt(file_path, target, unsafe)
    if not isinstance(result, bool):
        raise TypeError(
            f"archive format {fmt!r} must return True (extracted) or False (not its format), "
            f"got {result!r}"
        )
    return result


def extract_archive(
    file_path: str | os.PathLike[str],
    path: str | os.PathLike[str] = ".",
    archive_format: Any = "auto",
    *,
    unsafe: Unsafe = "raise",
) -> bool:
    """Extract an archive if it matches a format (Keras's ``extract_archive``), safely.

    Args:
        file_path: the archive.
        path: the folder to extract into (created when missing).
        archive_format: ``'auto'`` (``['tar', 'zip']``), ``'tar'``, ``'zip'``, a registered
            name, a callable, a list of those, or None (nothing matches).
        unsafe: ``"raise"`` (default) refuses the whole archive when a member would land
            outside ``path`` (``..``, absolute path, escaping symlink or hard link, device
            file); ``"skip"`` leaves such members out with a warning.

    Returns:
        True when a format matched and the archive was extracted, else False.

    Raises:
        UnsafeArchiveError: an unsafe member with ``unsafe="raise"``; nothing is written.
        ValueError: a damaged archive, or a bad ``unsafe``.
        FileNotFoundError: ``file_path`` does not exist.

    Examples:
        >>> extract_archive("data.tar.gz", "out")          # doctest: +SKIP
        True
    """
    if unsafe not in ("raise", "skip"):
        raise ValueError(f"unsafe must be 'raise' or 'skip', got {unsafe!r}")
    file_path = os.fspath(file_path)
    if not os.path.isfile(file_path):
        raise FileNotFoundError(f"file_path={file_path!r}: no such archive")
    formats = resolve_archive_formats(archive_format)
    if not formats:
        return False
    return extract_to_folder(file_path, os.fspath(path), formats, unsafe) is not None
